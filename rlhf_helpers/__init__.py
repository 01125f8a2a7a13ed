"""rlhf_helpers: the reusable, tested code behind the RLHF-from-scratch notebooks."""

from .config import CourseConfig, get_config, PROFILES
from .data import LengthSampler, build_dataset, clean_review, load_imdb, load_imdb_splits, split_train_eval

__all__ = [
    "CourseConfig", "get_config", "PROFILES",
    "LengthSampler", "build_dataset", "clean_review", "load_imdb", "load_imdb_splits", "split_train_eval",
]
__version__ = "0.1.0"
