"""Evaluation (notebooks 06–07): independent judges and the metrics of a policy on held-out prompts."""

from .judges import BagOfWordsJudge, VaderJudge, default_judges
from .metrics import distinct_n, evaluate_policy

__all__ = ["BagOfWordsJudge", "VaderJudge", "default_judges", "distinct_n", "evaluate_policy"]
