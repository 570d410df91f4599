"""Sampling: one annealed Langevin loop and the other sampler kinds, as pure functions of a score
function ``score(x, cond)`` (cond: level indices, or sigmas for sigma-continuous networks).

    langevin.py      the Langevin loop (annealed: NCSN Algorithm 1; plain), with hooks
    inpainting.py    NCSN Algorithm 2 as hooks of that loop; masks
    interpolation.py NCSNv2 interpolation: slerped noise streams, any kind
    cas.py, pc.py, ode.py  consistent annealed sampling, predictor-corrector, probability-flow ODE
    grid.py          the sigmas a sampler visits (training levels, geometric or Karras spacing)
    kinds.py         the sampler kinds as objects (Annealed, Langevin, CAS, PC, ODE): settings, run, NFE
    euler.py         Euler on the probability-flow ODE: a whole kind in one file
    edm.py           EDM's stochastic sampler (Heun with fresh noise before each step)
    seeds.py         noise sources: per-sample seeds, one generator, slerped pairs
    sampler.py       ``Sampler``: a kind plus the shared settings; ``Sampler.draw``, what every caller uses
    toy_panels.py    the samples and score fields of NCSN Fig. 3 (drawn by ``figures.toy_figure``)

Nothing here knows about Lightning or Hydra. Noise levels follow ``ncsn.core.sigmas``: index 0 =
largest sigma.
"""

from .cas import consistent_annealed
from .edm import EDM
from .euler import Euler
from .grid import NoiseGrid, karras_sigmas, noise_grid
from .kinds import CAS, ODE, PC, Annealed, Kind, Langevin
from .langevin import LangevinResult, LoopHooks, ScoreFn, Stage, annealed_langevin, langevin, langevin_loop
from .ode import heun_path, probability_flow
from .pc import predictor_corrector
from .sampler import Sampler, dataset_mean
from .seeds import GeneratorNoise, SampleNoise, SlerpNoise, slerp

__all__ = [
    "CAS",
    "EDM",
    "ODE",
    "PC",
    "Annealed",
    "Euler",
    "Kind",
    "Langevin",
    "GeneratorNoise",
    "LangevinResult",
    "LoopHooks",
    "NoiseGrid",
    "SampleNoise",
    "Sampler",
    "dataset_mean",
    "ScoreFn",
    "SlerpNoise",
    "Stage",
    "annealed_langevin",
    "consistent_annealed",
    "heun_path",
    "karras_sigmas",
    "langevin",
    "langevin_loop",
    "noise_grid",
    "predictor_corrector",
    "probability_flow",
    "slerp",
]
