"""Checks of notebook 01's exercises: the prompt recipe (prompt lengths, then the prompts themselves)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from ..config import DEFAULT_PROFILE, get_config
from ..data.imdb import clean_review, imdb_csv_path
from ..data.prompts import LengthSampler
from ..data.prompts import build_dataset as reference_build_dataset
from .checking import ExerciseFailed, call, exercise, expect, passed

__all__ = ["check_sample_lengths", "check_build_prompts"]


# ----------------------------------------------------------------------------------------------
# Exercise 1.1: prompt lengths, both bounds included
# ----------------------------------------------------------------------------------------------


def reference_sample_lengths(low: int, high: int, n: int, seed: int) -> list[int]:
    """The package's lengths: `n` draws of ``LengthSampler(low, high, seed=seed)`` (both bounds included)."""
    sampler = LengthSampler(low, high, seed=seed)
    return [sampler() for _ in range(n)]


def _as_int_list(answer, what: str, n: int) -> list[int]:
    """The learner's lengths as a list of Python ints (a list, a numpy array or a 1-D tensor is accepted)."""
    if isinstance(answer, torch.Tensor):
        answer = answer.tolist()
    elif isinstance(answer, np.ndarray):
        answer = answer.tolist()
    if not isinstance(answer, (list, tuple)):
        raise ExerciseFailed(f"{what}: expected a list (or numpy array) of {n} integers, got {type(answer).__name__}.")
    expect(len(answer) == n, f"{what}: {len(answer)} lengths, expected n = {n}.")
    values = []
    for value in answer:
        if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
            raise ExerciseFailed(f"{what}: {value!r} is not a whole number: a prompt length counts tokens.")
        values.append(int(value))
    return values


@exercise("01", "sample_lengths", difficulty=1, importance=3, minutes=5)
def check_sample_lengths(fn) -> None:
    """`fn(low, high, n, seed) -> n ints`: uniform on low..high, both included, from ``np.random.default_rng(seed)``."""
    cases = [(2, 8, 2000, 0), (4, 16, 2000, 1), (3, 3, 10, 2), (1, 2, 500, 3)]
    for low, high, n, seed in cases:
        case = f"low={low}, high={high}, n={n}, seed={seed}"
        expected = reference_sample_lengths(low, high, n, seed)
        answer = _as_int_list(call(fn, low, high, n, seed, case=case), "sample_lengths", n)
        if answer == expected:
            continue
        seen = set(answer)
        expect(min(answer) >= low - 1 and max(answer) <= high + 1,
               f"sample_lengths: values from {min(answer)} to {max(answer)}, far outside {low}..{high}.\n  case: {case}")
        expect(low - 1 not in seen, f"sample_lengths: returned {low - 1}, below low = {low}: the range starts at low.\n  case: {case}")
        expect(high + 1 not in seen, f"sample_lengths: returned {high + 1}, above high = {high}: numpy's upper bound is "
                                     f"exclusive, so integers(low, high + 1) is already right.\n  case: {case}")
        if low < high:
            expect(high in seen, f"sample_lengths: never returned high = {high} in {n} draws. numpy's "
                                 "rng.integers(low, high) excludes high (as Python's range and TRL's old LengthSampler "
                                 "do): the course includes both bounds, so ask for integers(low, high + 1)."
                                 f"\n  case: {case}")
            expect(low in seen, f"sample_lengths: never returned low = {low} in {n} draws: the range starts at low "
                                f"(included).\n  case: {case}")
        again = _as_int_list(call(fn, low, high, n, seed, case=case), "sample_lengths", n)
        expect(again == answer, "sample_lengths: two calls with the same seed gave different lengths: build the "
                                "generator from the seed inside the function (np.random.default_rng(seed)).\n"
                                f"  case: {case}")
        raise ExerciseFailed(
            "sample_lengths: the values are in range, but not the package's draws (the prompts would differ from "
            "build_dataset's): use one generator, np.random.default_rng(seed), and draw n values with "
            f"rng.integers(low, high + 1, size=n) (or n single draws, in order).\n  case: {case}")
    passed("sample_lengths", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 1.2: the prompts
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _imdb_sample() -> pd.DataFrame:
    """A small DataFrame (``review``, ``label``) that exercises every step of the recipe.

    Real IMDb rows of both labels, plus reviews made to sit on the edges: exactly 200 characters (dropped: the
    filter is strict), 201 (kept), short ones, ``<br />`` tags at the very start, runs of spaces.
    """
    raw = pd.read_csv(imdb_csv_path())
    imdb = raw.loc[raw["source"] == "imdb", ["text", "label"]].reset_index(drop=True)
    real = pd.concat([imdb.iloc[:24], imdb.iloc[12_500:12_524]]).reset_index(drop=True)
    base = "A quiet film about two brothers who run a small cinema in a seaside town, full of long shots and small jokes. "
    made = [
        (base + "x" * (200 - len(base) - 1) + ".", 1),  # exactly 200 characters: dropped (the filter is > 200)
        (base + "y" * (201 - len(base) - 1) + "!", 0),  # 201 characters: kept
        ("Too short to be a prompt.", 1),
        ("<br /><br />" + base + "It starts with two line breaks and ends well enough; I liked it, mostly.", 1),
        ("Worst.   Film.    Ever.<BR>" + base * 2, 0),
    ]
    assert len(made[0][0]) == 200 and len(made[1][0]) == 201
    rows = [(text, int(label)) for text, label in zip(real["text"], real["label"])]
    rows = rows[:10] + made[:2] + rows[10:30] + made[2:] + rows[30:]
    return pd.DataFrame(rows, columns=["review", "label"])


def _shipped_tokenizer():
    from ..core.assets import shipped_tokenizer_dir
    from ..data.tokenizer import load_tokenizer

    return load_tokenizer(shipped_tokenizer_dir())


def reference_build_prompts(reviews: pd.DataFrame, tokenizer, clean, min_chars: int, low: int, high: int,
                            seed: int) -> pd.DataFrame:
    """The package's `build_dataset` on these rows (``review``, ``label``), as a DataFrame ``query, input_ids, label``."""
    from datasets import Dataset
    import datasets as datasets_lib

    config = dataclasses.replace(get_config(DEFAULT_PROFILE), min_review_chars=min_chars, prompt_min_tokens=low,
                                 prompt_max_tokens=high, seed=seed)
    rows = Dataset.from_pandas(reviews.rename(columns={"review": "text"})[["text", "label"]], preserve_index=False)
    bars_were_on = not datasets_lib.are_progress_bars_disabled()
    datasets_lib.disable_progress_bars()  # a check prints one line, not datasets' map/filter bars
    try:
        built = reference_build_dataset(tokenizer, config, split="all", dataset=rows)
    finally:
        if bars_were_on:
            datasets_lib.enable_progress_bars()
    return pd.DataFrame({"query": list(built["query"]), "input_ids": [ids.tolist() for ids in built["input_ids"]],
                         "label": [int(x) for x in built["label"]]})


def _variant(reviews, tokenizer, clean, min_chars, low, high, seed, *, keep_equal=False, sample_all_rows=False,
             exclusive=False, cut="tokens", cleaned=True, one_length=False) -> pd.DataFrame:
    """What a known wrong recipe returns (the flags name the mistake); all False/default: the right recipe."""
    long_enough = reviews["review"].str.len() >= min_chars if keep_equal else reviews["review"].str.len() > min_chars
    kept = reviews[long_enough]
    draws = len(reviews) if sample_all_rows else len(kept)
    lengths = np.random.default_rng(seed).integers(low, high if exclusive else high + 1, size=draws)
    if sample_all_rows:
        lengths = lengths[long_enough.to_numpy()]  # the lengths of the rows that survived, drawn before the filter
    if one_length:
        lengths = np.full(len(kept), lengths[0])
    queries, ids = [], []
    for text, n in zip(kept["review"], lengths):
        text = clean(text) if cleaned else text
        if cut == "characters":
            row = tokenizer(text[:n], add_special_tokens=False)["input_ids"]
        elif cut == "none":
            row = tokenizer(text[:1000], add_special_tokens=False)["input_ids"]
        else:
            row = tokenizer(text[:1000], add_special_tokens=False)["input_ids"][:n]
        ids.append(row)
        queries.append(tokenizer.decode(row))
    return pd.DataFrame({"query": queries, "input_ids": ids, "label": [int(x) for x in kept["label"]]})


def _columns(frame, what: str) -> tuple[list[str], list[list[int]], list[int]]:
    if not isinstance(frame, pd.DataFrame):
        raise ExerciseFailed(f"{what}: expected a pandas DataFrame with columns query, input_ids, label; got "
                             f"{type(frame).__name__}.")
    missing = [c for c in ("query", "input_ids", "label") if c not in frame.columns]
    expect(not missing, f"{what}: the DataFrame has no column(s) {missing} (it has {list(frame.columns)}).")
    ids = [x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else list(x) for x in frame["input_ids"]]
    return list(frame["query"]), [[int(t) for t in row] for row in ids], [int(x) for x in frame["label"]]


def _same(answer, wrong) -> bool:
    return _columns(answer, "") == _columns(wrong, "")


@exercise("01", "build_prompts", difficulty=2, importance=4, minutes=15)
def check_build_prompts(fn, tokenizer=None) -> None:
    """`fn(reviews, tokenizer, clean, min_chars, low, high, seed) -> DataFrame(query, input_ids, label)`, the same
    rows as the package's `build_dataset` on those reviews."""
    tokenizer = tokenizer if tokenizer is not None else _shipped_tokenizer()
    reviews = _imdb_sample()
    cases = [(200, 2, 8, 0), (200, 4, 16, 5), (100, 1, 1, 2)]
    for min_chars, low, high, seed in cases:
        case = f"{len(reviews)} reviews (real IMDb rows + edge cases), min_chars={min_chars}, lengths {low}..{high}, seed={seed}"
        args = (reviews.copy(), tokenizer, clean_review, min_chars, low, high, seed)
        expected = reference_build_prompts(*args)
        answer = call(fn, *args, case=case)
        queries, ids, labels = _columns(answer, "build_prompts")
        if (queries, ids, labels) == _columns(expected, ""):
            continue
        variants = [
            (dict(keep_equal=True), f"a review of exactly {min_chars} characters was kept: the recipe keeps reviews "
                                    f"*longer than* min_chars (len > {min_chars}, not >=)."),
            (dict(cut="none"), "the prompts are not cut: keep only the first n tokens of each review (ids[:n])."),
            (dict(cut="characters"), "you cut the review to n *characters*; the prompt length counts tokens: "
                                     "tokenize first, then keep ids[:n]."),
            (dict(cleaned=False), "the <br /> tags are still in the prompts: clean each review (clean(review)) "
                                  "before tokenizing."),
            (dict(exclusive=True), f"the prompt lengths never reach high = {high}: the upper bound is included "
                                   "(integers(low, high + 1))."),
            (dict(sample_all_rows=True), "the lengths were drawn for every review, before the filter: draw one "
                                         "length per *kept* review, in order, so the i-th prompt gets the i-th draw."),
            (dict(one_length=True), "every prompt has the same length: draw a new length for each review (one "
                                    "generator for all of them, not a fresh one per review)."),
        ]
        for flags, message in variants:
            try:
                wrong = _variant(*args, **flags)
            except ValueError:  # e.g. an empty range for low == high with the bound excluded
                continue
            if _same(answer, wrong):
                raise ExerciseFailed(f"build_prompts: {message}\n  case: {case}")
        longest = max((len(row) for row in ids), default=0)
        expect(longest <= high, f"build_prompts: a prompt has {longest} tokens, more than high = {high}: the prompts "
                                f"are not cut; keep only the first n tokens of each review (ids[:n]).\n  case: {case}")
        expected_q = list(expected["query"])
        expect(len(queries) == len(expected_q),
               f"build_prompts: {len(queries)} rows, expected {len(expected_q)} (the reviews longer than {min_chars} "
               f"characters, in their order).\n  case: {case}")
        expect(labels == list(expected["label"]), "build_prompts: the labels do not follow their reviews: keep each "
                                                  f"kept review's own label, in order.\n  case: {case}")
        for i, (got, want) in enumerate(zip(ids, expected["input_ids"])):
            if got != want:
                raise ExerciseFailed(f"build_prompts: row {i}: input_ids {got}, expected {want} (query "
                                     f"{expected_q[i]!r}).\n  case: {case}")
        for i, (got, want) in enumerate(zip(queries, expected_q)):
            if got != want:
                raise ExerciseFailed(f"build_prompts: row {i}: query {got!r}, expected {want!r}: the query is "
                                     f"tokenizer.decode(input_ids).\n  case: {case}")
    passed("build_prompts", len(cases))
