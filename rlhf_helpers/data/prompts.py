"""The prompts PPO starts from: IMDb reviews cut to their first 2–8 tokens (the seed's recipe).

`LengthSampler` draws the lengths (both bounds included: the seed's pandas recipe included 8, TRL's old
``LengthSampler(a, b)`` excluded b); `build_dataset` applies the recipe to IMDb's rows.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from ..core.errors import BadTypeError, BadValueError
from ..config import CourseConfig, get_config
from .imdb import clean_review, load_imdb, split_train_eval


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


class LengthSampler:
    """Draws integers uniformly from ``[min_value, max_value]`` — both bounds *included*.

    The seed's pandas recipe draws prompt lengths 2..8 with 8 included; TRL's old
    ``trl.core.LengthSampler(a, b)`` drew from ``range(a, b)`` and so never returned ``b``.
    This course includes the upper bound: ``LengthSampler(2, 8)`` returns 2, 3, ..., 8.
    """

    def __init__(self, min_value: int, max_value: int, seed: int | None = None):
        if int(min_value) != min_value or int(max_value) != max_value:
            raise BadTypeError(f"LengthSampler bounds must be integers, got {min_value!r}, {max_value!r}")
        if min_value < 1 or max_value < min_value:
            raise BadValueError(
                f"LengthSampler bounds [{min_value}, {max_value}] are empty or reversed: "
                "need 1 <= min_value <= max_value (both included)."
            )
        self.min_value, self.max_value = int(min_value), int(max_value)
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> int:
        return int(self.rng.integers(self.min_value, self.max_value + 1))

    def __repr__(self) -> str:
        return f"LengthSampler({self.min_value}, {self.max_value})  # both included"


def build_dataset(
    tokenizer,
    config: CourseConfig | None = None,
    split: str = "all",
    dataset: Dataset | None = None,
) -> Dataset:
    """The seed's prompt recipe: IMDb reviews cut to their first 2–8 tokens.

    Steps: rename ``text`` → ``review``; keep reviews longer than ``config.min_review_chars``
    characters (24,895 of the 25,000 train rows); clean ``<br />``; draw a prompt length per row
    with :class:`LengthSampler` (``config.prompt_min_tokens`` .. ``config.prompt_max_tokens``, both
    included, seeded with ``config.seed``); tokenize and keep that many tokens as ``input_ids``;
    decode them back to the text ``query``.

    Args:
        tokenizer: any Hugging Face tokenizer (the course's BPE or GPT-2's).
        split: "all" (every train row, as in the seed), "train" or "eval" (the held-out rows of
            `split_train_eval`; PPO trains on "train", evaluation uses "eval").
        dataset: IMDb rows to use instead of loading them (schema ``text``, ``label``).

    Returns:
        A torch-formatted `Dataset` with columns ``input_ids`` (1-D LongTensor of 2–8 ids),
        ``query`` (str) and ``label`` (0/1, the review's sentiment, for analysis only).
    """
    if config is not None and not isinstance(config, CourseConfig):
        raise BadTypeError(f"build_dataset takes a CourseConfig as its config, got {config!r} (a "
                           f"{type(config).__name__}): pass get_config({config!r}) for a profile's config, or "
                           "nothing for the current profile's.")
    config = config or get_config()
    if dataset is None:
        dataset = load_imdb(config.dataset_source)
    if split in ("train", "eval"):
        dataset = split_train_eval(dataset, config.eval_fraction, config.seed)[split]
    elif split != "all":
        raise BadValueError(f"split must be 'all', 'train' or 'eval', got {split!r}")

    dataset = dataset.rename_column("text", "review")
    dataset = dataset.filter(lambda row: len(row["review"]) > config.min_review_chars)
    sampler = LengthSampler(config.prompt_min_tokens, config.prompt_max_tokens, seed=config.seed)

    def tokenize(batch):
        # Only the first few tokens are kept, so tokenizing a 1,000-character prefix is enough and
        # keeps long reviews from tripping the tokenizer's max-length warning. Rows are processed in
        # order, so the seeded sampler gives every row the same length on every run.
        texts = [clean_review(review)[:1000] for review in batch["review"]]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        input_ids = [ids[: sampler()] for ids in encoded]
        return {"input_ids": input_ids, "query": tokenizer.batch_decode(input_ids)}

    dataset = dataset.map(tokenize, batched=True, batch_size=1000, remove_columns=["review"])
    dataset.set_format(type="torch", columns=["input_ids", "label"], output_all_columns=True)
    return dataset
