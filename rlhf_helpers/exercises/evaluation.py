"""Checks of notebook 07's exercises: measuring a policy and the over-optimisation of its reward model.

* ``distinct_n``: unique n-grams / all n-grams over a set of responses, against `rlhf_helpers.evaluation.distinct_n`.
* ``fit_rl_curve``: least squares of Gao et al. 2022's RL form R(d) = d (alpha - beta log d), against
  `rlhf_helpers.evaluation.overoptimisation.fit_overoptimisation`.
* ``best_of_n_kl``: KL(best-of-n || base) = log n - (n - 1) / n, against
  `rlhf_helpers.evaluation.overoptimisation.best_of_n_kl`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..evaluation.metrics import distinct_n as reference_distinct_n
from ..evaluation.overoptimisation import best_of_n_kl as reference_best_of_n_kl
from ..evaluation.overoptimisation import fit_overoptimisation
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_distinct_n", "check_fit_rl_curve", "check_best_of_n_kl"]


# ----------------------------------------------------------------------------------------------
# Exercise 7.1: distinct-n
# ----------------------------------------------------------------------------------------------

DISTINCT_CASES = [
    ("three responses, some words repeated", ["a great film", "a great great cast", "the film"]),
    ("one response repeating itself", ["great great great great"]),
    ("n-grams must not run across two responses", ["very good", "good very", "good"]),
    ("a response shorter than n (it has no bigram, and no n-gram is counted for it)", ["wow", "so so good", "wow wow"]),
]


def _joined(texts, n):
    words = " ".join(texts).split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def _mean_per_text(texts, n):
    return float(np.mean([reference_distinct_n([t], n) for t in texts]))


def _characters(texts, n):
    grams = [t[i : i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


@exercise("07", "distinct_n", difficulty=1, importance=3, minutes=10)
def check_distinct_n(fn) -> None:
    """`fn(texts: list[str], n: int) -> float`: unique word n-grams / all word n-grams, pooled over the texts."""
    count = 0
    for case, texts in DISTINCT_CASES:
        for n in (1, 2, 3):
            label = f"{case}: {texts}, n = {n}"
            answer = call(fn, list(texts), n, case=label)
            expect(not isinstance(answer, (list, tuple, np.ndarray, torch.Tensor)) or np.size(answer) == 1,
                   f"distinct_n: return one number (a float), got {type(answer).__name__}.\n  case: {label}")
            expect_close(float(answer), torch.tensor(reference_distinct_n(texts, n), dtype=torch.float64),
                         "distinct_n", case=label, atol=1e-9, diagnoses=[
                             (torch.tensor(_joined(texts, n)), "you joined the responses into one text, so n-grams "
                              "run across two responses: count the n-grams of each response separately, then pool."),
                             (torch.tensor(_mean_per_text(texts, n)), "you averaged each response's distinct-n: pool "
                              "the n-grams of all responses, then divide unique by total once."),
                             (torch.tensor(_characters(texts, n)), "these are character n-grams: split each response "
                              "into words (str.split()) first."),
                         ], hint="unique n-grams over all responses / number of n-grams over all responses.")
            count += 1
    passed("distinct_n", count)


# ----------------------------------------------------------------------------------------------
# Exercise 7.2: fitting Gao et al.'s RL curve
# ----------------------------------------------------------------------------------------------


def _rl_points(seed: int, alpha: float, beta: float, n: int = 12, noise: float = 0.01, start: float = 0.5):
    """A run's (KL, gold): KL 0 first, gold = start + d (alpha - beta log d) + noise."""
    rng = np.random.default_rng(seed)
    d = np.concatenate([[0.0], np.sort(rng.uniform(0.3, 6.0, n - 1))])
    gain = d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))
    gold = start + gain + np.concatenate([[0.0], rng.normal(0, noise, n - 1)])
    return d**2, gold


def _lstsq(columns, y):
    return np.linalg.lstsq(np.stack(columns, axis=1), y, rcond=None)[0]


@exercise("07", "fit_rl_curve", difficulty=3, importance=4, minutes=15)
def check_fit_rl_curve(fn) -> None:
    """`fn(kl [N], gold [N]) -> (alpha, beta)`: least squares of gold - gold[0] = d (alpha - beta log d), d = sqrt(kl)."""
    cases = [("gold rises then falls (alpha 0.1, beta 0.06)", *_rl_points(0, 0.1, 0.06)),
             ("gold still rising (alpha 0.08, beta 0.01), starting at 0.3", *_rl_points(1, 0.08, 0.01, start=0.3)),
             ("a noisy run, 20 points", *_rl_points(2, 0.12, 0.05, n=20, noise=0.03))]
    for case, kl, gold in cases:
        answer = call(fn, kl.copy(), gold.copy(), case=case)
        expect(isinstance(answer, (tuple, list, np.ndarray, torch.Tensor)) and np.size(answer) == 2,
               f"fit_rl_curve: return (alpha, beta), two numbers; got {answer!r}.\n  case: {case}")
        answer = torch.tensor([float(v) for v in np.asarray(answer, dtype=float).ravel()], dtype=torch.float64)
        fit = fit_overoptimisation(kl, gold, "rl")
        d, gain = np.sqrt(kl), gold - gold[0]
        logd = np.log(np.where(d > 0, d, 1.0))
        no_sqrt = _lstsq([kl, -kl * np.log(np.where(kl > 0, kl, 1.0))], gain)
        no_baseline = _lstsq([d, -d * logd], gold)
        intercept = _lstsq([d, -d * logd, np.ones_like(d)], gain)[:2]
        bon_form = _lstsq([d, -d**2], gain)
        expect_close(answer, torch.tensor([fit.alpha, fit.beta], dtype=torch.float64), "fit_rl_curve (alpha, beta)",
                     case=case, atol=1e-6, rtol=1e-5, diagnoses=[
                         (torch.tensor(no_sqrt), "you fitted against the KL itself: Gao et al.'s d is sqrt(KL)."),
                         (torch.tensor(no_baseline), "fit the GAIN over the initial policy, gold - gold[0] (R(0) = 0): "
                          "the form has no intercept, so a gold that starts at 0.5 must be shifted to start at 0."),
                         (torch.tensor(intercept), "the form has no intercept: the columns are d and -d log d only."),
                         (torch.tensor(bon_form), "that is the best-of-n form d (alpha - beta d); RL's is "
                          "d (alpha - beta log d)."),
                     ], hint="np.linalg.lstsq(np.stack([d, -d * log d], 1), gold - gold[0]) with log d := 0 at d = 0.")
    passed("fit_rl_curve", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 7.3: the KL of best-of-n
# ----------------------------------------------------------------------------------------------


@exercise("07", "best_of_n_kl", difficulty=1, importance=4, minutes=5)
def check_best_of_n_kl(fn) -> None:
    """`fn(n: int) -> float`: KL(best-of-n || base policy) in nats, log n - (n - 1) / n."""
    ns = (1, 2, 4, 16, 64, 1000)
    for n in ns:
        case = f"n = {n}"
        answer = call(fn, n, case=case)
        expect_close(float(answer), torch.tensor(reference_best_of_n_kl(n), dtype=torch.float64), "best_of_n_kl",
                     case=case, atol=1e-9, diagnoses=[
                         (torch.tensor(math.log(n)), "that is log n alone: the bound is log n - (n - 1) / n (best-of-1 "
                          "is the base policy itself, KL 0)."),
                         (torch.tensor(math.log(n) + (n - 1) / n), "the sign of (n - 1) / n: it is subtracted."),
                         (torch.tensor(math.log2(n) - (n - 1) / n), "log base 2: KL in nats uses the natural log."),
                     ], hint="KL(best-of-n || base) = log n - (n - 1) / n.")
    passed("best_of_n_kl", len(ns))
