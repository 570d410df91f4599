"""The entry-point layer: turns a composed Hydra config into objects and runs them.

This package (with train.py, sample.py and conf/) is the only place that knows about Hydra and
OmegaConf; everything it builds takes plain arguments and can be driven from Python alone.
"""
