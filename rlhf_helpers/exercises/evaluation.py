"""Checks of notebook 07's exercises: measuring a policy, the over-optimisation of its reward model, and a broken run.

* ``distinct_n``: unique n-grams / all n-grams over a set of responses, against `rlhf_helpers.evaluation.distinct_n`.
* ``fit_rl_curve``: least squares of Gao et al. 2022's RL form R(d) = d (alpha - beta log d), against
  `rlhf_helpers.evaluation.overoptimisation.fit_overoptimisation`.
* ``best_of_n_kl``: KL(best-of-n || base) = log n - (n - 1) / n, against
  `rlhf_helpers.evaluation.overoptimisation.best_of_n_kl`.
* ``debug_diagnosis``: the bug of each run of the debug run card (``scripts/debug_runs.py``,
  `rlhf_helpers.evaluation.broken_runs`), against the card's answer key; a wrong label is answered with the
  statistic that gives its run away, in that run's own numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..evaluation.metrics import distinct_n as reference_distinct_n
from ..evaluation.overoptimisation import best_of_n_kl as reference_best_of_n_kl
from ..evaluation.overoptimisation import fit_overoptimisation
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_distinct_n", "check_fit_rl_curve", "check_best_of_n_kl", "check_debug_diagnosis"]


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


# ----------------------------------------------------------------------------------------------
# Exercise 7.4: debug this run
# ----------------------------------------------------------------------------------------------


def debug_card() -> dict:
    """The run card of the broken runs that notebook 07's capstone plots (``scripts/debug_runs.py``)."""
    from ..core.assets import shipped_results_dir
    from ..core.run_card import read_run_card

    return read_run_card(shipped_results_dir("tiny"), "debug")


def _series(history: list[dict], key: str) -> np.ndarray:
    return np.array([row[key] for row in history], dtype=float)


def _tell(bug: str, history: list[dict], runs: dict[str, list[dict]]) -> str:
    """What gives `bug` away in its run's `history`, with the run's own numbers (`runs`: every run's history, for
    the median it is compared with). Each sentence ends by naming the bug."""
    score, kl, beta = _series(history, "score"), _series(history, "kl"), _series(history, "kl_coef")
    steps = len(history)
    if bug == "healthy":
        return (f"it shows none of the signatures: its KL grows slowly to {kl[-1]:.1f} nats and is 0 at step 1, its score rises "
                f"({score[0]:+.2f} at step 1, {score[-5:].mean():+.2f} over the last 5 steps), its explained "
                f"variance reaches {_series(history, 'explained_variance').max():.2f} and its clip fraction is small "
                f"but never 0 — nothing in it is broken: it is the healthy run.")
    if bug == "kl_sign_flipped":
        return (f"its KL runs away ({kl[-1]:.0f} nats at step {steps}) while β *rises* ({beta[0]:.3f} → "
                f"{beta[-1]:.3f}) and its entropy collapses ({_series(history, 'entropy')[-1]:.2f} nats at the end), "
                f"yet its score does not fall from the start (best {score.max():+.2f}): the policy is paid for "
                "moving away — the KL penalty's sign is flipped.")
    if bug == "reference_is_policy":
        return (f"its KL is {np.abs(kl).max():.3g} at every one of its {steps} steps, while its score climbs "
                f"({score[0]:+.2f} → {score[-1]:+.2f}): the reference is the policy itself, not a frozen copy, so "
                "the KL measures nothing and nothing holds the policy back.")
    if bug == "raw_scores":
        first = np.median([h[0]["value_loss"] for h in runs.values()])
        return (f"its value loss at step 1 is {history[0]['value_loss']:.2f}, {history[0]['value_loss'] / first:.0f}× "
                f"the median run's ({first:.2f}), and stays that large; its score moves in larger steps: these are "
                "the reward model's raw scores, not normalised to mean 0, std 1 on the SFT policy's samples.")
    if bug == "no_value_loss":
        return (f"its explained variance is {np.abs(_series(history, 'explained_variance')).max():.3g} at every step "
                "— not about 0, exactly 0: the values do no better than a constant because they are the constant 0; "
                "the value head still outputs its initial zeros — the value loss is switched off (vf_coef = 0).")
    if bug == "advantages_negated":
        return (f"its score falls from the first steps ({score[0]:+.2f} at step 1, {score.min():+.2f} at its lowest), "
                f"the only run that gets worse at what it is trained for, and its KL grows to {kl[-1]:.0f} nats: "
                "the advantages have the wrong sign.")
    if bug == "ratio_always_one":
        clip, approx = _series(history, "clip_fraction"), _series(history, "approx_kl")
        return (f"its clip fraction is {clip.max():.3g} at every step (and approx_kl {np.abs(approx).max():.3g}): no "
                "token is ever clipped because the ratio is always 1 — the \"old\" log-probs come from the current "
                "policy instead of the rollout.")
    if bug == "top_p_mismatch":
        return (f"its KL is already {kl[0]:.2f} nats at step 1, before any update, when the policy still *is* the "
                "reference (every other run reads 0 there): the responses were sampled with top-p and the rollout "
                "kept the sampler's log-probs while the reference's come from the full distribution.")
    raise KeyError(f"no tell for the bug {bug!r}: add one to rlhf_helpers/exercises/evaluation.py")


@exercise("07", "debug_diagnosis", difficulty=3, importance=5, minutes=25)
def check_debug_diagnosis(fn) -> None:
    """`fn() -> {"run A": bug name, ...}`: the bug of every run of the debug run card ("healthy" for none)."""
    card = debug_card()
    key = card["answer_key"]
    options = sorted(card["bugs"])
    runs = {label: part["result"]["history"] for label, part in card["parts"].items()}
    answer = call(fn, case="debug_diagnosis()")
    expect(isinstance(answer, dict), f"debug_diagnosis: return a dict {{'run A': bug name, ...}}, got "
                                      f"{type(answer).__name__}.")
    answer = {str(label).strip(): str(name).strip().lower() for label, name in answer.items()}
    missing = [label for label in key if label not in answer]
    expect(not missing, f"debug_diagnosis: {', '.join(missing)} has no diagnosis: name the bug of every run "
                        f"{sorted(key)}.")
    extra = [label for label in answer if label not in key]
    expect(not extra, f"debug_diagnosis: there is no {', '.join(extra)}; the runs are {sorted(key)}.")
    unknown = {label: name for label, name in answer.items() if name not in options}
    expect(not unknown, "debug_diagnosis: " + "; ".join(f"{label}: {name!r}" for label, name in unknown.items())
           + f" is not one of the options {options}.")
    wrong = [label for label in sorted(key) if answer[label] != key[label]]
    expect(not wrong, f"debug_diagnosis: {len(wrong)} of {len(key)} runs misdiagnosed:\n" + "\n".join(
        f"  {label} (you said {answer[label]}): {_tell(key[label], runs[label], runs)}" for label in wrong))
    passed("debug_diagnosis", len(key))
