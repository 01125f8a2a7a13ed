"""Preference pairs for the reward model: "this review is better than that one".

A reward model learns from *comparisons*, not from labels (Christiano et al. 2017; Ouyang et al. 2022):
a human is shown two texts and says which one is better. IMDb has no such comparisons, so we make them
from its labels: a **positive** review is the ``chosen`` text and a **negative** review the ``rejected``
one (TRL's column names). The reward model then learns to score positive text higher, which is what PPO
will push the policy towards.

Two *views* of the same kind of pair, because PPO will score short text (a 2–8-token prompt plus a
4–16-token response) while IMDb reviews are long (median ≈ 235 tokens with the course's tokenizer):

* ``full``: the whole (cleaned) review; the tokenizer later truncates it to the model's context.
* ``snippet``: the first *k* words of each review. Both sides of a pair get the same *k*, so the model
  cannot learn "longer is better" from the pairs themselves.

Training pairs come only from the ``train`` rows of `load_imdb_splits`, held-out pairs only from its
``eval`` rows. The held-out snippet view is the first 20 words of the *same* held-out pairs, the way the
bag-of-words figure of the course's issue was measured.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets

from ..config import CourseConfig, get_config
from ..data import clean_review, load_imdb_splits

EVAL_SNIPPET_WORDS = 20
"""Held-out snippet view: the first 20 words of each review (≈ 26 tokens with the course's BPE)."""

TRAIN_SNIPPET_WORDS = (4, 24)
"""Training snippets: k words, k uniform in 4..24 (both included), covering PPO's 6–24 tokens and the
20-word evaluation view."""

VIEWS = ("full", "snippet")


def first_words(text: str, n_words: int) -> str:
    """The first `n_words` whitespace-separated words of `text`, joined by single spaces."""
    if n_words < 1:
        raise ValueError(f"n_words must be >= 1, got {n_words}")
    return " ".join(text.split()[:n_words])


def _positives_and_negatives(rows: Dataset) -> tuple[list[int], list[int]]:
    """Row indices of the positive (label 1) and negative (label 0) reviews."""
    if not {"text", "label"} <= set(rows.column_names):
        raise ValueError(f"Preference pairs need columns 'text' and 'label'; got {rows.column_names}.")
    labels = np.asarray(rows["label"])
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"Labels must be 0 (negative) or 1 (positive); found {sorted(set(labels.tolist()))}.")
    positives, negatives = np.flatnonzero(labels == 1).tolist(), np.flatnonzero(labels == 0).tolist()
    if not positives or not negatives:
        raise ValueError(f"Need both positive and negative reviews to make pairs; got {len(positives)} positive "
                         f"and {len(negatives)} negative rows.")
    return positives, negatives


def build_preference_pairs(
    rows: Dataset,
    view: str = "full",
    seed: int = 0,
    snippet_words: int | tuple[int, int] = EVAL_SNIPPET_WORDS,
    n_pairs: int | None = None,
) -> Dataset:
    """Pair each positive review with a negative one: ``chosen`` = positive, ``rejected`` = negative.

    Positives and negatives are shuffled (seeded) and zipped, so every review is used at most once and
    the number of pairs is ``min(#positive, #negative)`` (or `n_pairs` if smaller).

    Args:
        rows: IMDb rows with ``text`` and ``label`` (and optionally ``imdb_index``), e.g. one split of
            `load_imdb_splits`.
        view: "full" (whole cleaned reviews) or "snippet" (the first k words of each).
        seed: seed of the pairing (and of k when `snippet_words` is a range).
        snippet_words: k for the snippet view: an int, or ``(low, high)`` to draw k per pair, both included.
        n_pairs: keep only the first `n_pairs` pairs.
    Returns:
        A `Dataset` with columns ``chosen``, ``rejected`` (str), ``view`` (str) and ``chosen_index``,
        ``rejected_index`` (the IMDb row each text comes from; -1 if `rows` has no ``imdb_index``).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    positives, negatives = _positives_and_negatives(rows)
    rng = np.random.default_rng(seed)
    positives, negatives = rng.permutation(positives), rng.permutation(negatives)
    n = min(len(positives), len(negatives))
    if n_pairs is not None:
        if n_pairs < 1:
            raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
        n = min(n, n_pairs)
    positives, negatives = positives[:n].tolist(), negatives[:n].tolist()

    texts = rows["text"]
    chosen = [clean_review(texts[i]) for i in positives]
    rejected = [clean_review(texts[i]) for i in negatives]
    if view == "snippet":
        if isinstance(snippet_words, int):
            lengths = [snippet_words] * n
        else:
            low, high = snippet_words
            lengths = rng.integers(low, high + 1, size=n).tolist()
        # The same k on both sides: a pair never differs in length by construction.
        chosen = [first_words(t, k) for t, k in zip(chosen, lengths)]
        rejected = [first_words(t, k) for t, k in zip(rejected, lengths)]

    index = rows["imdb_index"] if "imdb_index" in rows.column_names else None
    return Dataset.from_dict({
        "chosen": chosen,
        "rejected": rejected,
        "view": [view] * n,
        "chosen_index": [index[i] for i in positives] if index is not None else [-1] * n,
        "rejected_index": [index[i] for i in negatives] if index is not None else [-1] * n,
    })


def training_pairs(rows: Dataset, seed: int = 0, snippet_words: tuple[int, int] = TRAIN_SNIPPET_WORDS,
                   n_pairs_per_view: int | None = None) -> Dataset:
    """The training mix: full-review pairs followed by snippet pairs (a different pairing, random k)."""
    full = build_preference_pairs(rows, "full", seed=seed, n_pairs=n_pairs_per_view)
    snippet = build_preference_pairs(rows, "snippet", seed=seed + 1, snippet_words=snippet_words,
                                     n_pairs=n_pairs_per_view)
    return concatenate_datasets([full, snippet])


def heldout_pairs(rows: Dataset, seed: int = 0, n_pairs: int | None = None) -> dict[str, Dataset]:
    """Held-out pairs in both views, over the *same* pairs: ``{"full": ..., "snippet": ...}``.

    The snippet view is the first `EVAL_SNIPPET_WORDS` words of each review of the full view.
    """
    return {
        "full": build_preference_pairs(rows, "full", seed=seed, n_pairs=n_pairs),
        "snippet": build_preference_pairs(rows, "snippet", seed=seed, snippet_words=EVAL_SNIPPET_WORDS, n_pairs=n_pairs),
    }


def course_pairs(config: CourseConfig | None = None, n_train_per_view: int | None = None,
                 n_eval: int | None = None) -> tuple[Dataset, dict[str, Dataset]]:
    """Training mix from the profile's ``train`` rows and held-out views from its ``eval`` rows."""
    config = config or get_config()
    splits = load_imdb_splits(config)
    return (training_pairs(splits["train"], seed=config.seed, n_pairs_per_view=n_train_per_view),
            heldout_pairs(splits["eval"], seed=config.seed, n_pairs=n_eval))


# ----------------------------------------------------------------------------------------------
# Tokenization and scoring of pairs
# ----------------------------------------------------------------------------------------------


def truncate(ids: list[int], max_length: int, keep: str = "first") -> list[int]:
    """The first (``keep="first"``) or last (``keep="last"``) `max_length` tokens of `ids`."""
    if keep == "first":
        return ids[:max_length]
    if keep == "last":
        return ids[-max_length:]
    raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")


def tokenize_pairs(pairs: Dataset, tokenizer, max_length: int, keep: str = "first") -> Dataset:
    """Add ``chosen_ids`` / ``rejected_ids``: token ids cut to `max_length` tokens (`truncate`).

    These are the columns TRL's `RewardTrainer` takes as "already processed", so our loop and TRL's see
    exactly the same tokens. (Given text columns, TRL 1.16 would instead append an EOS token and *drop*
    every pair longer than ``max_length`` rather than truncate it: for IMDb that is 45% of reviews.)
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    truncate([], max_length, keep)  # validates `keep` before the map

    def encode(batch):
        out = {}
        for side in ("chosen", "rejected"):
            ids = tokenizer(batch[side], add_special_tokens=False)["input_ids"]
            if any(len(x) == 0 for x in ids):
                raise ValueError(f"A {side} text tokenizes to nothing; drop empty texts before making pairs.")
            out[f"{side}_ids"] = [truncate(x, max_length, keep) for x in ids]
        return out

    return pairs.map(encode, batched=True, batch_size=1000)


def pairwise_accuracy(chosen_scores, rejected_scores) -> float:
    """Share of pairs whose chosen text scores *strictly* higher than its rejected text (ties count as wrong)."""
    chosen = torch.as_tensor(np.asarray(chosen_scores, dtype=np.float64))
    rejected = torch.as_tensor(np.asarray(rejected_scores, dtype=np.float64))
    if chosen.shape != rejected.shape or chosen.dim() != 1 or len(chosen) == 0:
        raise ValueError(f"Need two 1-D score arrays of the same non-zero length; got {tuple(chosen.shape)} "
                         f"and {tuple(rejected.shape)}.")
    if not (torch.isfinite(chosen).all() and torch.isfinite(rejected).all()):
        raise ValueError("Scores contain NaN or inf: the accuracy would be meaningless. Check the scorer.")
    return (chosen > rejected).double().mean().item()
