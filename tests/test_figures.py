"""Figures: valid PNG/GIF files a person can read (small images enlarged, rows and columns
labelled), frame labels for every sampler kind, and the NCSN Fig. 3 toy weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from ncsn.core.figures import (
    labelled_grid,
    save_grid,
    save_inpainting_grid,
    save_interpolation_grid,
    save_progression,
    scatter_samples,
    toy_figure,
)
from ncsn.core.sigmas import make_sigmas
from ncsn.core.toy import paper_mixture
from ncsn.sampling import CAS, ODE, PC, Annealed, Euler, Langevin, Sampler, annealed_langevin
from ncsn.sampling.toy_panels import toy_panels


def open_image(path):
    with Image.open(path) as img:
        img.load()
        return img.format, img.size, getattr(img, "n_frames", 1)


def test_save_grid(tmp_path):
    images = torch.rand(6, 3, 8, 8)
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    fmt, (w, h), _ = open_image(path)
    assert fmt == "PNG"
    assert (w, h) == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)  # torchvision padding 2


READABLE = 300  # px: the short side of every labelled figure, at least


def test_labelled_grid_enlarges_by_nearest_neighbour_and_writes_labels():
    tiles = torch.rand(1, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    bare = np.asarray(labelled_grid(tiles))
    f = (min(bare.shape[:2]) - 2 * 6 - 4) // 8  # inside: a margin of 6 px, 4 px padding around each image
    assert min(bare.shape[:2]) >= READABLE and f * 8 >= 64
    x0 = 6 + 4  # margin + padding: the first image starts here (no labels)
    block = bare[x0 : x0 + 8 * f, x0 : x0 + 8 * f, 0]
    pixels = tiles[0, 0, 0].mul(255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(block, pixels.repeat(f, 0).repeat(f, 1))  # every pixel an f x f square
    labelled = np.asarray(labelled_grid(tiles, ["left", "right"], ["row"], "a title"))
    grow_h, grow_w = labelled.shape[0] - bare.shape[0], labelled.shape[1] - bare.shape[1]
    assert grow_h >= 2 * 14 and grow_w >= 14  # room for the title + column labels, and the row label
    assert (labelled[: grow_h + 6, :, 0] < 128).sum() > 50  # dark text in the band above the images
    assert (labelled[:, : grow_w + 6, 0] < 128).sum() > 20  # and left of them


def test_progression_png_and_gif_from_sampler_frames(tmp_path):
    sigmas = torch.tensor([1.0, 0.5, 0.2, 0.1])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 6, 6, generator=gen)
    run = annealed_langevin(lambda x, i: 0.5 - x, x, sigmas, 1e-3, 3, generator=gen, keep_frames=True, progress=False)
    frames = run.frames
    labels = [f"sigma\n{s:g}" for s in sigmas.tolist()]
    assert len(frames) == 4
    png, gif = save_progression(frames, labels, tmp_path / "prog.png", tmp_path / "prog.gif", n_show=3)
    fmt, (w, h), _ = open_image(png)
    assert fmt == "PNG" and min(w, h) >= READABLE
    fmt, (gw, gh), n_frames = open_image(gif)
    assert fmt == "GIF" and n_frames == 4 and min(gw, gh) >= READABLE  # one frame per level
    png2, _ = save_progression(frames, labels, tmp_path / "p2.png", tmp_path / "p2.gif", n_show=3, n_cols=2)
    w2, h2 = open_image(png2)[1]
    assert min(w2, h2) >= READABLE and w2 / h2 < w / h  # first and last level only: 2 columns, not 4
    with pytest.raises(ValueError):
        save_progression([], [], tmp_path / "a.png", tmp_path / "a.gif")
    with pytest.raises(ValueError, match="one per frame"):
        save_progression(frames, labels[:3], tmp_path / "a.png", tmp_path / "a.gif")


@pytest.mark.parametrize(
    "kind", [Annealed(0.01, 2), Langevin(0.01, 8, 2), CAS(0.9, 3), PC(num_steps=3), ODE(3), Euler(3)], ids=repr
)
def test_frame_labels_name_every_frame_of_each_kind(kind):
    sigmas = torch.tensor([1.0, 0.5, 0.2, 0.1])
    sampler = Sampler(kind, n_samples=2)
    res = sampler.draw(lambda x, c: -x, sigmas, (1, 4, 4), 0, keep_frames=True, progress=False)
    labels = kind.frame_labels(sampler.grid(sigmas))
    assert len(labels) == len(res.frames) > 0


def test_inpainting_grid(tmp_path):
    masked, original = torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5)
    path = save_inpainting_grid(masked, torch.rand(2, 4, 3, 5, 5), original, tmp_path / "inp.png")
    fmt, (w4, h4), _ = open_image(path)
    assert fmt == "PNG" and min(w4, h4) >= READABLE
    path = save_inpainting_grid(masked, torch.rand(2, 3, 5, 5), original, tmp_path / "inp1.png")
    w1, h1 = open_image(path)[1]
    assert min(w1, h1) >= READABLE and w1 < w4  # input | 1 sample | original: 3 columns, not 6


def test_interpolation_grid(tmp_path):
    for n_rows, n_interp in ((1, 3), (4, 8)):
        path = save_interpolation_grid(torch.rand(n_rows, n_interp, 1, 8, 8), tmp_path / f"i{n_rows}.png", 0, 1)
        fmt, (w, h), _ = open_image(path)
        assert fmt == "PNG" and min(w, h) >= READABLE and w > h


def test_scatter_samples(tmp_path):
    path = scatter_samples(torch.randn(100, 2), torch.randn(100, 2), tmp_path / "s.png", title="x")
    assert open_image(path)[0] == "PNG"


def test_toy_figure_weights(tmp_path):
    # NCSN Fig. 3: annealed Langevin recovers the weights 0.2 / 0.8, plain Langevin does not.
    mixture = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 10)
    panels = toy_panels(mixture, sigmas, None, n=1000, step_lr=0.1, n_steps_each=50, seed=0)
    toy_figure(panels, tmp_path / "toy.png")
    assert open_image(tmp_path / "toy.png")[0] == "PNG"
    w = panels.numbers()
    assert set(w) == {"data", "langevin", "annealed"}
    assert abs(w["annealed"][0] - 0.2) < 0.05 and abs(w["annealed"][1] - 0.8) < 0.05
    assert abs(w["langevin"][0] - 0.2) > 0.1
    assert abs(w["data"][0] - 0.2) < 0.05


def test_toy_figure_with_learned_score(tmp_path):
    mixture = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 4)
    exact = mixture.score_fn(sigmas)
    toy_figure(toy_panels(mixture, sigmas, None, n=50, n_steps_each=2), tmp_path / "three.png")
    panels = toy_panels(mixture, sigmas, exact, n=200, n_steps_each=5)
    toy_figure(panels, tmp_path / "toy4.png", learned_label="annealed")
    w = panels.numbers()
    assert w["score_rel_error"] < 1e-6 and len(w["learned"]) == 2
    given = torch.zeros(7, 2)  # learned samples drawn elsewhere (e.g. by the configured sampler) are used as given
    w = toy_panels(mixture, sigmas, lambda x, i: torch.zeros_like(x), n=200, n_steps_each=5, learned_samples=given)
    assert w.score_rel_error == pytest.approx(1.0) and torch.equal(w.learned, given)
    (w4, h4), (w3, _) = open_image(tmp_path / "toy4.png")[1], open_image(tmp_path / "three.png")[1]
    assert w4 > w3 > 2 * h4  # four panels vs three, side by side
