"""Parameter names of the original NCSN / NCSNv2 code, mapped onto this repository's networks.

The authors' checkpoints (ermongroup/ncsn, ermongroup/ncsnv2) are ``torch.save``d Python lists:

* NCSN (``runners/anneal_runner.py``): ``[model state_dict, optimizer state_dict]``;
* NCSNv2 (``runners/ncsn_runner.py``): ``[model state_dict, optimizer state_dict, epoch, step]``,
  plus the EMA shadow as a fifth item when ``model.ema`` is true.

The model was wrapped in ``nn.DataParallel`` when saved, so its keys start with ``module.``; the
EMA shadow is a dict of the *parameters* of the unwrapped model (no ``module.`` prefix, no
buffers, so no ``sigmas``).

Every key of our network maps to exactly one reference key by the rules below (``reference_key``);
``reference_key_table`` applies them to all keys of a network and checks the result is one-to-one,
and the converters check that every key of a file is accounted for and every shape fits.

=====================================================  ===================================================
this repository (``net.state_dict()``)                 reference (``module.`` stripped)
=====================================================  ===================================================
``sigmas``                                             ``sigmas`` (NCSNv2); not stored by NCSN (filled
                                                       from the config's sigma_begin, sigma_end, L)
``body.begin_conv.{weight,bias}``                      ``begin_conv.{weight,bias}``
``body.end_norm.norm.P``                               ``normalizer.P``
``body.end_conv.{weight,bias}``                        ``end_conv.{weight,bias}``
``body.stages.S.B.norm{1,2}.norm.P``                   ``res{S+1}.B.normalize{1,2}.P``
``body.stages.S.B.conv1.{weight,bias}``                ``res{S+1}.B.conv1.{weight,bias}``
``body.stages.S.B.conv2.{weight,bias}``                ``res{S+1}.B.conv2.{weight,bias}``, or
                                                       ``res{S+1}.B.conv2.conv.{weight,bias}`` in a
                                                       downsampling block (ConvMeanPool)
``body.stages.S.B.shortcut.{weight,bias}``             ``res{S+1}.B.shortcut.{weight,bias}``, or
                                                       ``res{S+1}.B.shortcut.conv.{weight,bias}`` when
                                                       downsampling (ConvMeanPool, 1x1)
``body.refines.J.adapt.I.convs.K.weight``              ``refine{J+1}.adapt_convs.I.{K//2+1}_{K%2+1}_conv.weight``
``body.refines.J.adapt.I.norms.K.norm.P``              ``refine{J+1}.adapt_convs.I.{K//2+1}_{K%2+1}_norm.P``
``body.refines.J.output.convs.K.weight``               ``refine{J+1}.output_convs.{K//2+1}_{K%2+1}_conv.weight``
``body.refines.J.output.norms.K.norm.P``               ``refine{J+1}.output_convs.{K//2+1}_{K%2+1}_norm.P``
``body.refines.J.fusion.convs.I.{weight,bias}``        ``refine{J+1}.msf.convs.I.{weight,bias}``
``body.refines.J.fusion.norms.I.norm.P``               ``refine{J+1}.msf.norms.I.P``
``body.refines.J.pooling.convs.I.weight``              ``refine{J+1}.crp.convs.I.weight``
``body.refines.J.pooling.norms.I.norm.P``              ``refine{J+1}.crp.norms.I.P``
=====================================================  ===================================================

``P`` is ``embed.weight`` for the CIN++ of NCSN (one (L, 3F) table: gamma, alpha, beta, the same
layout in both codes) and ``alpha``, ``gamma``, ``beta`` for the IN++ of NCSNv2. ``S`` (stage),
``J`` (RefineNet block, 0 = the deepest) and the ``K`` of the residual conv units (two convs per
unit: unit K//2, conv K%2) count from 0 here and from 1 in the reference's ``resN`` / ``refineN`` /
``i_j_conv`` names. The norm/conv inside ``F.interpolate`` and the pooling layers hold no weights.

Networks covered: ``CondRefineNetDilated`` (NCSN: ``models/cond_refinenet_dilated.py``),
``NCSNv2`` and ``NCSNv2Deeper`` (``models/ncsnv2.py``). The reference's ``NCSNv2Deepest`` (FFHQ)
has no counterpart here. Plain torch: no Lightning, no Hydra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ncsnv2 import NCSNv2, NCSNv2Deeper
from .refinenet import CondRefineNetDilated

DP_PREFIX = "module."  # what nn.DataParallel adds to every key of the model's state_dict

#: the reference family of each of our networks: "ncsn" (ermongroup/ncsn) or "ncsnv2" (ermongroup/ncsnv2)
FAMILY = {CondRefineNetDilated: "ncsn", NCSNv2: "ncsnv2", NCSNv2Deeper: "ncsnv2"}


class ReferenceFormatError(ValueError):
    """A file or state dict that is not in the reference layout, or does not fit the network."""


def family_of(net: nn.Module) -> str:
    for cls, fam in FAMILY.items():
        if type(net) is cls:
            return fam
    raise ReferenceFormatError(
        f"{type(net).__name__} has no counterpart in the reference code "
        "(only CondRefineNetDilated, NCSNv2 and NCSNv2Deeper do)"
    )


def _unit(k: str) -> str:
    """Index K of our residual conv unit convs/norms -> the reference's ``i_j`` (1-based)."""
    i = int(k)
    return f"{i // 2 + 1}_{i % 2 + 1}"


_STAGE = re.compile(r"^body\.stages\.(\d+)\.(\d+)\.(norm1|norm2|conv1|conv2|shortcut)\.(?:norm\.)?(.+)$")
_REFINE = re.compile(
    r"^body\.refines\.(\d+)\.(adapt\.(\d+)|output|fusion|pooling)\.(convs|norms)\.(\d+)\.(?:norm\.)?(.+)$"
)


def reference_key(key: str, net: nn.Module) -> str | None:
    """The reference name of our key ``key`` of ``net`` (None: a key the reference does not store)."""
    fam = family_of(net)
    if key == "sigmas":
        return "sigmas" if fam == "ncsnv2" else None
    for ours, theirs in (("body.begin_conv.", "begin_conv."), ("body.end_conv.", "end_conv.")):
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    if key.startswith("body.end_norm.norm."):
        return "normalizer." + key[len("body.end_norm.norm.") :]
    m = _STAGE.match(key)
    if m:
        stage, block, part, leaf = m.groups()
        body: Any = net.body
        down = body.stages[int(stage)][int(block)].downsample
        name = {"norm1": "normalize1", "norm2": "normalize2"}.get(part, part)
        if down and part in ("conv2", "shortcut"):
            name += ".conv"  # the reference's ConvMeanPool wraps the conv
        return f"res{int(stage) + 1}.{block}.{name}.{leaf}"
    m = _REFINE.match(key)
    if m:
        j, where, adapt_i, kind, k, leaf = m.groups()
        head = f"refine{int(j) + 1}."
        if adapt_i is not None or where == "output":
            unit = f"{_unit(k)}_{'conv' if kind == 'convs' else 'norm'}"
            block = f"adapt_convs.{adapt_i}" if adapt_i is not None else "output_convs"
            return f"{head}{block}.{unit}.{leaf}"
        return f"{head}{'msf' if where == 'fusion' else 'crp'}.{kind}.{k}.{leaf}"
    raise ReferenceFormatError(f"no reference name for key {key!r} of {type(net).__name__}")


def reference_key_table(net: nn.Module) -> dict[str, str | None]:
    """{our key: reference key or None} for every key of ``net.state_dict()``, checked one-to-one."""
    table = {k: reference_key(k, net) for k in net.state_dict()}
    named = [v for v in table.values() if v is not None]
    if len(set(named)) != len(named):
        raise ReferenceFormatError("the reference key mapping is not one-to-one (a bug in the rules)")
    return table


def strip_prefix(state: dict, prefix: str = DP_PREFIX) -> dict:
    """Remove ``prefix`` from every key; every key must carry it."""
    bad = [k for k in state if not k.startswith(prefix)]
    if bad:
        raise ReferenceFormatError(f"model keys must start with {prefix!r} (DataParallel), e.g. not {bad[0]!r}")
    return {k[len(prefix) :]: v for k, v in state.items()}


def _describe(keys: list[str]) -> str:
    return f"{', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"


def to_ours(ref_state: dict, net: nn.Module, *, parameters_only: bool = False, sigmas: torch.Tensor | None = None):
    """A reference state dict (``module.`` already stripped) -> our state dict for ``net``.

    Every reference key must be used and every one of our keys filled, with the same shape.
    ``parameters_only``: ``ref_state`` is an EMA shadow (parameters, no buffers); our buffers
    (``sigmas``) are then taken from ``sigmas`` (or ``net``). NCSN stores no ``sigmas``: it comes
    from ``sigmas`` (the config's levels), which must then be given.
    """
    table = reference_key_table(net)
    own = net.state_dict()
    param_names = {n for n, _ in net.named_parameters()}
    out, missing, shapes = {}, [], []
    for ours, theirs in table.items():
        if theirs is None or (parameters_only and ours not in param_names):
            if ours == "sigmas":
                if sigmas is None:
                    raise ReferenceFormatError("the noise levels are not in the file: pass the config's sigmas")
                out[ours] = torch.as_tensor(sigmas, dtype=own[ours].dtype).clone()
                if out[ours].shape != own[ours].shape:
                    shapes.append(f"sigmas {tuple(out[ours].shape)} vs {tuple(own[ours].shape)}")
                continue
            raise ReferenceFormatError(f"no reference value for {ours!r}")
        if theirs not in ref_state:
            missing.append(theirs)
            continue
        value = ref_state[theirs]
        if not isinstance(value, torch.Tensor) or value.shape != own[ours].shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            shapes.append(f"{theirs} {got} vs {tuple(own[ours].shape)}")
            continue
        out[ours] = value.detach().clone()
    used = {v for v in table.values() if v is not None}
    unexpected = [k for k in ref_state if k not in used]
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {_describe(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if keys
        ]
        raise ReferenceFormatError(f"does not fit {type(net).__name__}: " + "; ".join(parts))
    return out


def to_reference(our_state: dict, net: nn.Module, *, parameters_only: bool = False) -> dict:
    """Our state dict for ``net`` -> the reference's names (no ``module.`` prefix). Keys the
    reference does not store (NCSN's ``sigmas``) are dropped; ``parameters_only`` keeps only
    parameters (the layout of the reference's EMA shadow)."""
    table = reference_key_table(net)
    param_names = {n for n, _ in net.named_parameters()}
    own = net.state_dict()
    out = {}
    for ours, theirs in table.items():
        if theirs is None or (parameters_only and ours not in param_names):
            continue
        if ours not in our_state:
            raise ReferenceFormatError(f"our state dict lacks {ours!r}")
        if our_state[ours].shape != own[ours].shape:
            raise ReferenceFormatError(f"{ours} has shape {tuple(our_state[ours].shape)}, not {tuple(own[ours].shape)}")
        out[theirs] = our_state[ours].detach().clone()
    extra = [k for k in our_state if k not in table]
    if extra:
        raise ReferenceFormatError(f"keys not of {type(net).__name__}: {_describe(extra)}")
    return out


@dataclass
class ReferenceStates:
    """The items of a reference checkpoint list (``module.`` stripped from ``model``)."""

    family: str  # "ncsn" (2 items) or "ncsnv2" (4 or 5 items)
    model: dict
    optimizer: dict
    epoch: int | None = None
    step: int | None = None
    ema: dict | None = None


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_states(obj) -> ReferenceStates:
    """Recognize a loaded reference checkpoint: the list of NCSN (2 items) or NCSNv2 (4 or 5)."""
    if not isinstance(obj, (list, tuple)):
        raise ReferenceFormatError(
            f"not a checkpoint of the reference code: a {type(obj).__name__}, not the list "
            "[model, optimizer] (NCSN) or [model, optimizer, epoch, step(, ema)] (NCSNv2)"
        )
    n = len(obj)
    if n not in (2, 4, 5):
        raise ReferenceFormatError(
            f"not a checkpoint of the reference code: a list of {n} items, not 2 (NCSN) or 4-5 (NCSNv2)"
        )
    if not _is_state_dict(obj[0]):
        raise ReferenceFormatError("not a checkpoint of the reference code: item 0 is not a model state_dict")
    if not isinstance(obj[1], dict) or "param_groups" not in obj[1]:
        raise ReferenceFormatError("not a checkpoint of the reference code: item 1 is not an optimizer state_dict")
    model = strip_prefix(obj[0])
    if n == 2:
        return ReferenceStates("ncsn", model, obj[1])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in obj[2:4]):
        raise ReferenceFormatError("not a checkpoint of the reference code: items 2, 3 (epoch, step) are not integers")
    ema = None
    if n == 5:
        if not _is_state_dict(obj[4]):
            raise ReferenceFormatError("not a checkpoint of the reference code: item 4 is not an EMA shadow dict")
        ema = dict(obj[4])
        if any(k.startswith(DP_PREFIX) for k in ema):
            raise ReferenceFormatError("the EMA shadow's keys carry 'module.': not the reference layout")
    return ReferenceStates("ncsnv2", model, obj[1], int(obj[2]), int(obj[3]), ema)


def write_states(states: ReferenceStates) -> list:
    """The list the reference code ``torch.load``s (model keys with ``module.``)."""
    model = {DP_PREFIX + k: v for k, v in states.model.items()}
    if states.family == "ncsn":
        return [model, states.optimizer]
    out = [model, states.optimizer, int(states.epoch or 0), int(states.step or 0)]
    if states.ema is not None:
        out.append(dict(states.ema))
    return out


def fresh_adam_state(
    n_params: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool
) -> dict:
    """An Adam state_dict with no moments, for the reference code's ``optimizer.load_state_dict``
    (a resumed run there restarts Adam's moment estimates)."""
    group = {
        "lr": lr,
        "betas": (beta1, beta2),
        "eps": eps,
        "weight_decay": weight_decay,
        "amsgrad": amsgrad,
        "params": list(range(n_params)),
    }
    return {"state": {}, "param_groups": [group]}
