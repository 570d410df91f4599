"""Convert the authors' NCSN / NCSNv2 checkpoints into checkpoints of this repository, and back.

    python -m ncsn.convert REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]
        e.g. python -m ncsn.convert exp/logs/cifar10/checkpoint_300000.pth configs/cifar10.yml ncsnv2_cifar10.ckpt
        OUT.ckpt holds the weights (the EMA copy too, when the file has one) and a full training config
        of this repository, so every later command needs only ``ckpt_path=OUT.ckpt``. The key=value
        arguments override that config (Hydra syntax), e.g. fid.stats_path=... or paths.data_dir=...

    python -m ncsn.convert --to-reference OURS.ckpt OUT.pth [OUT.yml]
        a checkpoint of this repository (NCSN or NCSNv2 network) -> the list the original code
        torch.loads, and the .yml to run it with (default: OUT.pth with the suffix .yml).

The parameter-name mapping is documented in ``ncsn.nets.reference``. Exit status: 0 done,
2 a bad argument or file (one line ``error: ...`` on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .workflow.config import ConfigError


def _to_ours(ref_ckpt: str, ref_yml: str, out: str, overrides: list[str]) -> str:
    from .workflow.reference import describe, reference_to_checkpoint

    bad = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is invalid: must be key=value")
    ckpt = reference_to_checkpoint(ref_ckpt, ref_yml, overrides=overrides)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out_path)
    lines = [f"wrote {out_path}: {describe(ckpt)}"]
    lines += [f"note: {n}" for n in ckpt["reference"]["notes"]]
    lines.append(f"sample with: python sample.py ckpt_path={out_path}")
    return "\n".join(lines)


def _to_reference(ours: str, out: str, out_yml: str | None) -> str:
    from .workflow.checkpoints import load_checkpoint
    from .workflow.reference import checkpoint_to_reference, reference_yml_text

    states, yml = checkpoint_to_reference(load_checkpoint(ours), ours)
    family = "ncsnv2" if len(states) > 2 else "ncsn"
    out_path = Path(out)
    yml_path = Path(out_yml) if out_yml else out_path.with_suffix(".yml")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(states, out_path)
    yml_path.write_text(reference_yml_text(yml, family))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ncsn.convert",
        description="Official NCSN/NCSNv2 checkpoints <-> checkpoints of this repository.",
    )
    parser.add_argument("--to-reference", action="store_true", help="this repository's .ckpt -> the reference's .pth")
    parser.add_argument("paths", nargs="+", help="REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]")
    args = parser.parse_args(argv)
    try:
        if args.to_reference:
            if len(args.paths) not in (2, 3):
                raise ConfigError("--to-reference takes OURS.ckpt OUT.pth [OUT.yml]")
            message = _to_reference(*args.paths[:2], args.paths[2] if len(args.paths) == 3 else None)
        else:
            if len(args.paths) < 3:
                raise ConfigError("usage: python -m ncsn.convert REFERENCE_CKPT REFERENCE_YML OUT.ckpt [key=value ...]")
            message = _to_ours(*args.paths[:3], list(args.paths[3:]))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
