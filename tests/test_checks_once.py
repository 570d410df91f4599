"""Each value is checked once, by the constructor of the object that uses it, and the pre-flight
check (``validate_train``) calls that same code: its message is the constructor's, word for word.
The loss object (``DSMLoss``) is the DSM formula with the run's settings, in every sampling mode."""

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ncsn.core.losses import DSMLoss, dsm_loss
from ncsn.core.sigmas import make_sigmas
from ncsn.nets.mlp import ConditionalMLP
from ncsn.nets.precond import EDMPrecond, check_precond
from ncsn.training.callbacks import SampleCallback, samples_interval_error
from ncsn.training.guards import NonFiniteGuard, NonFiniteLossError
from ncsn.training.optimizer import Adam
from ncsn.training.score_model import EmaUpdate
from ncsn.workflow.config import ConfigError, config_differences, upgrade_saved, validate_sigmas, validate_train

SIGMAS = torch.tensor([2.0, 1.0, 0.5, 0.1], dtype=torch.float64)


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, "paths.run_dir=/nonexistent/run"])


@pytest.mark.parametrize("sampling", ["levels", "continuous", "lognormal"])
@pytest.mark.parametrize("weighting", ["power", "edm"])
def test_loss_object_is_the_dsm_formula_with_its_settings(sampling, weighting):
    net = ConditionalMLP(SIGMAS, dim=3, hidden=16, num_layers=1, conditioning="sigma")
    x = torch.randn(32, 3)
    loss = DSMLoss(
        anneal_power=1.5, sigma_sampling=sampling, lognormal_mean=-0.5, lognormal_std=0.7, weighting=weighting
    )
    torch.manual_seed(3)
    got = loss(net, x, SIGMAS, sigma_data=0.5)
    torch.manual_seed(3)
    want = dsm_loss(
        net,
        x,
        SIGMAS,
        1.5,
        continuous=sampling != "levels",
        lognormal=(-0.5, 0.7) if sampling == "lognormal" else None,
        sigma_data=0.5 if weighting == "edm" else None,
    )
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    torch.manual_seed(3)  # each setting is honoured: the other weighting gives another loss
    other = DSMLoss(1.5, sampling, -0.5, 0.7, "power" if weighting == "edm" else "edm")(net, x, SIGMAS, sigma_data=0.5)
    assert torch.equal(other.sigma, got.sigma) and not torch.equal(other.per_example, got.per_example)
    if sampling == "levels":
        assert torch.equal(got.sigma, SIGMAS.float()[got.level_index])
    else:  # drawn between the levels, not on them
        assert (got.sigma[:, None] != SIGMAS.float()[None]).all()
    # validation: at the given levels, weighted sigma^anneal_power whatever the training weighting
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    levels = torch.arange(32) % 4
    val = loss.at_levels(net, x, SIGMAS, levels, g1)
    assert torch.equal(val.per_example, dsm_loss(net, x, SIGMAS, 1.5, generator=g2, level_index=levels).per_example)


def test_lognormal_sampling_follows_its_mean():
    net = ConditionalMLP(SIGMAS, dim=2, hidden=8, num_layers=1, conditioning="sigma")
    x = torch.zeros(4000, 2)
    low = DSMLoss(sigma_sampling="lognormal", lognormal_mean=-2.0, lognormal_std=0.3)(net, x, SIGMAS).sigma
    high = DSMLoss(sigma_sampling="lognormal", lognormal_mean=0.0, lognormal_std=0.3)(net, x, SIGMAS).sigma
    assert abs(low.log().median() + 2.0) < 0.05 and abs(high.log().median()) < 0.05


# (override, the object and the keyword its constructor is given)
BAD = [
    ("loss.anneal_power=two", DSMLoss, {"anneal_power": "two"}),
    ("loss.sigma_sampling=sometimes", DSMLoss, {"sigma_sampling": "sometimes"}),
    ("loss.lognormal_mean=inf", DSMLoss, {"lognormal_mean": float("inf")}),
    ("loss.lognormal_std=0", DSMLoss, {"lognormal_std": 0}),
    ("loss.weighting=snr", DSMLoss, {"weighting": "snr"}),
    ("loss.val_levels_per_image=0", DSMLoss, {"val_levels_per_image": 0}),
    ("loss.on_nonfinite=ignore", NonFiniteGuard, {"on_nonfinite": "ignore"}),
    ("loss.max_skipped=-1", NonFiniteGuard, {"max_skipped": -1}),
    ("loss.explode_factor=1", NonFiniteGuard, {"explode_factor": 1}),
    ("optim.lr=0", Adam, {"lr": 0}),
    ("optim.beta1=1.0", Adam, {"beta1": 1.0}),
    ("optim.beta2=-0.1", Adam, {"beta2": -0.1}),
    ("optim.eps=0", Adam, {"eps": 0}),
    ("optim.weight_decay=-1", Adam, {"weight_decay": -1}),
    ("optim.amsgrad=1", Adam, {"amsgrad": 1}),
    ("optim.fused=maybe", Adam, {"fused": "maybe"}),
    ("optim.ema_decay=1.0", EmaUpdate, {"decay": 1.0}),
    ("model.precond=karras", check_precond, {"precond": "karras"}),
    ("model.sigma_data=0", check_precond, {"precond": "edm", "sigma_data": 0}),
    ("model.sigma_data=-0.5", EDMPrecond, {"sigma_data": -0.5}),
]


@pytest.mark.parametrize("override, cls, kwargs", BAD, ids=[b[0] for b in BAD])
def test_preflight_refusal_is_the_constructors_own(override, cls, kwargs):
    if cls is EDMPrecond:  # a network it can wrap: only sigma_data is wrong
        kwargs = {"net": ConditionalMLP(SIGMAS, dim=2, hidden=8, scale_by_sigma=False, conditioning="sigma"), **kwargs}
    with pytest.raises(ValueError) as own:
        cls(**kwargs)
    message = str(own.value)
    key, _, _ = override.partition("=")
    assert message.startswith(f"{key}=") and " is invalid: must be " in message and "\n" not in message
    with pytest.raises(ConfigError) as preflight:
        validate_train(compose_train([override]))
    assert str(preflight.value) == message


def test_unknown_loss_key_is_refused_and_the_guard_keys_are_known():
    with pytest.raises(ConfigError, match=r"loss\.foo is not a key of ncsn.core.losses.DSMLoss"):
        validate_train(compose_train(["+loss.foo=1"]))
    validate_train(compose_train(["loss.on_nonfinite=skip", "loss.max_skipped=null", "optim.ema_decay=null"]))


def test_guard_raises_skips_up_to_its_limit_and_warns_once():
    with pytest.raises(NonFiniteLossError, match="at step 3. Set loss.on_nonfinite=skip"):
        NonFiniteGuard("raise").nonfinite("at step 3", 1)
    guard = NonFiniteGuard("skip", max_skipped=2, explode_factor=10.0)
    guard.nonfinite("a", 1)
    guard.nonfinite("a", 2)
    with pytest.raises(NonFiniteLossError, match="3 batches skipped, more than loss.max_skipped=2"):
        guard.nonfinite("a", 3)
    NonFiniteGuard("skip", max_skipped=None).nonfinite("a", 10**6)
    for step, loss in enumerate([2.0, 1.0, 9.0]):
        guard.watch(loss, step)
    assert guard.warning is None
    guard.watch(10.5, 3)
    assert "10.5 at global step 3" in guard.warning and "loss.explode_factor=10.0" in guard.warning
    first = guard.warning
    guard.watch(1e6, 4)
    assert guard.warning == first  # once
    quiet = NonFiniteGuard(explode_factor=None)
    quiet.watch(1.0, 0)
    quiet.watch(1e9, 1)
    assert quiet.warning is None


def test_optimizer_partial_is_torchs_adam_with_the_configured_values():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = Adam(lr=0.01, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.1, amsgrad=True, fused=False)(
        a.parameters(), "cpu"
    )
    theirs = torch.optim.Adam(b.parameters(), lr=0.01, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True)
    x = torch.randn(8, 3)
    for _ in range(3):
        for net, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ours.defaults["betas"] == (0.5, 0.9) and ours.defaults["amsgrad"] is True


def test_saved_config_of_an_older_layout_resumes_as_the_same_run():
    """Runs saved before loss/optim became objects have no ``_target_`` there: not a change."""
    new = OmegaConf.to_container(compose_train([]), resolve=True)
    old = {**new, "loss": {k: v for k, v in new["loss"].items() if k != "_target_"}}
    old["optim"] = {k: v for k, v in new["optim"].items() if k != "_target_"}
    assert config_differences(old, new, []) == [] and config_differences(old, new) == []
    assert "_target_" not in old["loss"] and upgrade_saved(old)["loss"]["_target_"] == new["loss"]["_target_"]
    changed = {**new, "optim": {**new["optim"], "lr": 0.5}}
    assert config_differences(old, changed, []) == ["optim.lr"]


@pytest.mark.parametrize(
    "values",
    [("cosine", 1.0, 0.01, 10), ("geometric", 1.0, -0.1, 10), ("geometric", 1.0, 0.01, 0), ("linear", 0.01, 1.0, 3)],
)
def test_sigma_keys_one_rule(values):
    """validate_sigmas (before any work) refuses with make_sigmas's own message."""
    with pytest.raises(ValueError) as own:
        make_sigmas(*values)
    cfg = OmegaConf.create({"sigmas": dict(zip(("kind", "sigma_begin", "sigma_end", "num_scales"), values))})
    with pytest.raises(ConfigError) as preflight:
        validate_sigmas(cfg)
    assert str(preflight.value) == str(own.value) and " is invalid: must be " in str(own.value)


def test_samples_interval_one_rule(tmp_path):
    message = samples_interval_error(0, None)
    assert message == "callbacks.samples.every_n_epochs=0 is invalid: must be an integer >= 1"
    with pytest.raises(ValueError) as own:
        SampleCallback(sampler=None, out_dir=str(tmp_path), every_n_epochs=0)
    assert str(own.value) == message
