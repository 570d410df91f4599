"""Every key the user set is honoured: the check run on a job's final config.

The user sets keys on the command line or through a sweep (``-m``: the sweeper turns each job's
values into the job's own overrides), and Hydra hands them to the job as its task overrides
(``key=value``, ``+key=value``, ``++key=value``, ``~key``). Steps after composition may still
write keys (the noise design of ``sigmas=auto``, sample.py's settings from the checkpoint); a
value the user gave must survive them, or the job stops with one line naming the key
(``check_overrides_honoured``, called by train.py and sample.py once the config is final).
Group selections (``model=ncsnv2``, ``experiment=...``, ``sweep=...``) choose files, not values,
and ``hydra.*`` configures Hydra itself: neither is compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from .config import CONF_DIR, ConfigError

_ABSENT = object()
#: Top-level key of a final config under which a step that rebuilt a node from the user's settings
#: keeps the node as composed (``sigmas=auto``: ``requested.sigmas``; see ``unhonoured``).
REQUESTED = "requested"


@dataclass(frozen=True)
class SetKey:
    """One key the user set: its dotted name, the value given (parsed as Hydra parses it) and
    whether the override deletes it (``~key``)."""

    key: str
    value: object
    delete: bool = False
    text: str = ""  # the override as written


def conf_groups(conf_dir: Path = CONF_DIR) -> set[str]:
    """The config groups under ``conf_dir`` (``model``, ``hydra/launcher``, ...): the folders."""
    if not conf_dir.is_dir():
        return set()
    return {str(p.relative_to(conf_dir)) for p in conf_dir.rglob("*") if p.is_dir()}


def _has_interpolation(value) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_has_interpolation(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_interpolation(v) for v in value)
    return False


def set_keys(overrides: list[str], groups: set[str]) -> list[SetKey]:
    """The value keys among Hydra task overrides: group selections (a key in ``groups``, or one
    with an ``@package``), ``hydra.*`` keys, sweeps and values holding an interpolation (resolved
    elsewhere, not comparable as written) are left out. A key given twice counts once, with the
    later value (Hydra's order)."""
    out = []
    for o in OverridesParser.create().parse_overrides(overrides=list(overrides)):
        key = o.key_or_group
        if o.package is not None or key in groups or key == "hydra" or key.startswith("hydra."):
            continue
        if o.is_delete():
            out.append(SetKey(key, None, True, o.input_line or key))
            continue
        if o.is_sweep_override():
            continue
        value = o.value()
        if not _has_interpolation(value):
            out.append(SetKey(key, value, False, o.input_line or key))
    last = {s.key: s for s in out}  # a key given twice: Hydra applies the later value
    return [s for s in out if last[s.key] is s]


def user_set_keys() -> set[str]:
    """The dotted keys this Hydra job's command line or sweep sets (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return set()
    hc = HydraConfig.get()
    return {s.key for s in set_keys(list(hc.overrides.task), set(hc.runtime.choices.keys()))}


def user_chosen_groups() -> set[str]:
    """The config groups this Hydra job's command line or sweep selects (``sigmas=linear``:
    ``sigmas``; empty outside Hydra)."""
    if not HydraConfig.initialized():
        return set()
    hc = HydraConfig.get()
    groups = set(hc.runtime.choices.keys())
    parsed = OverridesParser.create().parse_overrides(overrides=list(hc.overrides.task))
    return {o.key_or_group for o in parsed if o.key_or_group in groups}


def same_value(given, final) -> bool:
    """``given`` (as the override parser read it) equals ``final`` (the config's value), by
    value not by type: 3 and 3.0 agree, a number and its text agree ("32" and 32), true and 1
    do not; lists element by element; a given mapping is merged into the node, so its keys must
    agree (the node may hold more)."""
    if isinstance(given, dict):
        return isinstance(final, dict) and all(k in final and same_value(v, final[k]) for k, v in given.items())
    if isinstance(given, list) or isinstance(final, list):
        return (
            isinstance(given, list)
            and isinstance(final, list)
            and len(given) == len(final)
            and all(same_value(a, b) for a, b in zip(given, final))
        )
    if given is None or final is None:
        return given is None and final is None
    if isinstance(given, bool) or isinstance(final, bool):
        return isinstance(given, bool) and isinstance(final, bool) and given == final
    a, b = _as_number(given), _as_number(final)
    if a is not None and b is not None:
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return given == final


def _as_number(v) -> float | None:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _select(cfg: DictConfig, key: str):
    return _plain(OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False))


def unhonoured(final, overrides: list[str], groups: set[str]) -> list[tuple[SetKey, object]]:
    """(the override, the final value) for each set key whose value the final config does not
    hold (``_ABSENT`` where the key is missing; for ``~key``, the value still there).

    A node a step rebuilt from the user's settings (``sigmas=auto`` -> geometric levels) keeps
    them as composed under ``requested.<key>``: a key the rebuilt node no longer has (an input of
    the step, ``sigmas.overlap``) is honoured when it is recorded there with the given value, and
    so is a null given for the step to compute (``sigmas.num_scales=null``). A value given for a
    key the rebuilt node still has must be the final one."""
    cfg = final if isinstance(final, DictConfig) else OmegaConf.create(final)
    bad = []
    for s in set_keys(overrides, groups):
        value = _select(cfg, s.key)
        if s.delete:
            if value is not _ABSENT:
                bad.append((s, value))
            continue
        if value is not _ABSENT and same_value(s.value, value):
            continue
        if value is _ABSENT or s.value is None:
            asked = _select(cfg, f"{REQUESTED}.{s.key}")
            if asked is not _ABSENT and same_value(s.value, asked):
                continue
        bad.append((s, value))
    return bad


def check_overrides_honoured(final, overrides: list[str] | None = None, groups: set[str] | None = None) -> None:
    """Refuse (ConfigError, one line) a job whose final config does not hold a value the user set.
    ``final``: the config the job runs with (a dict or DictConfig, resolved); ``overrides``: the
    task overrides (None: this Hydra job's, none outside Hydra); ``groups``: the config groups
    (None: this Hydra job's choices, else the folders of conf/)."""
    if overrides is None:
        if not HydraConfig.initialized():
            return
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        groups = set(hc.runtime.choices.keys()) if groups is None else groups
    groups = conf_groups() if groups is None else groups
    bad = unhonoured(final, overrides, groups)
    if not bad:
        return
    s, value = bad[0]
    held = "still holds it" if s.delete else f"holds {'nothing' if value is _ABSENT else repr(value)}"
    more = f" (also: {', '.join(b[0].key for b in bad[1:])})" if len(bad) > 1 else ""
    raise ConfigError(
        f"{s.key} is not honoured: `{s.text}` was set on the command line or by the sweep, but the job's "
        f"final config {held}{more}; a value you set is used as given or nothing runs"
    )


#: Sampler kinds that run on a grid of their own (``sampler.num_steps`` sigmas from sigma_1 to sigma_L).
GRID_KINDS = ("cas", "pc", "ode", "euler", "edm")


def _levels_unused(cfg: DictConfig) -> str | None:
    """Why this configuration uses its noise levels only for validation, or None when it trains or
    samples on them: the loss draws sigma continuously and the sampler runs on its own grid."""
    kind, num_steps = OmegaConf.select(cfg, "sampler.kind"), OmegaConf.select(cfg, "sampler.num_steps")
    sampling = OmegaConf.select(cfg, "loss.sigma_sampling")
    if sampling == "levels" or kind not in GRID_KINDS or num_steps is None:
        return None
    return (
        f"the loss draws sigma continuously (loss.sigma_sampling={sampling}) and the sampler ({kind}) runs on "
        f"its own grid (sampler.num_steps={num_steps}) from sigma_1 to sigma_L"
    )


def settings_without_effect(final, user_keys: set[str] | None = None, chosen: set[str] | None = None) -> list[str]:
    """Warnings (one line each) for settings the user gave that this configuration does not use
    for training or for its sampler: honoured, but changing nothing a sweep's metric sees.
    ``user_keys``: the keys set (None: this Hydra job's); ``chosen``: the groups selected (None:
    this Hydra job's). Today, when the loss draws sigma continuously and the sampler runs on its
    own grid (the default run), the levels between the end points only set the validation levels:
    ``sigmas.num_scales`` (L), and the spacing (``sigmas=linear`` or ``sigmas.kind``, as in
    ``-m sweep=sigma_kind``), whose end points sigma_1 and sigma_L still count."""
    user_keys = user_set_keys() if user_keys is None else user_keys
    chosen = user_chosen_groups() if chosen is None else chosen
    cfg = final if isinstance(final, DictConfig) else OmegaConf.create(final)
    why = _levels_unused(cfg)
    if why is None:
        return []
    out = []
    if "sigmas.num_scales" in user_keys:
        out.append(
            f"sigmas.num_scales={OmegaConf.select(cfg, 'sigmas.num_scales')} changes only the validation levels of "
            f"this run: {why}"
        )
    if "sigmas" in chosen or "sigmas.kind" in user_keys:
        out.append(
            f"sigmas.kind={OmegaConf.select(cfg, 'sigmas.kind')} (the spacing of the levels) changes only the "
            f"validation levels of this run, its end points sigma_1={OmegaConf.select(cfg, 'sigmas.sigma_begin')} "
            f"and sigma_L={OmegaConf.select(cfg, 'sigmas.sigma_end')} are used: {why}"
        )
    return out
