"""Every sampler kind through sample.py on a tiny checkpoint; refusals; FID on 2 gloo processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY, TINY_DIGITS, free_port, run_cli

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
        ("cas", ["sampler.eta=0.5"], 10),  # one step per level (the denoising step included)
        ("pc", ["sampler.n_corrector=1"], 20),
        ("ode", ["sampler.num_steps=4"], 7),  # 2 (4 - 1) Heun evaluations + the final Euler step
        ("euler", ["sampler.num_steps=4"], 4),  # 3 Euler steps + the final one to sigma = 0
        ("langevin", ["sampler.n_steps=20"], 21),  # 20 steps + the denoising step (the digits sampler denoises)
    ],
)
def test_every_kind_through_sample_py(kind, extra, nfe, tiny_ckpt, tmp_path):
    res = _sample(tiny_ckpt, tmp_path / kind, f"sampler={kind}", "sampler.n_samples=6", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / kind / "results.json").read_text())
    assert results["nfe"] == nfe and results["n_samples"] == 6
    samples = np.load(tmp_path / kind / "samples.npz")["samples"]
    assert samples.shape == (6, 1, 8, 8) and np.isfinite(samples).all()
    # per-sample seeds: the first samples do not depend on how many are drawn or the batch size
    res = _sample(tiny_ckpt, tmp_path / "b", f"sampler={kind}", "sampler.n_samples=3", "sampler.batch_size=2", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    again = np.load(tmp_path / "b" / "samples.npz")["samples"]
    np.testing.assert_allclose(again, samples[:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["progression", "interpolate"])
def test_modes_honour_the_kind(mode, tiny_ckpt, tmp_path):
    extra = ["progression.n_show=2"] if mode == "progression" else ["interpolate.n_rows=1", "interpolate.n_interp=3"]
    res = _sample(tiny_ckpt, tmp_path, f"mode={mode}", "sampler=ode", "sampler.num_steps=null", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    if mode == "progression":  # one frame per Heun step (9 over the 10 levels) + the denoised samples
        assert json.loads((tmp_path / "results.json").read_text())["n_frames"] == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["mode=inpaint", "sampler=cas"], "error: sampler=cas is invalid for mode=inpaint: must be sampler=annealed"),
        (["sampler=ode", "sampler.num_steps=20"], "error: sampler.num_steps=20 is invalid: must be between 2 and 10"),
        (["sampler=cas", "sampler.eta=0.12"], "error: sampler.eta=0.12 is invalid for kind=cas on this grid"),
        (["sampler=euler", "sampler.num_steps=1"], "error: sampler.num_steps=1 is invalid: must be null or >= 2"),
        (["sampler=edm"], "error: sampler=edm needs a sigma-continuous network"),  # the digits NCSN: levels
        (  # a key of another kind: refused, never ignored
            ["sampler=cas", "sampler.step_lr=5e-5"],
            "error: sampler.step_lr is not a key of ncsn.sampling.CAS (allowed: eta, num_steps, rho)",
        ),
        (["sampler.num_steps=4"], "error: sampler.num_steps is not a key of ncsn.sampling.Annealed"),
        (
            ["sampler.kind=ode"],
            "error: sampler.kind='ode' is invalid: it names the kind's file; choose the kind with sampler=ode",
        ),
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


def test_default_run_trains_continuous_sigmas_then_samples_between_the_levels(tmp_path):
    """The default run (sigma-conditioned net with EDM's preconditioning, log-normal sigmas,
    sigmas=auto, ode on 5 sigmas) through the CLI at tiny size; then sample.py visits more sigmas than the
    training levels (refused for level-conditioned nets) and, changing the kind, annealed Langevin."""
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        *TINY,  # the default run: no experiment
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
    res = _sample(ckpt, out, "sampler.n_samples=4", "sampler=annealed", "sampler.n_steps_each=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["nfe"] == 2 * levels  # annealed: no denoising step


def test_sample_py_kind_change_takes_the_kinds_settings_and_keeps_the_shared_ones():
    """sample.py's null = the training run's value; sampler=<kind> takes that kind's settings from
    its composed conf/sampler/<kind>.yaml (so an ode-trained run can be sampled with annealed
    Langevin, and an annealed-trained one gets ode's rho 7), while the training run's shared
    settings (n_samples, denoise, ...) stay unless the command line sets them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ncsn.workflow.build import build_sampler
    from ncsn.workflow.sample import merged_sampler_cfg

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        trained_ode = compose("train", overrides=["sampler=ode", "sampler.num_steps=11", "sampler.n_samples=7"])
        trained = compose("train", overrides=["sampler=annealed", "sampler.step_lr=9.7e-6", "sampler.n_samples=100"])
        given = {k: compose("sample", overrides=["ckpt_path=x", f"sampler={k}"]).sampler for k in ("annealed", "ode")}
    cfg = merged_sampler_cfg(trained_ode, given["annealed"], chosen=True)
    assert cfg.kind == "annealed" and "num_steps" not in cfg and cfg.step_lr == 1.2e-5 and cfg.n_samples == 7
    assert build_sampler(cfg).kind.n_steps_each == 20  # annealed.yaml's
    ode = merged_sampler_cfg(trained, given["ode"], explicit={"num_steps", "denoise"}, chosen=True)
    assert ode.rho == 7.0 and ode.num_steps == 5 and ode.n_samples == 100 and "step_lr" not in ode
    same = merged_sampler_cfg(trained, OmegaConf.create({"n_steps_each": 5, "rho": None}))
    assert same.step_lr == 9.7e-6 and same.n_steps_each == 5 and "rho" not in same


def test_a_sampler_saved_before_the_kinds_were_objects_is_the_same_sampler():
    """A checkpoint's flat sampler node of before (``_target_: ncsn.sampling.Sampler``, every
    kind's settings in one list) is read as the same sampler: plain Langevin's n_steps_each x L
    steps, CAS's step_lr / sigma_L^2."""
    from ncsn.workflow.sample import upgraded_sampler

    old = {"_target_": "ncsn.sampling.Sampler", "step_lr": 5e-5, "n_steps_each": 3, "num_steps": None, "rho": None}
    old.update(snr=0.16, n_corrector=1, denoise=True, n_samples=9, batch_size=4, init=None, autocast=None)
    sigmas = [1.0, 0.1, 0.01]
    lang = upgraded_sampler({**old, "kind": "langevin"}, sigmas)
    assert lang["_target_"] == "ncsn.sampling.Langevin" and lang["n_steps"] == 9 and lang["frame_every"] == 3
    cas = upgraded_sampler({**old, "kind": "cas"}, sigmas)
    assert abs(cas["eta"] - 0.5) < 1e-12 and cas["n_samples"] == 9 and "step_lr" not in cas
    assert upgraded_sampler(cas, sigmas) is cas  # today's form: as it is


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

    res = _sample(tiny_ckpt, tmp_path, "sampler=ode", "sampler.rho=null", "sampler.n_samples=4")
    assert res.returncode == 0, res.stderr[-2000:]
    used = OmegaConf.load(tmp_path / ".hydra" / "config.yaml").sampler
    assert used.kind == "ode" and used.rho is None


def test_the_data_mean_is_computed_once_by_the_workflow_for_a_gaussian_start():
    """train.py and sample.py compute the data mean of a Gaussian start (init_mean=data) with one
    helper and pass it to every draw: the training split's per-pixel mean, None for a uniform start."""
    import torch

    from ncsn.data.base import train_split
    from ncsn.data.digits import DigitsDataModule
    from ncsn.sampling import ODE, Annealed, Sampler
    from ncsn.workflow.build import sampler_data_mean

    dm = DigitsDataModule(num_val=8)
    mean = sampler_data_mean(Sampler(ODE()), dm)
    images = torch.stack([x for x, *_ in train_split(dm)])
    assert mean.shape == (1, 8, 8) and torch.allclose(mean, images.mean(0), atol=1e-6)
    assert sampler_data_mean(Sampler(Annealed()), dm) is None
    assert sampler_data_mean(Sampler(ODE(), init_mean=0.5), dm) is None
