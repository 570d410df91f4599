"""Fast tests for plausible one-line bugs that the rest of the suite let through (issue 22).

Each test's docstring names the bug it guards against. Floats are compared with stated
tolerances, or against a second computation in this process, never against recorded values.
"""

import errno
import fcntl
import json
import math
import os
import socket
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ncsn.compare import compare
from ncsn.core.loss_by_sigma import FILENAME, last_loss_by_sigma, write_loss_by_sigma
from ncsn.nets.mlp import ConditionalMLP
from ncsn.sampling import CAS, ODE, PC, Annealed, Euler, Langevin, Sampler, noise_grid, predictor_corrector
from ncsn.sampling.seeds import SampleNoise
from ncsn.training.optimizer import Adam
from ncsn.training.resume import PROGRESS_KEY, rebuild_loop_state
from ncsn.training.score_model import ScoreModel
from ncsn.workflow.build import build_net, build_sigmas
from ncsn.workflow.config import ConfigError
from ncsn.workflow.runlock import LOCK_NAME, RunLock
from ncsn.workflow.sample import load_run

L_LEVELS = 10
SIGMAS = torch.tensor([math.exp(math.log(1.0) + i / 9 * (math.log(0.01) - math.log(1.0))) for i in range(10)])
SIGMA_MIN = float(SIGMAS[-1])
SHAPE = (1, 4, 4)


# -- samplers: the final denoising step ---------------------------------------------------------
class Score:
    """A score function s(x, cond) for level indices (long) or sigmas (floating, ``continuous``):
    ``(mu - x) / sigma^2`` (the exact score of a point mass at mu), plus ``bend * sin(3 x) / sigma``
    (a nonlinear part, so the denoising step is not the identity of a formula)."""

    def __init__(self, mu: float, bend: float, continuous: bool):
        self.mu, self.bend, self.continuous = mu, bend, continuous

    def sigma_of(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sig = SIGMAS.to(x.device)[cond] if not torch.is_floating_point(cond) else cond
        return sig.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def __call__(self, x, cond):
        sig = self.sigma_of(cond, x)
        return (self.mu - x) / sig**2 + self.bend * torch.sin(3.0 * x) / sig


# (kind, sigma-continuous network, the kind object); cas: eta 0.8, valid on both grids
CASES = [
    ("annealed", False, Annealed(step_lr=2e-5, n_steps_each=2)),
    ("langevin", False, Langevin(step_lr=2e-5, n_steps=20, frame_every=2)),
    ("cas", False, CAS(eta=0.8)),
    ("cas", True, CAS(eta=0.8, num_steps=7)),
    ("pc", False, PC(n_corrector=1)),
    ("pc", True, PC(n_corrector=1, num_steps=7)),
    ("ode", False, ODE()),
    ("ode", True, ODE(num_steps=7, rho=7.0)),
    ("euler", False, Euler()),
    ("euler", True, Euler(num_steps=7, rho=7.0)),
]
IDS = [f"{k}-{'sigma' if c else 'levels'}" for k, c, _ in CASES]


def _draw(kind, continuous, settings, score):
    sampler = Sampler(settings, denoise=True, n_samples=6, batch_size=6)
    return sampler.draw(score, SIGMAS, SHAPE, seed=3, progress=False)


@pytest.mark.parametrize("kind, continuous, settings", CASES, ids=IDS)
def test_denoise_step_is_tweedie_at_sigma_min(kind, continuous, settings):
    """Guards against a wrong final denoising step: ode's with sigma instead of sigma^2, pc's
    returning x instead of the last predictor mean, cas's ignored (or annealed's dropped). The
    result must be x + sigma_min^2 s(x, sigma_min) (NCSNv2's denoising, Tweedie's formula) for the
    iterate x of the last network evaluation, which is ``before_denoise`` for annealed, langevin
    (which ignored denoise=true before), ode and euler (cas
    and pc report their last plain step there, computed from the same evaluation)."""
    base, calls = Score(mu=0.3, bend=0.05, continuous=continuous), []

    def score(x, cond):
        calls.append((x.clone(), cond.clone()))
        return base(x, cond)

    score.continuous = continuous
    res = _draw(kind, continuous, settings, score)
    x, cond = calls[-1]
    assert (cond == (SIGMA_MIN if continuous else L_LEVELS - 1)).all()
    torch.testing.assert_close(res.samples, x + SIGMA_MIN**2 * base(x, cond), rtol=1e-5, atol=1e-6)
    if kind in ("annealed", "langevin", "ode", "euler"):
        torch.testing.assert_close(res.before_denoise, x, rtol=0, atol=0)
    assert (res.samples - res.before_denoise).abs().max() > 1e-4  # the step did move the samples


@pytest.mark.parametrize("kind, continuous, settings", CASES, ids=IDS)
def test_denoise_recovers_a_point_mass_with_the_exact_score(kind, continuous, settings):
    """Guards against the same bugs from the data's side: for data = a point mass at mu and its
    exact score (mu - x) / sigma^2, the denoised samples are mu (to 1e-5), whatever the iterate."""
    res = _draw(kind, continuous, settings, Score(mu=0.3, bend=0.0, continuous=continuous))
    assert (res.before_denoise - 0.3).abs().max() > 1e-3  # not there before the step
    assert (res.samples - 0.3).abs().max() < 1e-5


# -- predictor-corrector: the corrector's step size ---------------------------------------------
class RecordingNoise(SampleNoise):
    """Per-sample noise that keeps every draw it hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drawn = []

    def normal(self, shape):
        z = super().normal(shape)
        self.drawn.append(z.clone())
        return z


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.reshape(len(t), -1), dim=1).view(-1, *([1] * (t.dim() - 1)))


def test_pc_corrector_and_predictor_steps_follow_their_formulas():
    """Guards against a wrong corrector step size (e.g. the snr rule without its factor 2): each
    corrector step is x + eps s + sqrt(2 eps) z with eps = 2 (snr ||z|| / ||s||)^2 per sample
    (Song et al. 2021, Alg. 5 with alpha = 1 for the VE SDE), each predictor step
    x + (sigma_i^2 - sigma_{i+1}^2) s + sqrt(sigma_i^2 - sigma_{i+1}^2) z, checked on every call
    with the noise source's recorded draws and the score's recorded inputs."""
    inputs = []
    base = Score(mu=0.3, bend=0.05, continuous=False)

    def score(x, cond):
        inputs.append((x.clone(), cond.clone()))
        return base(x, cond)

    snr, n_corr, n = 0.16, 2, 5
    grid = noise_grid(SIGMAS, None, None, False)
    noise = RecordingNoise(7, torch.arange(n))
    x0 = 0.5 + noise.normal(SHAPE)
    noise.drawn.clear()
    res = predictor_corrector(score, x0, grid, snr, n_corr, noise, denoise=False, progress=False)
    assert len(inputs) == len(noise.drawn) == L_LEVELS * (1 + n_corr)
    sig = [*map(float, SIGMAS), 0.0]
    outputs = [x for x, _ in inputs[1:]] + [res.samples]
    for j, ((x, cond), z, got) in enumerate(zip(inputs, noise.drawn, outputs)):
        level, corrector = divmod(j, 1 + n_corr)
        assert (cond == level).all()
        s = base(x, cond)
        if corrector < n_corr:
            eps = 2.0 * (snr * _per_sample_norm(z) / _per_sample_norm(s)) ** 2
            expected = x + eps * s + torch.sqrt(2.0 * eps) * z
        else:
            d = sig[level] ** 2 - sig[level + 1] ** 2
            expected = x + d * s + math.sqrt(d) * z
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=f"call {j} (level {level})")


# -- grids: level subsets, Karras and geometric spacing -----------------------------------------
@pytest.mark.parametrize("n_levels", [10, 232])
@pytest.mark.parametrize("num_steps", [3, 5, 6, 7])
def test_level_subsets_round_to_the_nearest_level(n_levels, num_steps):
    """Guards against the level subset of a level-conditioned network taken with floor (or int)
    instead of round: level k is round(k (L-1) / (n-1)), the training level nearest to the even
    spacing (so within half a level of it), endpoints included, no level twice."""
    sig = torch.linspace(1.0, 0.01, n_levels)
    grid = noise_grid(sig, num_steps, None, False)
    ideal = [k * (n_levels - 1) / (num_steps - 1) for k in range(num_steps)]
    assert grid.levels == [round(t) for t in ideal]
    assert all(abs(lev - t) <= 0.5 for lev, t in zip(grid.levels, ideal))
    assert grid.levels[0] == 0 and grid.levels[-1] == n_levels - 1 and len(set(grid.levels)) == num_steps
    assert grid.sigmas == [float(sig[i]) for i in grid.levels]


def test_level_subset_of_ten_levels_by_hand():
    """Guards against floor instead of round, with values worked out by hand (no tie at .5):
    5 of 10 levels sit at 0, 2.25, 4.5, 6.75, 9 -> 0, 2, 4 (Python rounds the tie to even), 7, 9."""
    assert noise_grid(SIGMAS, 5, None, False).levels == [0, 2, 4, 7, 9]
    assert noise_grid(SIGMAS, 6, None, False).levels == [0, 2, 4, 5, 7, 9]  # 1.8 3.6 5.4 7.2


@pytest.mark.parametrize("rho", [3.0, 7.0])
@pytest.mark.parametrize("num_steps", [5, 18])
def test_karras_grid_interior_points_follow_eq_5(rho, num_steps):
    """Guards against a wrong Karras grid (e.g. rho inverted): every point, interior ones included,
    is (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho (Karras et al. 2022, Eq. 5), to a
    relative 1e-12 (Python floats), and for rho > 1 the steps shrink towards sigma_min."""
    smax, smin = float(SIGMAS[0]), SIGMA_MIN
    got = noise_grid(SIGMAS, num_steps, rho, True).sigmas
    lo, hi = smin ** (1 / rho), smax ** (1 / rho)
    want = [(hi + i / (num_steps - 1) * (lo - hi)) ** rho for i in range(num_steps)]
    assert got == pytest.approx(want, rel=1e-12)
    steps = [a - b for a, b in zip(got[:-1], got[1:])]
    assert all(s > 0 for s in steps) and all(a > b for a, b in zip(steps[:-1], steps[1:]))


@pytest.mark.parametrize("num_steps", [3, 7, 40])
def test_geometric_grid_interior_points(num_steps):
    """Guards against a wrong geometric (rho=null) grid of a sigma-continuous network: point i is
    smax (smin / smax)^(i / (N-1)), to a relative 1e-12, so every ratio of neighbours is the same."""
    smax, smin = float(SIGMAS[0]), SIGMA_MIN
    got = noise_grid(SIGMAS, num_steps, None, True).sigmas
    want = [smax * (smin / smax) ** (i / (num_steps - 1)) for i in range(num_steps)]
    assert got == pytest.approx(want, rel=1e-12)
    ratio = (smin / smax) ** (1 / (num_steps - 1))
    assert [b / a for a, b in zip(got[:-1], got[1:])] == pytest.approx([ratio] * (num_steps - 1), rel=1e-12)


# -- compare and the per-sigma validation loss --------------------------------------------------
def test_compare_final_falls_back_to_the_last_evaluation(tmp_path):
    """Guards against compare's "final" value of a job without results.json (killed, unfinished)
    taken from the first evaluation in metrics.csv instead of the last; best is the minimum."""
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (job / "metrics.csv").write_text(
        "step,epoch,train/loss,val/loss\n10,0,,3.0\n20,0,0.5,\n30,1,,1.0\n40,1,,2.0\n50,2,0.4,\n"
    )
    c = compare(tmp_path / "sweep", metric="val/loss")
    (row,) = c.rows
    assert (row[c.best_col], row[c.step_col], row[c.final_col]) == (1.0, 30, 2.0)
    (job / "results.json").write_text(json.dumps({"status": "finished", "val/loss": 1.5}))
    (row,) = compare(tmp_path / "sweep", metric="val/loss").rows
    assert row[c.final_col] == 1.5  # results.json, when present, is the final value


def test_last_loss_by_sigma_is_the_last_validation(tmp_path):
    """Guards against ``last_loss_by_sigma`` returning the first validation's rows (or another
    one) instead of the last, in level order."""
    rows = [
        {"step": step, "level": lev, "sigma": s, "loss": loss + lev, "n_images": 8}
        for step, loss in ((100, 5.0), (200, 3.0), (300, 1.0))
        for lev, s in reversed(list(enumerate((1.0, 0.1, 0.01))))
    ]
    write_loss_by_sigma(tmp_path / FILENAME, rows)
    last = last_loss_by_sigma(tmp_path)
    assert [(r["step"], r["level"], r["sigma"], r["loss"]) for r in last] == [
        (300, 0, 1.0, 1.0),
        (300, 1, 0.1, 2.0),
        (300, 2, 0.01, 3.0),
    ]
    assert last_loss_by_sigma(tmp_path / "nothing") == []


# -- the run lock where the filesystem has no flock ---------------------------------------------
@pytest.fixture
def no_flock(monkeypatch):
    """A filesystem without flock (some network filesystems): flock fails with ENOLCK."""

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


def _write_holder(run_dir, pid, host):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": time.time()}) + "\n")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: the pid names no process now
    return p.pid


def test_lock_without_flock_takes_over_a_dead_pid(tmp_path, no_flock):
    """Guards against the no-flock path counting a dead holder as alive (a run killed with SIGKILL
    would block its directory for good): a lock naming a dead pid on this host is taken over."""
    pid = _dead_pid()
    _write_holder(tmp_path, pid, socket.gethostname())
    lock = RunLock(tmp_path).acquire()
    try:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_without_flock_refuses_a_live_pid_and_another_host(tmp_path, no_flock):
    """Guards against the no-flock path letting a second writer in: a live pid on this host is
    refused, naming it; a lock recorded on another host is refused whatever its pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_holder(tmp_path, holder.pid, socket.gethostname())
        with pytest.raises(ConfigError, match=rf"in use by pid {holder.pid} on host "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    _write_holder(tmp_path, _dead_pid(), "another-host.invalid")
    with pytest.raises(ConfigError, match=r"on host another-host\.invalid"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "another-host.invalid"  # left as it was


# -- sample.py: the EMA weights -----------------------------------------------------------------
def test_sample_loads_the_ema_weights_not_the_raw_ones(tmp_path):
    """Guards against sample.py (``load_run``) loading the raw training weights instead of the EMA
    copy: a checkpoint whose EMA and raw weights differ; the loaded network holds the EMA ones."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=toy_gmm", f"paths.run_dir={tmp_path / 'run'}"])
    net = build_net(cfg.model, build_sigmas(cfg))
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    ema = {k: v + 0.25 if k != "sigmas" else v.clone() for k, v in raw.items()}
    state = {**{f"net.{k}": v for k, v in raw.items()}, **{f"ema.module.{k}": v for k, v in ema.items()}}
    state["ema.n_averaged"] = torch.tensor(3)
    path = tmp_path / "ema.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, path)
    _, loaded, _ = load_run(str(path))
    got = loaded.state_dict()
    assert got.keys() == ema.keys()
    assert all(torch.equal(got[k], ema[k]) for k in got)  # the tensors saved above, loaded back
    assert any(not torch.equal(got[k], raw[k]) for k in got)


# -- the progress record of a mid-epoch checkpoint ----------------------------------------------
def test_progress_record_of_mid_epoch_checkpoints(tmp_path):
    """Guards against a wrong progress record (``training/resume.py``), e.g. ``epochs_started``
    one short, which makes a resumed run's loop state differ from a straight run's: a real fit of
    8 steps, 4 batches per epoch, a checkpoint after every step; each records its global step,
    epoch, batches trained in the epoch and epochs started (the epoch in progress + 1), equal to
    what the straight run's own loop state says, and ``rebuild_loop_state`` writes that back."""
    torch.manual_seed(0)
    net = ConditionalMLP(SIGMAS, dim=2, hidden=8, num_layers=1)
    model = ScoreModel(net, optimizer=Adam(lr=1e-3), ema_decay=0.9)
    data = torch.utils.data.TensorDataset(torch.randn(16, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=1, save_top_k=-1, save_last=False
    )
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[ckpt_cb],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    for step in range(1, 9):
        ckpt = torch.load(tmp_path / f"step={step}.ckpt", weights_only=True)
        p = ckpt[PROGRESS_KEY]
        epoch, in_epoch = divmod(step - 1, 4)
        assert (p["global_step"], p["epoch"], p["batches_in_epoch"]) == (step, epoch, in_epoch + 1), p
        assert p["epochs_started"] == epoch + 1, p
        assert (p["in_batch"], p["epoch_closed"], p["last_batch"]) == (True, False, in_epoch == 3), p
        straight = ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]
        assert straight["started"] == p["epochs_started"]  # this run was not resumed: Lightning agrees
        for part in ("total", "current"):
            ckpt["loops"]["fit_loop"]["epoch_progress"][part]["started"] = 0  # as a resumed process writes
        rebuild_loop_state(ckpt)
        for part in ("total", "current"):
            assert ckpt["loops"]["fit_loop"]["epoch_progress"][part]["started"] == epoch + 1
