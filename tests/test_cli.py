"""train.py and sample.py end to end, in subprocesses, on tiny settings."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_DIGITS, run_cli
from omegaconf import OmegaConf
from PIL import Image


@pytest.mark.slow
def test_train_digits_writes_documented_files_then_sample_reloads(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "fid.classifier_epochs=2",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "eval.n_samples=20",
        "eval.save_npz=true",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg.model.ngf == 8 and cfg.sigmas.num_scales == 10 and cfg.paths.run_dir == str(run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()  # lowest FID
    assert (run_dir / "samples" / "final.png").is_file()
    final = np.load(run_dir / "samples" / "final.npz")["samples"]  # eval.save_npz: the final samples too
    assert final.shape == (9, 1, 8, 8) and final.min() >= 0 and final.max() <= 1
    assert sorted(p.name for p in (run_dir / "samples").glob("epoch*.png"))  # periodic grids
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "val/loss", "fid", "sample/time_s"):
        assert key in header, header
    assert not [k for k in header if k.startswith("val/loss_level")]  # per level: val_loss_by_sigma.csv
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == 6
    assert results["sample/final_device"] == "cpu"
    # the checkpoint reloads with torch's default weights-only loading and carries the config
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["sampler"]["n_steps_each"] == 2
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"])

    out = tmp_path / "sample"
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "sampler.n_samples=5",
        "sampler.denoise=true",
        "device=cpu",
        "nnpack=true",
        "seed=42",
        f"hydra.run.dir={out}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    npz = np.load(out / "samples.npz")
    assert npz["samples"].shape == (5, 1, 8, 8) and npz["samples_before_denoise"].shape == (5, 1, 8, 8)
    assert npz["samples"].min() >= 0 and npz["samples"].max() <= 1
    assert (out / "samples.png").is_file()
    used = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert used.sampler.n_samples == 5 and used.sampler.denoise is True and used.sampler.n_steps_each == 2
    # nnpack=true changes the path: the net's 3x3 convs run on NNPACK, and the same draw differs
    # from oneDNN's by float rounding only
    assert json.loads((out / "results.json").read_text())["nnpack_convs"] > 0
    plain = tmp_path / "sample_plain"
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "sampler.n_samples=5",
        "sampler.denoise=true",
        "device=cpu",
        "nnpack=false",
        "seed=42",
        f"hydra.run.dir={plain}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((plain / "results.json").read_text())["nnpack_convs"] == 0
    plain_samples = np.load(plain / "samples.npz")["samples"]
    assert not np.array_equal(plain_samples, npz["samples"])
    np.testing.assert_allclose(plain_samples, npz["samples"], atol=1e-3)
    # with the training seed: the final samples (per-sample seeds, any batch size)
    np.testing.assert_allclose(plain_samples, final[:5], atol=1e-3)


@pytest.mark.slow
def test_train_toy_writes_scatter_and_mode_weights(tmp_path):
    run_dir = tmp_path / "toy"
    res = run_cli(
        "train.py",
        "experiment=toy_gmm",
        "trainer.max_steps=20",
        "sampler.n_samples=64",
        "sampler.n_steps_each=3",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["toy/mode_weights"]) == 2 and abs(sum(results["toy/mode_weights"]) - 1) < 1e-3
    assert (run_dir / "samples" / "final.png").is_file() and (run_dir / "samples" / "toy_figure.png").is_file()
    assert not (run_dir / "samples" / "final.npz").exists()  # eval.save_npz=false

    out = tmp_path / "s"
    res = run_cli(
        "sample.py", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "sampler.n_samples=7", f"hydra.run.dir={out}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert np.load(out / "samples.npz")["samples"].shape == (7, 2)

    fig = tmp_path / "fig"
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "mode=toy_figure",
        "sampler.n_samples=64",
        "sampler.n_steps_each=2",
        f"hydra.run.dir={fig}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (fig / "toy_figure.png").is_file()
    weights = json.loads((fig / "results.json").read_text())
    for key in ("toy/figure_data", "toy/figure_langevin", "toy/figure_annealed", "toy/figure_learned"):
        assert abs(sum(weights[key]) - 1) < 1e-6, key
    # the figure's learned score is evaluated as the sampler settings say (here in bf16)
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "mode=toy_figure",
        "sampler.n_samples=64",
        "sampler.n_steps_each=2",
        "sampler.autocast=bf16",
        f"hydra.run.dir={tmp_path / 'fig_bf16'}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    bf16 = json.loads((tmp_path / "fig_bf16" / "results.json").read_text())["toy/figure_score_rel_error"]
    assert bf16 != weights["toy/figure_score_rel_error"] and abs(bf16 - weights["toy/figure_score_rel_error"]) < 0.05
    # image-only modes are refused for 2-D data with a message, not a traceback
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "mode=inpaint",
        f"hydra.run.dir={tmp_path / 'bad'}",
    )
    assert res.returncode == 2 and "error: mode='inpaint' needs image data" in res.stderr


@pytest.mark.slow  # two sample.py processes (88 s on the busy 2-core CPU)
def test_sample_refuses_missing_and_unreadable_checkpoints(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    for path, message in ((tmp_path / "missing.ckpt", "no such checkpoint file"), (bad, "checkpoint")):
        res = run_cli("sample.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}")
        assert res.returncode == 2
        assert f"error: ckpt_path='{path}'" in res.stderr and message in res.stderr
        assert "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def tiny_digits_ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "fid.classifier_epochs=2",
        "eval.n_samples=20",
        f"paths.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, extra, files",
    [
        (
            "fid",
            ["eval.n_samples=24", "sampler.batch_size=10", "eval.save_npz=true", "eval.denoise_both=true"],
            ["fid_samples.npz"],
        ),
        (
            "inpaint",
            ["inpaint.n_images=3", "inpaint.n_per_image=2", "inpaint.mask=center_box"],
            ["inpainting.png", "inpainting.npz"],
        ),
        ("interpolate", ["interpolate.n_rows=2", "interpolate.n_interp=5"], ["interpolation.png", "interpolation.npz"]),
        ("progression", ["progression.n_show=3"], ["progression.png", "progression.gif"]),
    ],
)
def test_sample_modes_write_their_documented_files(mode, extra, files, tiny_digits_ckpt, tmp_path):
    out = tmp_path / mode
    res = run_cli(
        "sample.py",
        f"ckpt_path={tiny_digits_ckpt}",
        f"mode={mode}",
        *extra,
        "device=cpu",
        f"paths.cache_dir={tiny_digits_ckpt.parent.parent.parent / 'cache'}",
        f"hydra.run.dir={out}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in files:
        assert (out / name).is_file(), name
        if name.endswith((".png", ".gif")):  # 8 x 8 digits enlarged so a person can read them
            assert min(Image.open(out / name).size) >= 300, name
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == mode and results["status"] == "finished"
    if mode == "fid":
        assert results["fid/denoised"] > 0 and results["fid/no_denoise"] > 0 and results["n_samples"] == 24
        # the digits run denoises (sampler.denoise=true), so `fid` is the denoised variant, and the
        # final denoising step changes the images, hence the FID
        assert results["fid"] == results["fid/denoised"] != results["fid/no_denoise"]
        npz = np.load(out / "fid_samples.npz")
        assert npz["samples"].shape == (24, 8, 8, 1) and npz["samples"].dtype == np.uint8
        assert npz["samples_no_denoise"].shape == (24, 8, 8, 1)
        assert not np.array_equal(npz["samples"], npz["samples_no_denoise"])
    if mode == "inpaint":
        npz = np.load(out / "inpainting.npz")
        known = npz["mask"].astype(bool)
        ref = np.repeat(npz["reference"][:, None], 2, axis=1)
        assert np.array_equal(
            np.broadcast_to(known, ref.shape) * npz["samples"], np.broadcast_to(known, ref.shape) * ref
        )
    if mode == "progression":
        # one frame per noise level, plus the denoised samples (the digits sampler denoises)
        assert Image.open(out / "progression.gif").n_frames == results["n_frames"] == 11
    if mode == "interpolate":
        assert np.load(out / "interpolation.npz")["samples"].shape == (2, 5, 1, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, extra, npz",
    [
        ("inpaint", ["inpaint.n_images=2", "inpaint.n_per_image=1"], "inpainting.npz"),
        ("interpolate", ["interpolate.n_rows=1", "interpolate.n_interp=3"], "interpolation.npz"),
    ],
)
def test_inpaint_and_interpolate_evaluate_the_network_as_configured(mode, extra, npz, tiny_digits_ckpt, tmp_path):
    """sampler.autocast (like sampler.compile) reaches every mode's network calls, not only mode=samples."""
    samples = {}
    for autocast in ("fp32", "bf16"):
        out = tmp_path / autocast
        res = run_cli(
            "sample.py",
            f"ckpt_path={tiny_digits_ckpt}",
            f"mode={mode}",
            *extra,
            "device=cpu",
            f"sampler.autocast={autocast}",
            f"hydra.run.dir={out}",
        )
        assert res.returncode == 0, res.stderr[-3000:]
        samples[autocast] = np.load(out / npz)["samples"]
    assert samples["fp32"].shape == samples["bf16"].shape
    assert not np.array_equal(samples["fp32"], samples["bf16"])  # the bf16 network calls were used
    assert np.abs(samples["fp32"] - samples["bf16"]).mean() < 0.05  # same seed: the same draw up to precision


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_on_gpu_in_bf16_draws_the_final_samples_on_the_gpu(tmp_path):
    # Lightning's teardown moves the module back to the CPU; the final grid must not be drawn there
    run_dir = tmp_path / "gpu"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "fid=none",
        "callbacks.best=null",
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
        "sampler.autocast=bf16",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["sample/final_device"].startswith("cuda")
    assert (run_dir / "samples" / "final.png").is_file()
