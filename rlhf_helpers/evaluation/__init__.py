"""Evaluation (notebooks 06–07): independent judges, the metrics of a policy on held-out prompts, and the analyses
of notebook 07 — evaluation along training runs, best-of-n, reward over-optimisation fits, reward-model probes.

Modules: `judges` (VADER, bag of words), `metrics` (`evaluate_policy`), `along_training` (`HeldOutEvaluator`,
training with evaluations), `best_of_n`, `overoptimisation` (Gao et al. 2022's forms), `reward_analysis` (length,
words, disagreements), `sweep` (notebook 07's experiments), `report` (the command line's tables and figure).
"""

from .along_training import GOLD, HeldOutEvaluator, ppo_with_evaluations, sft_with_evaluations
from .best_of_n import best_of_n_curve, draw_candidates
from .judges import BagOfWordsJudge, VaderJudge, default_judges, held_out_accuracy
from .metrics import distinct_n, evaluate_policy
from .overoptimisation import best_of_n_kl, fit_overoptimisation

__all__ = ["BagOfWordsJudge", "VaderJudge", "default_judges", "held_out_accuracy", "distinct_n", "evaluate_policy",
           "GOLD", "HeldOutEvaluator", "ppo_with_evaluations", "sft_with_evaluations", "best_of_n_curve",
           "draw_candidates", "best_of_n_kl", "fit_overoptimisation"]
