"""Feature extractors and FID: one implementation shared by the callback, sample.py and compare."""

from .backend import FIDBackend
from .classifier import ClassifierBackend, build_classifier_backend, classifier_cache_path
from .fid import FID, build_fid
from .frechet import FeatureStats, frechet_distance
from .inception import FIDWeightsMissing, InceptionBackend, check_inception_weights
from .stats import StatsFileError, load_or_compute_real_stats, load_stats_npz, real_stats_path, save_stats_npz

__all__ = [
    "FID",
    "FIDBackend",
    "FIDWeightsMissing",
    "ClassifierBackend",
    "FeatureStats",
    "InceptionBackend",
    "StatsFileError",
    "build_classifier_backend",
    "build_fid",
    "check_inception_weights",
    "classifier_cache_path",
    "frechet_distance",
    "load_or_compute_real_stats",
    "load_stats_npz",
    "real_stats_path",
    "save_stats_npz",
]
