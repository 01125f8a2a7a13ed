"""Exercise cases of notebook 07: distinct-n, best-of-n KL, the RL curve fit.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

import math

import numpy as np

from rlhf_helpers.evaluation import distinct_n
from rlhf_helpers.evaluation.overoptimisation import best_of_n_kl, fit_overoptimisation


# -- 7.1 distinct-n -------------------------------------------------------------------------------

def distinct_joined(texts, n):
    words = " ".join(texts).split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def distinct_mean_per_text(texts, n):
    return float(np.mean([distinct_n([t], n) for t in texts]))


def distinct_characters(texts, n):
    grams = [t[i : i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def distinct_unique_over_unique(texts, n):
    grams = {tuple(t.split()[i : i + n]) for t in texts for i in range(len(t.split()) - n + 1)}
    return len(grams) / max(len(grams), 1)


# -- 7.2 best-of-n KL -----------------------------------------------------------------------------

def bon_kl_log_only(n):
    return math.log(n)


def bon_kl_plus(n):
    return math.log(n) + (n - 1) / n


def bon_kl_log2(n):
    return math.log2(n) - (n - 1) / n


# -- 7.3 the RL curve -----------------------------------------------------------------------------

def _columns(x):
    return np.stack([x, -x * np.log(np.where(x > 0, x, 1.0))], axis=1)


def fit_reference(kl, gold):
    fit = fit_overoptimisation(kl, gold, "rl")
    return fit.alpha, fit.beta


def fit_on_kl(kl, gold):
    return tuple(np.linalg.lstsq(_columns(np.asarray(kl)), gold - gold[0], rcond=None)[0])


def fit_without_baseline(kl, gold):
    return tuple(np.linalg.lstsq(_columns(np.sqrt(kl)), gold, rcond=None)[0])


def fit_with_intercept(kl, gold):
    d = np.sqrt(kl)
    design = np.concatenate([_columns(d), np.ones((len(d), 1))], axis=1)
    return tuple(np.linalg.lstsq(design, gold - gold[0], rcond=None)[0][:2])


def fit_bon_form(kl, gold):
    d = np.sqrt(kl)
    return tuple(np.linalg.lstsq(np.stack([d, -d**2], 1), gold - gold[0], rcond=None)[0])


CASES = [
    ("distinct_n", distinct_n, [
        (distinct_joined, "run across two responses"),
        (distinct_mean_per_text, "averaged each response"),
        (distinct_characters, "character n-grams"),
        (distinct_unique_over_unique, "wrong values"),
    ]),
    ("best_of_n_kl", best_of_n_kl, [
        (bon_kl_log_only, "log n alone"),
        (bon_kl_plus, "it is subtracted"),
        (bon_kl_log2, "log base 2"),
    ]),
    ("fit_rl_curve", fit_reference, [
        (fit_on_kl, "Gao et al.'s d is sqrt(KL)"),
        (fit_without_baseline, "GAIN over the initial policy"),
        (fit_with_intercept, "no intercept"),
        (fit_bon_form, "best-of-n form"),
    ]),
]
