"""Every sampler kind through sample.py on a tiny checkpoint; refusals; FID on 2 gloo processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY_DIGITS, free_port, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
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


def _sample(ckpt, out, *overrides, env_extra=None):
    return run_cli(
        "sample.py",
        f"ckpt_path={ckpt}",
        "device=cpu",
        f"paths.cache_dir={ckpt.parent.parent.parent / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
        env_extra=env_extra,
    )


@pytest.mark.parametrize(
    "kind, extra, nfe",
    [
        ("cas", ["sampler.step_lr=5e-5"], 10),  # one step per level (the denoising step included)
        ("pc", ["sampler.n_corrector=1"], 20),
        ("ode", ["sampler.num_steps=4"], 7),  # 2 (4 - 1) Heun evaluations + the final Euler step
        ("langevin", [], 21),  # L T steps + the denoising step (the digits sampler denoises)
    ],
)
def test_every_kind_through_sample_py(kind, extra, nfe, tiny_ckpt, tmp_path):
    res = _sample(tiny_ckpt, tmp_path / kind, f"sampler.kind={kind}", "sampler.n_samples=6", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / kind / "results.json").read_text())
    assert results["nfe"] == nfe and results["n_samples"] == 6
    samples = np.load(tmp_path / kind / "samples.npz")["samples"]
    assert samples.shape == (6, 1, 8, 8) and np.isfinite(samples).all()
    # per-sample seeds: the first samples do not depend on how many are drawn or the batch size
    res = _sample(
        tiny_ckpt, tmp_path / "b", f"sampler.kind={kind}", "sampler.n_samples=3", "sampler.batch_size=2", *extra
    )
    assert res.returncode == 0, res.stderr[-3000:]
    again = np.load(tmp_path / "b" / "samples.npz")["samples"]
    np.testing.assert_allclose(again, samples[:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["progression", "interpolate"])
def test_modes_honour_the_kind(mode, tiny_ckpt, tmp_path):
    extra = ["progression.n_show=2"] if mode == "progression" else ["interpolate.n_rows=1", "interpolate.n_interp=3"]
    res = _sample(tiny_ckpt, tmp_path, f"mode={mode}", "sampler.kind=ode", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    if mode == "progression":  # one frame per Heun step (9 over the 10 levels) + the denoised samples
        assert json.loads((tmp_path / "results.json").read_text())["n_frames"] == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["mode=inpaint", "sampler.kind=cas", "sampler.step_lr=5e-5"],
            "error: sampler.kind='cas' is invalid for mode=inpaint: must be one of ('annealed',)",
        ),
        (
            ["sampler.kind=ode", "sampler.num_steps=20"],
            "error: sampler.num_steps=20 is invalid: must be between 2 and 10",
        ),
        (
            ["sampler.kind=cas", "sampler.step_lr=1.2e-5"],
            "error: sampler.step_lr=1.2e-05 is invalid for kind=cas on this grid",
        ),
        (["sampler.kind=annealed", "sampler.num_steps=4"], "error: sampler.num_steps=4 is invalid for kind=annealed"),
    ],
)
def test_kinds_a_mode_or_network_cannot_use_are_refused(overrides, message, tiny_ckpt, tmp_path):
    res = _sample(tiny_ckpt, tmp_path, *overrides)
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr, res.stderr[-2000:]


def test_fid_on_two_gloo_processes_equals_one_process(tiny_ckpt, tmp_path):
    """sample.py mode=fid under torchrun-style variables: rank r draws the samples r, r + 2, ...
    (per-sample seeds), the FID statistics are summed across the 2 processes: the same FID."""
    args = ["mode=fid", "eval.n_samples=20", "sampler.batch_size=3"]
    res = _sample(tiny_ckpt, tmp_path / "one", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            WANDB_MODE="offline",
            HYDRA_FULL_ERROR="0",
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        cmd = [
            sys.executable,
            str(ROOT / "sample.py"),
            f"ckpt_path={tiny_ckpt}",
            "device=cpu",
            f"paths.cache_dir={tiny_ckpt.parent.parent.parent / 'cache'}",
            f"hydra.run.dir={tmp_path / 'two'}",
            *args,
        ]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(two["fid"] - one["fid"]) <= 1e-4 * max(1.0, abs(one["fid"])), (one["fid"], two["fid"])


def test_digits_fast_trains_continuous_sigmas_then_samples_between_the_levels(tmp_path):
    """experiment=digits_fast (sigma-conditioned net, loss.sigma_sampling=continuous, sigmas=auto,
    ode on 5 sigmas) through the CLI at tiny size; then sample.py visits more sigmas than the
    training levels (refused for level-conditioned nets) and, changing the kind, annealed Langevin."""
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        "experiment=digits_fast",
        *TINY_DIGITS,
        "fid=none",
        "callbacks.best=null",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and np.isfinite(results["train/loss"])
    assert results["sample/nfe"] == 2 * (5 - 1) + 1
    levels = int(results["noise_design/num_scales"])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "ode"
    res = _sample(ckpt, out, "sampler.n_samples=4", f"sampler.num_steps={levels + 8}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["nfe"] == 2 * (levels + 8 - 1) + 1
    out = tmp_path / "annealed"
    res = _sample(ckpt, out, "sampler.n_samples=4", "sampler.kind=annealed", "sampler.n_steps_each=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["nfe"] == 2 * levels + 1


def test_sample_py_kind_change_starts_from_the_new_kinds_settings():
    """sample.py's null = the training run's value; a new kind first takes its own yaml's
    settings, so an ode-trained run can be sampled with annealed Langevin (num_steps back to null)
    and an annealed-trained run gets ode's rho 7 and pc's snr; the training's step_lr etc. stay."""
    from omegaconf import OmegaConf

    from ncsn.workflow.build import build_sampler
    from ncsn.workflow.sample import merged_sampler_cfg

    base = OmegaConf.load(ROOT / "conf" / "sampler" / "annealed.yaml")
    trained_ode = OmegaConf.merge(base, {"kind": "ode", "num_steps": 11, "rho": 7.0, "step_lr": 9.7e-6})
    cfg = merged_sampler_cfg(OmegaConf.create({"sampler": trained_ode}), OmegaConf.create({"kind": "annealed"}))
    assert cfg.kind == "annealed" and cfg.num_steps is None and cfg.rho is None and cfg.step_lr == 9.7e-6
    build_sampler(cfg)  # valid (num_steps=11 was refused for annealed before)

    trained = OmegaConf.create({"sampler": OmegaConf.merge(base, {"step_lr": 1.2e-5, "n_samples": 100})})
    ode = merged_sampler_cfg(trained, OmegaConf.create({"kind": "ode", "num_steps": 6}))
    assert ode.rho == 7.0 and ode.num_steps == 6 and ode.denoise is True and ode.n_samples == 100
    cas = merged_sampler_cfg(trained, OmegaConf.create({"kind": "cas"}))
    assert cas.step_lr == 5e-5  # cas.yaml's eps, not the annealed run's 1.2e-5
    same = merged_sampler_cfg(trained, OmegaConf.create({"kind": "annealed", "n_steps_each": 5, "rho": None}))
    assert same.step_lr == 1.2e-5 and same.n_steps_each == 5


def test_a_null_written_on_the_sample_py_command_line_is_meant(tiny_ckpt, tmp_path):
    """sampler.rho=null on the command line sets null (geometric), where an unwritten key keeps the
    training run's (or the new kind's) value; the run's .hydra/config.yaml records what was used."""
    from omegaconf import OmegaConf

    from ncsn.workflow.sample import merged_sampler_cfg

    trained = OmegaConf.create({"sampler": {"kind": "ode", "rho": 7.0, "autocast": "bf16", "num_steps": 5}})
    given = OmegaConf.create({"rho": None, "autocast": None, "num_steps": None})
    kept = merged_sampler_cfg(trained, given)
    assert kept.rho == 7.0 and kept.autocast == "bf16" and kept.num_steps == 5
    meant = merged_sampler_cfg(trained, given, explicit={"rho", "autocast"})
    assert meant.rho is None and meant.autocast is None and meant.num_steps == 5

    res = _sample(tiny_ckpt, tmp_path, "sampler.kind=ode", "sampler.rho=null", "sampler.n_samples=4")
    assert res.returncode == 0, res.stderr[-2000:]
    used = OmegaConf.load(tmp_path / ".hydra" / "config.yaml").sampler
    assert used.kind == "ode" and used.rho is None
