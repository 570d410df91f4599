"""Bad input is refused before any work: a one-line message naming the key (or path), the value
and what is allowed; exit status 2; nothing is written into the run directory."""

import pytest
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir

from ncsn.workflow.entry import EXIT_BAD_INPUT, run_entry
from ncsn.workflow.train import train

# (overrides, text the message must contain)
BAD = [
    (["sigmas.sigma_end=2.0"], "sigmas.sigma_begin=1.0 is invalid: must be a number > sigmas.sigma_end=2.0"),
    (["sigmas.sigma_end=1.0"], "sigmas.sigma_begin=1.0 is invalid"),
    (["sigmas.num_scales=0"], "sigmas.num_scales=0 is invalid: must be an integer >= 1"),
    (["sigmas.num_scales=ten"], "sigmas.num_scales='ten' is invalid"),
    (["sigmas.kind=cosine"], "sigmas.kind='cosine' is invalid"),
    (["sigmas.sigma_end=-0.1"], "sigmas.sigma_end=-0.1 is invalid: must be a number > 0"),
    (["sampler.step_lr=0"], "sampler.step_lr=0 is invalid: must be a number > 0"),
    (["sampler.step_lr=-1e-5"], "sampler.step_lr=-1e-05 is invalid"),
    (["sampler.n_steps_each=0"], "sampler.n_steps_each=0 is invalid: must be an integer >= 1"),
    (["sampler.n_samples=0"], "sampler.n_samples=0 is invalid"),
    (
        ["sampler.kind=euler"],
        "sampler.kind='euler' is invalid: it names the kind's file; choose the kind with sampler=euler",
    ),
    (["sampler=cas", "sampler.eta=0"], "sampler.eta=0 is invalid: must be a number > 0"),
    (["loss.sigma_sampling=continuous"], "loss.sigma_sampling='continuous' is invalid for this model"),
    (["loss.sigma_sampling=sometimes"], "loss.sigma_sampling='sometimes' is invalid"),
    (["sampler.init_high=-1.0"], "sampler.init_high=-1.0 is invalid: must be a number > sampler.init_low=0.0"),
    (["sampler.denoise=maybe"], "sampler.denoise='maybe' is invalid: must be null, true or false"),
    (["optim.lr=0"], "optim.lr=0 is invalid: must be a number > 0"),
    (["optim.beta1=1.0"], "optim.beta1=1.0 is invalid: must be a number in [0, 1)"),
    (["optim.beta2=-0.1"], "optim.beta2=-0.1 is invalid"),
    (["optim.eps=0"], "optim.eps=0 is invalid"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1 is invalid: must be a number >= 0"),
    (["optim.ema_decay=1.0"], "optim.ema_decay=1.0 is invalid: must be null or a number in [0, 1)"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid: must be an integer >= 1"),
    (["data.num_workers=-1"], "data.num_workers=-1 is invalid"),
    (["data.channels=3"], "data.channels=3: the digits are grayscale"),
    (["data.image_size=16"], "data.image_size=16: the digits are 8x8"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is invalid"),
    (["trainer.precision=8-bit"], "trainer.precision='8-bit' is invalid"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
    (["trainer.devices=0"], "trainer.devices=0 is invalid"),
    (["callbacks.samples.every_n_epochs=0"], "callbacks.samples.every_n_epochs=0 is invalid"),
    (["callbacks.samples.every_n_epochs=15"], "must be a multiple of trainer.check_val_every_n_epoch=25"),
    (["+model.width=3"], "model.width is not a key of ncsn.nets.small_conv.SmallConvScoreNet"),
    (["+trainer.max_stepz=3"], "trainer.max_stepz is not a key of lightning.Trainer"),
    (["loss.anneal_power=two"], "loss.anneal_power='two' is invalid"),
    (["loss.on_nonfinite=ignore"], "loss.on_nonfinite='ignore' is invalid: must be 'raise' or 'skip'"),
    (["loss.val_levels_per_image=0"], "loss.val_levels_per_image=0 is invalid: must be null or an integer >= 1"),
    (["seed=abc"], "seed='abc' is invalid: must be an integer"),
    (["model.in_channels=3"], "model does not fit data of shape (1, 8, 8)"),
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path='/nonexistent/last.ckpt': no such checkpoint file"),
    (["ckpt_path=last"], "ckpt_path='last': no "),
    (["fid=none"], "callbacks.best.monitor='fid' needs FID"),
    (["data=cifar10", "data.root=/nonexistent/data", "fid=none", "callbacks.best=null"], "CIFAR-10 data not found"),
    (["data=cifar10", "data.image_size=64", "fid=none", "callbacks.best=null"], "data.image_size=64"),
    (["experiment=toy_gmm", "sigmas=auto", "sigmas.num_scales=null"], "sigmas.kind=auto: "),  # 2-D: no technique 2
    (["sigmas=auto", "sigmas.overlap=1.5"], "sigmas.overlap=1.5 is invalid"),
    (
        ["data.batch_size=127", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"],
        "data.batch_size=127 is invalid: must be divisible by the number of processes (2",
    ),
    # sizes that cannot fit: refused before the levels, the network or a batch are allocated
    (["sigmas.num_scales=1000000000"], "sigmas.num_scales=1000000000 is invalid: the run needs at least"),
    (["data.batch_size=100000000000"], "data.batch_size=100000000000 is invalid: the run needs at least"),
    # a batch larger than the training set (1,600 digits) would never make a step
    (["data.batch_size=5000"], "data.batch_size=5000 is invalid: must be at most the training set's 1600 examples"),
    (
        ["data.batch_size=1700", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"],
        "data.batch_size=1700 is invalid: must be at most the training set's 1600 examples; each of the 2 processes "
        "takes 850 of its 800",
    ),
    # samples come after a validation: the rule holds with FID off too
    (
        ["fid=none", "callbacks.best=null", "callbacks.samples.every_n_epochs=15"],
        "callbacks.samples.every_n_epochs=15 is invalid: must be a multiple of trainer.check_val_every_n_epoch=25",
    ),
]


def compose_train(overrides, run_dir):
    """The NCSN digits setup (fixed geometric levels, annealed Langevin), which the values above
    refer to; an experiment given in ``overrides`` replaces it."""
    setup = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=digits_ncsn"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*setup, *overrides, f"paths.run_dir={run_dir}", "logger=csv"])


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_refused_before_any_work(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = compose_train(overrides, run_dir)
    assert run_entry(train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing written


def test_sample_interval_rule_is_the_callbacks_own_check(tmp_path):
    """The pre-flight refusal and SampleCallback.setup apply one rule (samples_interval_error)."""
    import lightning as L

    from ncsn.training.callbacks import SampleCallback, samples_interval_error

    assert samples_interval_error(50, 25) is None and samples_interval_error(7, None) is None
    message = samples_interval_error(15, 25)
    assert message.startswith("callbacks.samples.every_n_epochs=15 is invalid")
    trainer = L.Trainer(check_val_every_n_epoch=25, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError) as e:
        SampleCallback(sampler=None, out_dir=str(tmp_path), every_n_epochs=15).setup(trainer, None, "fit")
    assert str(e.value) == message
    SampleCallback(sampler=None, out_dir=str(tmp_path), every_n_epochs=50).setup(trainer, None, "fit")


def test_memory_estimate_counts_the_per_level_parameters():
    """A level-conditioned network (NCSN's conditional norms) grows with num_scales; NCSNv2's does not."""
    from ncsn.workflow.resources import BYTES_PER_LEVEL, parameter_counts

    for model, grows in (("ncsn", True), ("ncsnv2", False)):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={model}"])
        base, per_level = parameter_counts(cfg.model, 10)
        assert base > 1_000_000 and (per_level > 0) == grows, (model, base, per_level)
    assert BYTES_PER_LEVEL >= 8  # at least the float64 level itself


def test_missing_inception_weights_stop_at_startup(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cfg = compose_train(["fid=inception"], tmp_path / "run")
    assert run_entry(train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "fid.weights_path" in err


def test_unknown_top_level_key_fails_in_the_cli(tmp_path):
    res = run_cli("train.py", "sigma_begin=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode != 0
    assert "sigma_begin" in res.stderr and "not in struct" in res.stderr
    assert not (tmp_path / "run").exists()


def test_bad_value_exit_status_and_run_dir_untouched_in_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("precious: true\n")
    res = run_cli("train.py", "sampler=annealed", "sampler.n_steps_each=0", f"hydra.run.dir={run_dir}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: sampler.n_steps_each=0 is invalid: must be an integer >= 1" in res.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "precious: true\n"
    assert not (run_dir / "checkpoints").exists()


def test_a_sweep_job_path_unquoted_is_refused_with_the_quoting_that_works(tmp_path):
    """A sweep job's directory is named by its settings (``seed=1``): Hydra reads the '=' in such a
    path as a second override. The message names the argument and the quoted form; that form is
    accepted (the checkpoint it names is then reported missing, not the grammar)."""
    path = f"{tmp_path}/sweep/seed=1/checkpoints/last.ckpt"
    res = run_cli("sample.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}")
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert f"`ckpt_path={path}`" in line and "holding '='" in line
    quoted = line.split("quote it: ")[1].split(" (several")[0].strip('"')
    assert quoted == f"ckpt_path='{path}'"
    res = run_cli("sample.py", quoted, f"hydra.run.dir={tmp_path / 'out'}")
    assert res.returncode == 2 and "mismatched input" not in res.stderr
    assert "seed=1/checkpoints/last.ckpt" in res.stderr and "holding '='" not in res.stderr


def test_overrides_hydra_parses_are_left_to_hydra():
    from ncsn.workflow.entry import unquoted_path

    assert unquoted_path(["ckpt_path=/a/seed=1/last.ckpt"]) is not None
    assert unquoted_path(["ckpt_path='/a/seed=1/last.ckpt'", "seed=3", "-m", "x=a,b", "hydra.run.dir=/a/b"]) is None
    assert unquoted_path(["ckpt_path=/a/b/last.ckpt", "--cfg", "job", "+x=1"]) is None
