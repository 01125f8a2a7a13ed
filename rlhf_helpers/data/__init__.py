"""Data (notebook 01): IMDb offline or from the hub, the tokenizer, the prompts, preference pairs (03)."""

from .imdb import FILTERED_ROWS, clean_review, imdb_csv_path, load_imdb, load_imdb_splits, split_train_eval
from .prompts import LengthSampler, build_dataset

__all__ = ["FILTERED_ROWS", "clean_review", "imdb_csv_path", "load_imdb", "load_imdb_splits", "split_train_eval",
           "LengthSampler", "build_dataset"]
