"""Every named sweep (conf/sweep/*.yaml) composes with the script it is written for, and each of
its jobs is a valid config: validated as train.py / sample.py validate before any work, with the
swept value in place. (test_sweeps.py runs one sweep end to end.)"""

from __future__ import annotations

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ncsn.workflow.build import build_sampler, build_sigmas
from ncsn.workflow.config import validate_sample, validate_sigmas, validate_train
from ncsn.workflow.sample import merged_sampler_cfg

SWEEPS = sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))
SAMPLE_TIME = {"n_steps_each", "step_lr"}  # run on one checkpoint: python sample.py -m ckpt_path=PATH sweep=...
# as each sweep's comment says: the noise-level sweeps on NCSN's digits setup (on the default run L and
# the kind only set the validation levels), the toy one on the toy experiment
NCSN = ["experiment=digits_ncsn"]
EXTRA = {"toy_annealing": ["experiment=toy_gmm"], "num_scales": NCSN, "sigma_begin": NCSN, "sigma_end": NCSN}
EXTRA["sigma_kind"] = NCSN


def _compose(config: str, overrides: list[str], hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=hydra_node)


def _jobs(config: str, base: list[str]) -> list[list[str]]:
    """The jobs' overrides of the sweep, as Hydra's basic sweeper expands them (cartesian product)."""
    params = _compose(config, base, hydra_node=True).hydra.sweeper.params
    assert params, f"{base}: no hydra.sweeper.params"
    parser = OverridesParser.create()
    jobs = [[]]
    for key, values in params.items():
        override = parser.parse_override(f"{key}={values}")
        choices = list(override.sweep_string_iterator())
        assert len(choices) >= 2, (key, values)
        jobs = [[*job, f"{key}={v}"] for job in jobs for v in choices]
    return jobs


def _selected(cfg, override: str):
    key, value = override.split("=", 1)
    if key == "sigmas":  # a config group: the chosen file's kind
        return cfg.sigmas.kind, value
    return OmegaConf.select(cfg, key), type(OmegaConf.select(cfg, key))(value)


def test_every_sweep_file_is_covered():
    assert set(SWEEPS) == {
        "n_steps_each",
        "num_scales",
        "sigma_begin",
        "sigma_end",
        "sigma_kind",
        "step_lr",
        "toy_annealing",
    }
    for name in SAMPLE_TIME:
        assert f"sample.py -m ckpt_path=PATH sweep={name}" in (ROOT / "conf" / "sweep" / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", [s for s in SWEEPS if s not in SAMPLE_TIME])
def test_train_sweep_jobs_compose_and_validate(name):
    base = [*EXTRA.get(name, []), f"sweep={name}"]
    jobs = _jobs("train", base)
    for job in jobs:
        cfg = _compose("train", [*base, *job])
        validate_train(cfg)
        validate_sigmas(cfg)
        assert len(build_sigmas(cfg)) == cfg.sigmas.num_scales
        build_sampler(cfg.sampler)
        for override in job:
            got, want = _selected(cfg, override)
            assert got == want, (name, override)
    assert len({tuple(j) for j in jobs}) == len(jobs) >= 2


@pytest.mark.parametrize("name", sorted(SAMPLE_TIME))
def test_sample_sweep_jobs_compose_and_validate(name):
    """``python sample.py -m ckpt_path=PATH sweep=NAME``: each job's sampler, merged over a
    training run's (an annealed-Langevin run: experiment=digits_ncsn) sampler as sample.py merges it, builds."""
    train_cfg = _compose("train", NCSN)
    base = ["ckpt_path=/runs/x/checkpoints/last.ckpt", "paths.run_dir=/runs/x/sample", f"sweep={name}"]
    jobs = _jobs("sample", base)
    for job in jobs:
        cfg = _compose("sample", [*base, *job])
        validate_sample(cfg)
        sampler = build_sampler(merged_sampler_cfg(train_cfg, cfg.sampler))
        for override in job:
            key, value = override.split("=", 1)
            assert key.startswith("sampler.")
            name = key.removeprefix("sampler.")
            got = getattr(sampler.kind if hasattr(sampler.kind, name) else sampler, name)
            assert got == type(got)(float(value))
    assert len(jobs) >= 2
