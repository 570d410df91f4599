"""Every key the user sets is honoured or refused (ncsn.workflow.overrides), and sigmas=auto computes
only what is left null: a swept sigmas.num_scales trains distinct schedules, an explicit
sampler.step_lr is kept."""

import contextlib

import pytest
import torch
from conftest import ROOT, TINY, TINY_DIGITS, job_dirs, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ncsn.core.noise_design import gamma_for_overlap, num_scales_for, step_lr_for
from ncsn.core.sigmas import make_sigmas
from ncsn.workflow import build, train
from ncsn.workflow.config import ConfigError
from ncsn.workflow.entry import EXIT_BAD_INPUT, run_entry
from ncsn.workflow.overrides import check_overrides_honoured, conf_groups, same_value, set_keys, unhonoured

GROUPS = conf_groups()
FINAL = {
    "seed": 3,
    "optim": {"lr": 0.001, "beta1": 0.9},
    "sigmas": {"kind": "geometric", "num_scales": 22, "sigma_begin": 4.8},
    "sampler": {"step_lr": 1.2e-5, "rho": None, "kind": "ode"},
    "trainer": {"devices": [0, 1], "precision": "32", "max_steps": 5},
    "callbacks": {"samples": {"every_n_epochs": 1, "n": 2}, "best": None},
}


def bad_keys(overrides, final=FINAL):
    return [s.key for s, _ in unhonoured(final, overrides, GROUPS)]


# -- the check as a unit: a final config and a list of task overrides ---------------------------
def test_values_that_match_by_value_are_honoured():
    overrides = [
        "seed=3.0",  # 3 vs 3.0
        "optim.lr=1e-3",
        "sampler.rho=null",
        "sampler.kind='ode'",
        "trainer.devices=[0,1]",
        "trainer.precision=32",  # parsed 32, held as the text "32"
        "+callbacks.samples={n:2}",  # a mapping merges into the node
        "~callbacks.missing",
        "callbacks.best=null",
    ]
    assert bad_keys(overrides) == []


@pytest.mark.parametrize(
    "override",
    [
        "sigmas.num_scales=3",  # overwritten by a later step
        "sampler.rho=7",  # null in the final config
        "sampler.step_lr=2e-5",
        "trainer.devices=[0]",
        "trainer.devices=2",
        "seed=true",  # a bool is not the number 1 or 3
        "callbacks.best={monitor:fid}",
        "+model.extra=1",  # a key the final config no longer has
        "~sigmas.num_scales",  # deleted, but still there
        "optim.lr=null",
    ],
)
def test_a_value_the_final_config_does_not_hold_is_reported(override):
    assert bad_keys([override]) == [override.lstrip("+~").split("=")[0]]


def test_group_selections_hydra_keys_and_interpolations_are_not_values():
    overrides = [
        "model=ncsnv2",
        "experiment=digits_fast",
        "+sweep=num_scales",
        "sampler@callbacks.x=ode",
        "hydra.run.dir=/elsewhere",
        "hydra/launcher=basic",
        "paths.run_dir=${paths.output_root}/x",
    ]
    assert set_keys(overrides, GROUPS) == []
    assert [s.key for s in set_keys(["model.ngf=8", "experiment=x"], GROUPS)] == ["model.ngf"]


def test_a_key_given_twice_counts_with_its_later_value():
    assert bad_keys(["trainer.max_steps=6", "seed=3", "trainer.max_steps=5"]) == []
    assert bad_keys(["trainer.max_steps=5", "trainer.max_steps=6"]) == ["trainer.max_steps"]


def test_same_value_is_type_aware():
    assert same_value(3, 3.0) and same_value(1e-5, 1.0e-5) and same_value([1, None], [1.0, None])
    assert same_value(None, None) and same_value(float("nan"), float("nan"))
    assert not same_value(None, 0) and not same_value(0, None) and not same_value(True, 1)
    assert not same_value([1, 2], [1, 2, 3]) and not same_value([1], 1) and not same_value("a", "b")
    assert not same_value(3, 3.0000001)


def test_a_rebuilt_node_is_honoured_through_its_request():
    """sigmas=auto replaces its node by geometric levels and keeps the node as composed under
    requested.sigmas: its inputs and a null left to compute are honoured there; a value given for
    a key the rebuilt node still has must be the final one."""
    final = {**FINAL, "requested": {"sigmas": {"num_scales": None, "overlap": 0.3, "sigma_begin": 2.0}}}
    assert bad_keys(["sigmas.overlap=0.3", "sigmas.num_scales=null"], final) == []
    assert bad_keys(["sigmas.overlap=0.4"], final) == ["sigmas.overlap"]
    # sigma_begin was requested 2.0 and rebuilt as 4.8: the final value rules
    assert bad_keys(["sigmas.sigma_begin=2.0"], final) == ["sigmas.sigma_begin"]
    assert bad_keys(["sigmas.sample_size=10"], final) == ["sigmas.sample_size"]


def test_the_refusal_is_one_line_naming_the_key_and_both_values():
    with pytest.raises(ConfigError) as e:
        check_overrides_honoured(FINAL, ["experiment=digits_fast", "sigmas.num_scales=3", "seed=4"], GROUPS)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("sigmas.num_scales is not honoured")
    assert "sigmas.num_scales=3" in msg and "22" in msg and "(also: seed)" in msg
    check_overrides_honoured(FINAL, ["sigmas.num_scales=22"], GROUPS)  # honoured: no error
    check_overrides_honoured(FINAL)  # outside a Hydra job there is nothing to check


# -- the check in train.py: a code path that overwrites a set key stops the job ----------------
@contextlib.contextmanager
def hydra_job(overrides):
    """The composed config of train.py with this job's Hydra state, as ``python train.py`` has it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def test_train_refuses_a_set_key_that_a_code_path_overwrote(tmp_path, monkeypatch, capsys):
    real = build.apply_noise_design

    def overwriting_design(cfg, datamodule):  # the old sigmas=auto: the computed L wins
        design = real(cfg, datamodule)
        cfg.sigmas.num_scales = 22
        return design

    monkeypatch.setattr(train, "apply_noise_design", overwriting_design)
    run_dir = tmp_path / "run"
    overrides = [*TINY_DIGITS, "fid=none", "callbacks.best=null", "sigmas=auto", "sigmas.num_scales=3"]
    overrides.append(f"paths.run_dir={run_dir}")
    with hydra_job(overrides) as cfg:
        assert run_entry(train.train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sigmas.num_scales is not honoured"), err
    assert "sigmas.num_scales=3" in err[0] and "22" in err[0]
    assert not (run_dir / ".hydra" / "config.yaml").exists()  # refused before anything is written


# -- through the CLI: sigmas=auto computes only what is left null ------------------------------
def test_auto_keeps_an_explicit_step_lr_and_sigma_begin(tmp_path):
    """sigmas.set_step_lr (technique 4) does not replace a sampler.step_lr given on the command
    line; a given sigma_begin is kept and L follows from it by technique 2 at the given overlap."""
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "trainer.max_steps=2",
        "fid=none",
        "callbacks.best=null",
        "sigmas=auto",
        "sampler.step_lr=3e-5",
        "sigmas.sigma_begin=2",
        "sigmas.overlap=0.4",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.sampler.step_lr == 3e-5
    assert saved.sigmas.sigma_begin == 2.0
    assert saved.sigmas.num_scales == num_scales_for(2.0, 0.01, gamma_for_overlap(0.4, 64))
    assert saved.requested.sigmas.overlap == 0.4 and saved.requested.sigmas.num_scales is None


@pytest.mark.slow
def test_num_scales_sweep_under_auto_trains_distinct_schedules(tmp_path):
    """python train.py -m sigmas=auto sigmas.num_scales=3,10: the saved configs and the networks'
    sigma buffers hold L = 3 and 10 from the same computed sigma_1 (technique 1), each with
    technique 4's step_lr (annealed Langevin's) for its own ratio."""
    sweep = tmp_path / "sweep"
    res = run_cli(
        "train.py",
        "-m",
        "sigmas=auto",
        *TINY_DIGITS,
        "trainer.max_steps=2",
        "fid=none",
        "callbacks.best=null",
        "sigmas.num_scales=3,10",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_dirs(sweep)
    saved_levels = sorted(OmegaConf.load(job / ".hydra" / "config.yaml").sigmas.num_scales for job in jobs)
    assert saved_levels == [3, 10]
    sigma_1 = []
    for job in jobs:
        saved = OmegaConf.load(job / ".hydra" / "config.yaml")
        levels = saved.sigmas.num_scales
        sigma_1.append(saved.sigmas.sigma_begin)
        gamma = (saved.sigmas.sigma_begin / 0.01) ** (1 / (levels - 1))
        assert saved.sampler.step_lr == pytest.approx(step_lr_for(gamma, 0.01, saved.sampler.n_steps_each), rel=1e-9)
        state = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        expected = make_sigmas("geometric", saved.sigmas.sigma_begin, 0.01, levels)
        buffers = [k for k in state if k.endswith(".sigmas")]  # the network's and its EMA copy's
        assert "net.sigmas" in buffers
        for name in buffers:
            torch.testing.assert_close(state[name].double(), expected, rtol=1e-6, atol=0)
    assert sigma_1[0] == sigma_1[1] and sigma_1[0] > 1.0


def test_one_level_with_a_sampler_grid_is_refused_before_training(tmp_path, capsys):
    """An honoured L = 1 under experiment=digits_fast (ode on sampler.num_steps=5 sigmas) would fail
    at the first sample, after training: the sampler's grid is checked against the levels first."""
    run_dir = tmp_path / "run"
    tiny = TINY  # ode has no steps per level
    overrides = [*tiny, "experiment=digits_fast", "fid=none", "callbacks.best=null", "sigmas.num_scales=1"]
    with hydra_job([*overrides, f"paths.run_dir={run_dir}"]) as cfg:
        assert run_entry(train.train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sampler.num_steps=5 is invalid"), err
    assert "1 noise level)" in err[0]
    assert not (run_dir / "checkpoints").exists()


def test_the_groups_a_job_selects_are_read_from_its_overrides():
    """A sweep job of -m sweep=sigma_kind selects sigmas=linear: the warning's input."""
    from ncsn.workflow.overrides import settings_without_effect, user_chosen_groups

    with hydra_job(["sigmas=linear", "seed=3"]) as cfg:
        assert user_chosen_groups() == {"sigmas"}
        (note,) = settings_without_effect(cfg)
    assert note.startswith("sigmas.kind=linear")
    with hydra_job(["seed=3"]):
        assert user_chosen_groups() == set()
    assert user_chosen_groups() == set()  # outside a Hydra job


def test_a_set_key_this_configuration_does_not_use_is_named():
    """digits_fast draws sigma log-normally and samples on its own 5-sigma ODE grid: L only sets
    the validation levels, and a num_scales sweep would train identical jobs. It is said, not silent."""
    from ncsn.workflow.overrides import settings_without_effect

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        fast = compose("train", overrides=["experiment=digits_fast", "sigmas.num_scales=10"])
        default = compose("train", overrides=["sigmas.num_scales=10"])
        ncsn = compose("train", overrides=["experiment=digits_ncsn", "sigmas.num_scales=10"])
        linear = compose("train", overrides=["sigmas=linear"])  # one job of -m sweep=sigma_kind
        ncsn_linear = compose("train", overrides=["experiment=digits_ncsn", "sigmas=linear"])
    (note,) = settings_without_effect(fast, {"sigmas.num_scales"}, set())
    assert note.startswith("sigmas.num_scales=10 changes only the validation levels")
    assert "loss.sigma_sampling=lognormal" in note and "(ode)" in note and "sampler.num_steps=5" in note
    assert settings_without_effect(fast, {"seed"}, set()) == []  # not set by the user: nothing to say
    assert settings_without_effect(default, {"sigmas.num_scales"}, set()) == [note]  # the default is this kind
    assert settings_without_effect(ncsn, {"sigmas.num_scales"}, set()) == []  # levels + annealed: L is used
    # the spacing of the levels, chosen as a group (the sigma_kind sweep) or as a key
    (spacing,) = settings_without_effect(linear, set(), {"sigmas"})
    assert spacing.startswith("sigmas.kind=linear (the spacing of the levels) changes only the validation levels")
    assert "sigma_1=1.0 and sigma_L=0.01 are used" in spacing
    assert settings_without_effect(linear, {"sigmas.kind"}, set()) == [spacing]
    assert settings_without_effect(linear, set(), {"model"}) == []  # another group: nothing to say
    assert settings_without_effect(ncsn_linear, set(), {"sigmas"}) == []  # trained on the levels: the spacing counts
    with open_dict(fast):
        fast.sampler.num_steps = None  # the ODE on the training levels: L is used
    assert settings_without_effect(fast, {"sigmas.num_scales"}, set()) == []
