"""Convert the authors' NCSN / NCSNv2 checkpoints into checkpoints of this repository, and back.

    python -m ncsn.workflow.convert REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]
        e.g. python -m ncsn.workflow.convert exp/logs/cifar10/checkpoint_300000.pth configs/cifar10.yml \
             ncsnv2_cifar10.ckpt
        OUT.ckpt holds the weights (the EMA copy too, when the file has one) and a full training config
        of this repository, so every later command needs only ``ckpt_path=OUT.ckpt``. The key=value
        arguments override that config (Hydra syntax), e.g. fid.stats_path=... or paths.data_dir=...

    python -m ncsn.workflow.convert --to-reference OURS.ckpt OUT.pth [OUT.yml]
        a checkpoint of this repository (NCSN or NCSNv2 network) -> the list the original code
        torch.loads, and the .yml to run it with (default: OUT.pth with the suffix .yml).

The parameter-name mapping is documented in ``ncsn.nets.reference``. Exit status: 0 done,
2 a bad argument or file, or an output file that cannot be written (read-only or full: checked
before any work, and nothing is left half-written), one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ..core.checks import cannot_write, unwritable
from .config import ConfigError


def _to_ours(ref_ckpt: str, ref_yml: str, out: str, overrides: list[str]) -> str:
    from .reference import describe, reference_to_checkpoint

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is invalid: must be key=value")
    out_path = Path(out)
    _check_writable({"OUT.ckpt": out_path})
    ckpt = reference_to_checkpoint(ref_ckpt, ref_yml, overrides=overrides)
    _write_all({out_path: lambda p: torch.save(ckpt, p)})
    lines = [f"wrote {out_path}: {describe(ckpt)}"]
    lines += [f"note: {n}" for n in ckpt["reference"]["notes"]]
    lines.append(f"sample with: python sample.py ckpt_path={out_path}")
    return "\n".join(lines)


def _to_reference(ours: str, out: str, out_yml: str | None) -> str:
    from .checkpoints import load_checkpoint
    from .reference import checkpoint_to_reference, reference_yml_text

    out_path = Path(out)
    yml_path = Path(out_yml) if out_yml else out_path.with_suffix(".yml")
    _check_writable({"OUT.pth": out_path, "OUT.yml": yml_path})
    states, yml = checkpoint_to_reference(load_checkpoint(ours), ours)
    family = "ncsnv2" if len(states) > 2 else "ncsn"
    text = reference_yml_text(yml, family)
    _write_all({out_path: lambda p: torch.save(states, p), yml_path: lambda p: p.write_text(text)})
    if family == "ncsn":
        where = (
            f"ermongroup/ncsn: copy {out_path.name} to run/logs/<doc>/checkpoint.pth and {yml_path.name} to "
            "run/logs/<doc>/config.yml, then python main.py --runner AnnealRunner --test --doc <doc> -o samples"
        )
    else:
        where = (
            f"ermongroup/ncsnv2: copy {out_path.name} to exp/logs/<doc>/checkpoint_{states[3]}.pth and "
            f"{yml_path.name} to configs/, then python main.py --sample --config {yml_path.name} --doc <doc> -i samples"
        )
    return f"wrote {out_path} ({len(states)} items) and {yml_path}\n{where}"


def _check_writable(outputs: dict) -> None:
    """Before any work: every output file's directory can be written (not read-only, not full)."""
    for key, path in outputs.items():
        problem = unwritable(path, key, file=True)
        if problem:
            raise ConfigError(problem)


def _write_all(writers: dict) -> None:
    """{path: write(tmp_path)}: every file written to a temporary name beside it, then all moved
    into place; a write that fails (a full disk) leaves none of them and raises ConfigError."""
    tmps = {path: path.with_name(f".{path.name}.tmp{os.getpid()}") for path in writers}
    try:
        for path, write in writers.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmps[path])
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(cannot_write(path, "output", e, path.parent)) from None
    except RuntimeError:  # torch.save's zip writer reports a full disk as "unexpected pos ..."
        problem = unwritable(path, "output", file=True)  # asked while its partial file still fills the disk
        if problem:
            raise ConfigError(problem) from None
        raise
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ncsn.workflow.convert",
        description="Official NCSN/NCSNv2 checkpoints <-> checkpoints of this repository.",
    )
    parser.add_argument("--to-reference", action="store_true", help="this repository's .ckpt -> the reference's .pth")
    parser.add_argument("paths", nargs="+", help="REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]")
    args = parser.parse_args(argv)
    try:
        if args.to_reference:
            if len(args.paths) not in (2, 3):
                raise ConfigError("--to-reference takes OURS.ckpt OUT.pth [OUT.yml]")
            message = _to_reference(args.paths[0], args.paths[1], args.paths[2] if len(args.paths) == 3 else None)
        else:
            if len(args.paths) < 3:
                raise ConfigError(
                    "usage: python -m ncsn.workflow.convert REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]"
                )
            message = _to_ours(args.paths[0], args.paths[1], args.paths[2], list(args.paths[3:]))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
