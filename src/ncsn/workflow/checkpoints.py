"""Checkpoint files: safe (weights-only) loading, resume resolution, architecture checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .config import ConfigError

#: What a file written by torch.save starts with: a zip archive, or (the legacy format) a pickle.
_CHECKPOINT_HEADS = (b"PK\x03\x04", b"\x80")
#: What torch's weights-only unpickler says of a pickle that would import or call something.
_CODE_MARKERS = ("GLOBAL ", "unrecognized function", "Can only create new object", "must be imported to load")


def load_weights_only(path: str | Path, key: str = "ckpt_path"):
    """torch.load with weights_only=True: a file holding arbitrary pickled objects is refused
    (never executed). Every failure is a ConfigError naming ``key`` and the file: "not a
    checkpoint" for bytes torch.save never writes (random or text files), "refused" for a pickle
    that would run code, "unreadable or truncated" for a damaged checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ConfigError(f"{key}={str(path)!r}: cannot be read ({e.strerror or e})") from None
    not_checkpoint = f"{key}={str(path)!r}: not a checkpoint (neither a zip archive nor a pickle as torch.save writes"
    if not head.startswith(_CHECKPOINT_HEADS):
        raise ConfigError(f"{not_checkpoint}; it starts with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        code = [ln for ln in lines if any(m in ln for m in _CODE_MARKERS)]
        if code:
            raise ConfigError(
                f"{key}={str(path)!r}: refused, not a plain weights-only checkpoint "
                f"(it holds objects that would run code when loaded): {code[0]}"
            ) from None
        detail = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file"))), "")
        raise ConfigError(f"{not_checkpoint}: {detail or 'unpickling failed'})") from None
    except Exception as e:  # noqa: BLE001 - a damaged zip or pickle: truncated, bad CRC, unreadable
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise ConfigError(
            f"{key}={str(path)!r}: unreadable or truncated checkpoint ({type(e).__name__}: {first})"
        ) from None


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of this project, loaded weights-only (``load_weights_only``)."""
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        hint = (
            " (an official NCSN/NCSNv2 checkpoint? add reference=ncsn|ncsnv2 reference_config=<its .yml>)"
            if isinstance(ckpt, (list, tuple))
            else ""
        )
        raise ConfigError(f"ckpt_path={str(path)!r}: not a Lightning checkpoint of this project (no state_dict){hint}")
    return ckpt


def net_state_dict(ckpt: dict, prefer_ema: bool = True) -> dict:
    """The network's weights from a ScoreModel checkpoint: the EMA copy when present."""
    sd = ckpt["state_dict"]
    ema = {k[len("ema.module.") :]: v for k, v in sd.items() if k.startswith("ema.module.")}
    if prefer_ema and ema:
        return ema
    return {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}


def check_architecture(net: torch.nn.Module, weights: dict, path) -> None:
    """Refuse weights that do not fit ``net``, listing the mismatched keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shape = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})")
        raise ConfigError(f"ckpt_path={str(path)!r}: checkpoint is from a different architecture; " + "; ".join(parts))


def resolve_resume(ckpt_path: str | None, run_dir: Path, net: torch.nn.Module) -> str | None:
    """null: the run dir's checkpoints/last.ckpt if it exists (resume), else a fresh start;
    'last': that file, which must exist; else a path. The file is loaded weights-only and its
    network weights must fit ``net``."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        # Lightning's SLURM auto-requeue writes hpc_ckpt_N.ckpt into the run dir: take the newest.
        candidates = [p for p in [last, *run_dir.glob("hpc_ckpt_*.ckpt")] if p.exists()]
        if not candidates:
            return None
        path = max(candidates, key=lambda p: p.stat().st_mtime)
    elif ckpt_path == "last":
        if not last.exists():
            raise ConfigError(f"ckpt_path='last': no {last} to resume from")
        path = last
    else:
        path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    check_architecture(net, net_state_dict(ckpt, prefer_ema=False), path)
    return str(path)
