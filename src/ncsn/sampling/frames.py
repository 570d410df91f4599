"""What each frame of a sampling run shows (``keep_frames=True``): the labels of mode=progression."""

from __future__ import annotations

from .grid import NoiseGrid


def frame_labels(kind: str, grid: NoiseGrid, n_steps_each: int) -> list[str]:
    """One label per frame the kind keeps, naming the noise level of the state in that frame.

    annealed: the iterate after each level's steps (at sigma_i); langevin: every ``n_steps_each``
    steps, all at sigma_L (the smallest); cas / pc / ode: the state after each step, at the next
    grid sigma (pc's last step goes to 0; cas keeps one more frame: its last step's output)."""
    sig = [f"sigma\n{s:.3g}" for s in grid.sigmas]
    if kind == "annealed":
        return sig
    if kind == "langevin":
        return [f"sigma_L\nstep {(k + 1) * n_steps_each}" for k in range(len(sig))]
    if kind == "cas":
        return [*sig[1:], "last step"]
    if kind == "pc":
        return [*sig[1:], "sigma\n0"]
    if kind == "ode":
        return sig[1:]
    raise ValueError(f"sampler kind {kind!r} has no frame labels")
