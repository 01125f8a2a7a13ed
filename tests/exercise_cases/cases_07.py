"""Exercise cases of notebook 07: distinct-n, best-of-n KL, the RL curve fit, the diagnosis of the broken runs.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

import math

import numpy as np

from rlhf_helpers.evaluation import distinct_n
from rlhf_helpers.exercises.evaluation import debug_card
from rlhf_helpers.evaluation.broken_runs import HEALTHY
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


# -- 7.4 debug this run ---------------------------------------------------------------------------

def _key():
    return dict(debug_card()["answer_key"])


def _label_of(bug):
    return next(label for label, name in _key().items() if name == bug)


def _swapped(key, a, b):
    key = dict(key)
    key[_label_of(a)], key[_label_of(b)] = b, a
    return key


def diagnose_reference():
    return _key()


def diagnose_two_runaways_swapped():
    """The two runs whose KL runs away, swapped: the flipped penalty and the negated advantages."""
    return _swapped(_key(), "kl_sign_flipped", "advantages_negated")


def diagnose_healthy_marked_broken():
    """The healthy run called the no-value-loss one, and the no-value-loss one healthy."""
    return _swapped(_key(), HEALTHY, "no_value_loss")


def diagnose_zero_kl_as_top_p():
    """The two KL oddities swapped: KL 0 throughout and KL above 0 at step 1."""
    return _swapped(_key(), "reference_is_policy", "top_p_mismatch")


def diagnose_two_zero_statistics_swapped():
    """The two runs with a statistic stuck at exactly 0 swapped: clip fraction and explained variance."""
    return _swapped(_key(), "ratio_always_one", "no_value_loss")


def diagnose_raw_scores_as_healthy():
    key = _key()
    key[_label_of("raw_scores")] = HEALTHY
    return key


def diagnose_made_up_name():
    key = _key()
    key[_label_of("kl_sign_flipped")] = "kl_flipped"
    return key


def diagnose_one_run_left_out():
    key = _key()
    del key[_label_of("ratio_always_one")]
    return key


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
    ("debug_diagnosis", diagnose_reference, [
        (diagnose_two_runaways_swapped, "the KL penalty's sign is flipped"),
        (diagnose_two_runaways_swapped, "the advantages have the wrong sign"),
        (diagnose_healthy_marked_broken, "it is the healthy run"),
        (diagnose_healthy_marked_broken, "the value loss is switched off"),
        (diagnose_zero_kl_as_top_p, "the reference is the policy itself"),
        (diagnose_zero_kl_as_top_p, "kept the sampler's log-probs"),
        (diagnose_two_zero_statistics_swapped, "the ratio is always 1"),
        (diagnose_raw_scores_as_healthy, "the reward model's raw scores"),
        (diagnose_made_up_name, "is not one of the options"),
        (diagnose_one_run_left_out, "has no diagnosis"),
    ]),
]
