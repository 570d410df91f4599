"""FID (torchmetrics' FrechetInceptionDistance with cached real statistics) and its feature
extractors: one implementation shared by the callback, sample.py and compare."""

from .classifier import ClassifierFeatures, build_classifier_backend, classifier_cache_path
from .fid import FID, build_fid
from .inception import FIDWeightsMissing, check_inception_weights
from .stats import StatsFileError, load_or_compute_real_stats, load_stats_npz, real_stats_path, save_stats_npz

__all__ = [
    "FID",
    "FIDWeightsMissing",
    "ClassifierFeatures",
    "StatsFileError",
    "build_classifier_backend",
    "build_fid",
    "check_inception_weights",
    "classifier_cache_path",
    "load_or_compute_real_stats",
    "load_stats_npz",
    "real_stats_path",
    "save_stats_npz",
]
