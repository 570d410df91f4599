"""Soak: a 3-job Hydra multirun with DDP on 2 CPU processes, interrupted again and again.

The same ``train.py -m`` command (the tiny digits default: small net, frequent checkpoints,
validation, samples and FID) first runs straight to the end in one sweep directory (the
reference). Then, in a second sweep directory, it is started, and at a random moment (uniform in
[0, ``--span``] s, by default the straight run's time; a fixed RNG seed) receives SIGKILL (to its
whole process group, as the OOM killer or a node failure would), SIGTERM or SIGINT, each either
to the launching process (``kill PID``) or to the whole group (SLURM's preemption, Ctrl-C in a
terminal); the same command is started again after each, with the
same ``hydra.sweep.dir``. Once a sweep has completed, the next signals go to a fresh sweep
directory (a new round), so signals keep landing in running jobs rather than after the end.
After ``--signals`` signals the unfinished round runs to completion. Checks, per job of every
round:

* weights: ``checkpoints/last.ckpt`` (network, EMA, optimizer state) equals the straight run's
  (max abs diff, tolerance ``--atol``: 0 by default);
* metrics: metrics.csv rows unique and in step order, and the same rows (step, keys, values but
  timings) as the straight run;
* W&B: every offline run of the job carries the job's id (``logger.wandb.id`` +
  ``resume=allow``: one W&B run after ``wandb sync``; the ids differ between jobs), and the
  straight run's W&B history holds train/loss at every step (the soaked one is only counted: a
  SIGKILL loses what W&B had buffered);
* results.json: status finished at ``trainer.max_steps``; no temporary files left;
* each signal: SIGTERM exits 0, SIGINT 130 (or dies of SIGINT: a shell's 130 too), both within
  ``--stop-s`` seconds and without training more than 2 steps past the signal; no process of the
  command left running.

Prints one line per signal, a summary table, and exits 1 on any violation (0 otherwise).

    python bench/soak.py                  # 50 signals (docs/runs.md: its result)
    python bench/soak.py --quick          # 6 signals, fewer steps (tests/test_soak.py)
    python bench/soak.py --strategy ddp_fork   # the forking launcher (docs/runs.md: its limits)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from soak_checks import (  # noqa: E402
    SEEDS,
    check_metrics,
    check_results,
    check_temp_files,
    check_wandb_history,
    check_wandb_id,
    check_weights,
    job_dir,
    read_rows,
    sweep_complete,
    wandb_missing_steps,
)

#: (signal, receiver): "group" = every process of the command (the OOM killer or a node failure for
#: SIGKILL, SLURM's preemption signalling every process of a job step, Ctrl-C in a terminal),
#: "main" = the launching process only (``kill PID``, ``kill -INT PID``)
KINDS = (("SIGKILL", "group"), ("SIGTERM", "main"), ("SIGTERM", "group"), ("SIGINT", "main"), ("SIGINT", "group"))
EXPECTED_RC = {"SIGTERM": 0, "SIGINT": 130}


def command(sweep_dir: Path, max_steps: int, strategy: str = "ddp") -> list[str]:
    """The soaked command: tiny digits runs (4 batches of 32 per epoch), DDP over 2 CPU processes."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"seed={','.join(map(str, SEEDS))}",
        f"trainer.strategy={strategy}",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "model.ngf=8",
        "model.num_blocks=1",
        "data.batch_size=32",
        "data.num_val=32",
        f"trainer.max_steps={max_steps}",
        "trainer.limit_train_batches=4",
        "trainer.check_val_every_n_epoch=2",
        "callbacks.samples.every_n_epochs=4",
        "callbacks.checkpoint.every_n_train_steps=3",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "sampler.n_samples=8",
        "experiment=digits_ncsn",
        "sampler.n_steps_each=1",
        "eval.n_samples=16",
        "logger.wandb.mode=offline",
        "logger.wandb.id=soak-seed${seed}",
        "logger.wandb.resume=allow",
        f"hydra.sweep.dir={sweep_dir}",
    ]


#: the package of this tree first (a copy of the repository soaks its own code)
_PATH = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_SILENT="true", PYTHONPATH=_PATH)


def group_alive(pgid: int) -> list[str]:
    """Processes (not zombies) of process group ``pgid``: 'pid cmdline' each."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                alive.append(f"{proc.name} {cmd[:80]}")
        except (OSError, IndexError, ValueError):
            continue
    return alive


def reap_group(pgid: int, grace_s: float = 15.0) -> list[str]:
    """Wait up to ``grace_s`` for the group to be empty; return what was still alive (then killed)."""
    deadline = time.time() + grace_s
    while (alive := group_alive(pgid)) and time.time() < deadline:
        time.sleep(0.5)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def run_once(
    sweep: Path, max_steps: int, log: Path, delay: float | None, kind: tuple | None, stop_s: float, strategy: str
) -> dict:
    """Start the command; after ``delay`` s send ``kind`` ((signal, receiver); None: let it finish).
    Returns what happened."""
    sig, to = kind or (None, None)
    start = time.time()
    with open(log, "a") as out:
        out.write(f"\n==== {time.strftime('%H:%M:%S')} start; then {sig} to {to} after {delay} s\n")
        out.flush()
        proc = subprocess.Popen(
            command(sweep, max_steps, strategy),
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rec = {"sig": sig, "to": to, "delay": delay, "rc": None, "stop_s": None, "left": [], "ended_before": False}
    rec.update(job=None, step=None, line="", ckpt_step=None)
    try:
        if sig is None:
            rec["rc"] = proc.wait(timeout=3600)
        else:
            try:
                rec["rc"] = proc.wait(timeout=delay)
                rec["ended_before"] = True  # the sweep was done before the signal's moment
            except subprocess.TimeoutExpired:
                rec["job"], rec["step"], rec["line"] = moment(sweep, log)
                sent = time.time()
                if to == "group":
                    os.killpg(proc.pid, getattr(signal, sig))
                else:
                    os.kill(proc.pid, getattr(signal, sig))
                try:
                    rec["rc"] = proc.wait(timeout=stop_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rec["rc"] = f"hung{proc.wait()}"
                rec["stop_s"] = time.time() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rec["left"] = reap_group(proc.pid)
    last = job_dir(sweep, rec["job"]) / "checkpoints" / "last.ckpt" if rec["job"] is not None else None
    if last is not None and last.is_file():
        rec["ckpt_step"] = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    rec["wall_s"] = time.time() - start
    return rec


def moment(sweep: Path, log: Path) -> tuple[int | None, int | None, str]:
    """Where the sweep stands: (the seed of the job being run, its last step in metrics.csv, the
    log's last line)."""
    lines = [ln for ln in log.read_text(errors="replace").split("\n==== ")[-1].splitlines() if ln.strip()]
    launched = [re.search(r"\bseed=(\d+)", ln) for ln in lines if "[HYDRA] \t#" in ln]
    seed = int(launched[-1].group(1)) if launched and launched[-1] else None
    steps = [r["step"] for r in read_rows(job_dir(sweep, seed) / "metrics.csv")] if seed is not None else []
    return seed, (steps[-1] if steps else None), (lines[-1].split("] - ")[-1][:60] if lines else "")


def check_signal(rec: dict, stop_s: float, exit_codes: bool = True) -> list[str]:
    """What went wrong with one run: processes left, a hang, training on past the signal, and
    (``exit_codes``) an exit status other than SIGTERM's 0 / SIGINT's 130."""
    problems = []
    if rec["left"]:
        problems.append(f"processes left running: {rec['left']}")
    if rec["ended_before"] or rec["sig"] is None:
        return problems + ([] if rec["rc"] == 0 else [f"exit {rec['rc']}"])
    if rec["sig"] == "SIGKILL":
        return problems
    want = EXPECTED_RC[rec["sig"]]
    died_of_sigint = rec["sig"] == "SIGINT" and rec["rc"] == -signal.SIGINT
    # after the sweep's last line the process is exiting (the interpreter's shutdown restores the
    # default handlers): dying of the signal then loses nothing; every record is checked below
    at_exit = rec["rc"] == -getattr(signal, rec["sig"]) and str(rec.get("line", "")).startswith("compare:")
    wrong_exit = isinstance(rec["rc"], int) and rec["rc"] != want and not died_of_sigint and not at_exit
    if wrong_exit and not exit_codes:
        print(f"    note: exit {rec['rc']} (expected {want}; not checked: --exit-codes report)")
    elif wrong_exit:
        problems.append(f"exit {rec['rc']} (expected {want})")  # killed by SIGINT: a shell's 130 too
    if isinstance(rec["rc"], str):
        problems.append(f"still running {stop_s:.0f} s after the signal (then killed)")
    if rec["step"] is not None and rec["ckpt_step"] is not None and rec["ckpt_step"] > rec["step"] + 2:
        problems.append(f"seed={rec['job']} trained on from step {rec['step']} to {rec['ckpt_step']} after the signal")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--signals", type=int, default=50, help="signals sent (default 50)")
    p.add_argument("--max-steps", type=int, default=48, help="trainer.max_steps of each job (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the signal schedule (kinds and moments)")
    p.add_argument("--span", type=float, default=None, help="moments in [0, span] s (default: the straight run's time)")
    p.add_argument("--atol", type=float, default=0.0, help="weights tolerance (default 0: exact)")
    p.add_argument("--stop-s", type=float, default=30.0, help="SIGTERM/SIGINT must end it within this (s)")
    p.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    p.add_argument("--strategy", choices=("ddp", "ddp_fork"), default="ddp", help="trainer.strategy (default ddp)")
    p.add_argument("--quick", action="store_true", help="6 signals, 12 steps per job (the test)")
    p.add_argument(
        "--exit-codes",
        choices=("check", "report"),
        default="check",
        help="check: a SIGTERM's exit status other than 0 (SIGINT's other than 130) is a violation; "
        "report: printed only (the known start-up deviations under DDP, docs/runs.md)",
    )
    args = p.parse_args(argv)
    # the commands must take SIGINT as a program started from a terminal does: a shell that starts
    # the soak in the background makes it ignore SIGINT, and its children would inherit that (a
    # signal with a handler here is reset to the default action in a child)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.quick:
        args.signals, args.max_steps = 6, 12
    out = args.out or Path(tempfile.mkdtemp(prefix="ncsn-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    straight, soaked, log = out / "straight", out / "soak", out / "soak.log"
    t0 = time.time()
    print(
        f"soak: {args.signals} signals, {len(SEEDS)} jobs x {args.max_steps} steps, {args.strategy} x 2 CPU, in {out}"
    )
    print("command:", " ".join(command(soaked, args.max_steps, args.strategy)[1:]))

    ref = run_once(straight, args.max_steps, out / "straight.log", None, None, args.stop_s, args.strategy)
    print(f"straight run: exit {ref['rc']} in {ref['wall_s']:.0f} s")
    if ref["rc"] != 0:
        print(f"soak: FAILED (the straight run itself failed: {out / 'straight.log'})")
        return 1
    span = args.span or ref["wall_s"]
    rng = random.Random(args.seed)
    records, violations, rounds = [], [], []
    soaked = out / "soak0"
    for i in range(args.signals):
        kind, delay = rng.choice(KINDS), round(rng.uniform(0.0, span), 1)
        rec = run_once(soaked, args.max_steps, log, delay, kind, args.stop_s, args.strategy)
        sig = f"{kind[0]}>{kind[1]}"
        problems = check_signal(rec, args.stop_s, args.exit_codes == "check")
        records.append(rec)
        stop = "-" if rec["stop_s"] is None else f"{rec['stop_s']:.1f}s"
        what = "sweep had ended" if rec["ended_before"] else f"seed={rec['job']} step {rec['step']}: {rec['line']}"
        print(f"{i + 1:3d} {sig:13s} at {delay:5.1f}s exit {str(rec['rc']):>4s} stop {stop:>6s}  {what}")
        violations += [f"signal {i + 1} ({sig} at {delay}s, {what}): {msg}" for msg in problems]
        for msg in problems:
            print(f"    VIOLATION: {msg}")
        if sweep_complete(soaked, args.max_steps):  # the next signals go to a fresh sweep (a new round)
            rounds.append(soaked)
            soaked = out / f"soak{len(rounds)}"
    if soaked.exists():  # the round the signals left unfinished: the same command completes it
        final = run_once(soaked, args.max_steps, log, None, None, args.stop_s, args.strategy)
        violations += [f"final run: {msg}" for msg in check_signal(final, args.stop_s)]
        print(f"final run: exit {final['rc']} in {final['wall_s']:.0f} s")
        rounds.append(soaked)

    checks = {
        "weights = straight": lambda n: check_weights(job_dir(soaked, n), job_dir(straight, n), args.atol),
        "metrics.csv": lambda n: check_metrics(job_dir(soaked, n), job_dir(straight, n)),
        "one W&B run": lambda n: check_wandb_id(job_dir(soaked, n), f"soak-seed{n}"),
        "W&B hist. straight": lambda n: check_wandb_history(job_dir(straight, n), args.max_steps),
        "results.json": lambda n: check_results(job_dir(soaked, n), args.max_steps),
        "no temp files": lambda n: check_temp_files(job_dir(soaked, n)),
    }
    ids = [(f"seed={seed}", seed) for seed in SEEDS]
    for soaked in rounds:
        print(f"\n{soaked.name + ': check':20s}" + "".join(f"{j:10s}" for j, _ in ids))
        for name, check in checks.items():
            cells = []
            for j, seed in ids:
                try:
                    problem = check(seed)
                except Exception as e:  # noqa: BLE001 - a missing or unreadable file is a violation too
                    problem = f"{type(e).__name__}: {e}"
                cells.append("ok" if problem is None else "FAIL")
                if problem:
                    violations.append(f"{soaked.name} {j} {name}: {problem}")
            print(f"{name:20s}" + "".join(f"{c:10s}" for c in cells))
        for j, seed in ids:  # a SIGKILL loses what W&B had not yet written (up to one 32 KiB block): not checked
            lost = wandb_missing_steps(job_dir(soaked, seed), args.max_steps)
            print(f"{j}: W&B history of {soaked.name} lacks train/loss at {len(lost)} of {args.max_steps} steps")
    landed = [(r["sig"], r["to"]) for r in records if not r["ended_before"]]
    counts = {f"{s}>{t}": landed.count((s, t)) for s, t in KINDS}
    late = sum(r["ended_before"] for r in records)
    print(
        f"signals: {counts}, {late} after the sweep had ended; {len(rounds)} sweeps (rounds); "
        f"wall time {time.time() - t0:.0f} s"
    )
    for v in violations:
        print("VIOLATION:", v)
    print("soak:", "FAILED" if violations else "passed")
    if args.out is None and not violations:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
