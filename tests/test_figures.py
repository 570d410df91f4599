"""Figures: valid PNG/GIF files and the NCSN Fig. 3 toy weights."""

import pytest
import torch
from PIL import Image

from ncsn.figures import save_grid, save_inpainting_grid, save_progression, scatter_samples, toy_figure
from ncsn.sampling import annealed_langevin
from ncsn.sigmas import make_sigmas
from ncsn.toy import paper_mixture


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


def test_progression_png_and_gif_from_sampler_frames(tmp_path):
    sigmas = torch.tensor([1.0, 0.5, 0.2, 0.1])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 6, 6, generator=gen)
    run = annealed_langevin(lambda x, i: 0.5 - x, x, sigmas, 1e-3, 3, generator=gen, keep_frames=True, progress=False)
    frames = run.frames
    assert len(frames) == 4
    png, gif = save_progression(frames, tmp_path / "prog.png", tmp_path / "prog.gif", n_show=3)
    fmt, (w, h), _ = open_image(png)
    assert fmt == "PNG" and (w, h) == (4 * 6 + 5 * 2, 3 * 6 + 4 * 2)  # rows = samples, cols = levels
    fmt, _, n_frames = open_image(gif)
    assert fmt == "GIF" and n_frames == 4  # one frame per level
    png, _ = save_progression(frames, tmp_path / "p2.png", tmp_path / "p2.gif", n_show=2, n_cols=2)
    assert open_image(png)[1] == (2 * 6 + 3 * 2, 2 * 6 + 3 * 2)  # first and last level only
    with pytest.raises(ValueError):
        save_progression([], tmp_path / "a.png", tmp_path / "a.gif")


def test_inpainting_grid(tmp_path):
    masked, original = torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5)
    path = save_inpainting_grid(masked, torch.rand(2, 4, 3, 5, 5), original, tmp_path / "inp.png")
    fmt, (w, h), _ = open_image(path)
    assert fmt == "PNG" and (w, h) == (6 * 5 + 7 * 2, 2 * 5 + 3 * 2)  # input | 4 samples | original
    path = save_inpainting_grid(masked, torch.rand(2, 3, 5, 5), original, tmp_path / "inp1.png")
    assert open_image(path)[1][0] == 3 * 5 + 4 * 2


def test_scatter_samples(tmp_path):
    path = scatter_samples(torch.randn(100, 2), torch.randn(100, 2), tmp_path / "s.png", title="x")
    assert open_image(path)[0] == "PNG"


def test_toy_figure_weights(tmp_path):
    # NCSN Fig. 3: annealed Langevin recovers the weights 0.2 / 0.8, plain Langevin does not.
    mixture = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 10)
    w = toy_figure(mixture, sigmas, None, tmp_path / "toy.png", n=1000, step_lr=0.1, n_steps_each=50, seed=0)
    assert open_image(tmp_path / "toy.png")[0] == "PNG"
    assert set(w) == {"data", "langevin", "annealed"}
    assert abs(w["annealed"][0] - 0.2) < 0.05 and abs(w["annealed"][1] - 0.8) < 0.05
    assert abs(w["langevin"][0] - 0.2) > 0.1
    assert abs(w["data"][0] - 0.2) < 0.05


def test_toy_figure_with_learned_score(tmp_path):
    mixture = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 4)
    exact = mixture.score_fn(sigmas)
    toy_figure(mixture, sigmas, None, tmp_path / "three.png", n=50, n_steps_each=2)
    w = toy_figure(mixture, sigmas, exact, tmp_path / "toy4.png", n=200, n_steps_each=5)
    assert w["score_rel_error"] < 1e-6 and len(w["learned"]) == 2
    w = toy_figure(mixture, sigmas, lambda x, i: torch.zeros_like(x), tmp_path / "toy0.png", n=200, n_steps_each=5)
    assert w["score_rel_error"] == pytest.approx(1.0)
    (w4, h4), (w3, _) = open_image(tmp_path / "toy4.png")[1], open_image(tmp_path / "three.png")[1]
    assert w4 > w3 > 2 * h4  # four panels vs three, side by side
