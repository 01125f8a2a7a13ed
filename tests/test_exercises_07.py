"""The evaluation code that notebook 07's exercises stand on: best-of-n, the over-optimisation fit, reward analysis.

The exercises' CASES live in tests/exercise_cases/cases_07.py and run in tests/test_exercises.py.
"""

import math

import numpy as np
import pytest

from rlhf_helpers.evaluation.best_of_n import Candidates, best_of_n_curve, best_of_n_select
from rlhf_helpers.evaluation.overoptimisation import best_of_n_kl, fit_overoptimisation
from rlhf_helpers.evaluation.reward_analysis import disagreements, word_attributions


# -- the evaluation code itself -------------------------------------------------------------------

def test_best_of_n_kl_values():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


@pytest.mark.parametrize("form,shape", [("rl", lambda d: np.log(np.where(d > 0, d, 1.0))), ("bon", lambda d: d)])
def test_the_fit_recovers_known_coefficients_and_the_peak(form, shape):
    d = np.concatenate([[0.0], np.linspace(0.2, 8.0, 30)])
    alpha, beta = 0.2, 0.07
    gold = 0.4 + d * (alpha - beta * shape(d))
    fit = fit_overoptimisation(d**2, gold, form)
    assert fit.alpha == pytest.approx(alpha, abs=1e-9) and fit.beta == pytest.approx(beta, abs=1e-9)
    assert fit.r_squared == pytest.approx(1.0)
    expected_peak = math.exp(alpha / beta - 1) if form == "rl" else alpha / (2 * beta)
    assert fit.peak_d == pytest.approx(expected_peak) and fit.peak_kl == pytest.approx(expected_peak**2)
    grid = np.linspace(0.01, 20, 4000)
    assert grid[np.argmax(fit(grid))] == pytest.approx(expected_peak, abs=0.01)  # the peak is the fitted curve's top


def test_a_fit_that_never_turns_down_has_no_finite_peak():
    d = np.concatenate([[0.0], np.linspace(0.5, 5, 10)])
    fit = fit_overoptimisation(d**2, 0.5 + 0.1 * d + 0.01 * d**2, "bon")  # convex: beta < 0
    assert fit.beta < 0 and math.isinf(fit.peak_d)


def test_the_fit_refuses_a_run_that_does_not_start_at_the_initial_policy():
    with pytest.raises(ValueError, match="initial policy"):
        fit_overoptimisation([1.0, 2.0, 3.0], [0.5, 0.6, 0.7])


def test_best_of_n_keeps_the_proxy_best_of_each_disjoint_group():
    proxy = np.array([[0.0, 5.0], [1.0, 4.0], [3.0, 0.0], [2.0, 1.0]])  # [n_max = 4 draws, 2 prompts]
    assert best_of_n_select(proxy, 2).tolist() == [[1, 0], [2, 3]]
    assert best_of_n_select(proxy, 4).tolist() == [[2, 0]]
    gold = proxy / 10
    candidates = Candidates(["q1", "q2"], [["a", "b"]] * 4, proxy, gold, {"judge": proxy > 1.5})
    rows = best_of_n_curve(candidates)
    assert [r["n"] for r in rows] == [1, 2, 4]
    assert rows[0]["reward"] == pytest.approx(proxy.mean())  # best-of-1: every draw
    assert rows[1]["reward"] == pytest.approx((1 + 5 + 3 + 1) / 4)
    assert rows[2]["p_positive/bag_of_words"] == pytest.approx((0.3 + 0.5) / 2)
    with pytest.raises(ValueError, match="divide"):
        best_of_n_select(proxy, 3)


def test_word_attributions_are_score_differences_with_the_word_left_out():
    def reward(texts):  # +1 per "great", -1 per "bad"
        return np.array([t.split().count("great") - t.split().count("bad") for t in texts], dtype=float)

    assert word_attributions(reward, "a great bad great film") == [("a", 0.0), ("great", 1.0), ("bad", -1.0),
                                                                   ("great", 1.0), ("film", 0.0)]


def test_disagreements_rank_by_the_gap_between_proxy_and_gold_percentiles():
    samples = [{"reward": r, "p_positive/bag_of_words": g} for r, g in [(3, 0.1), (2, 0.5), (1, 0.9), (0, 0.6)]]
    out = disagreements(samples, n=1)
    assert out["proxy_over_gold"][0]["reward"] == 3 and out["proxy_over_gold"][0]["rank_gap"] == pytest.approx(1.0)
    assert out["gold_over_proxy"][0]["reward"] == 1
