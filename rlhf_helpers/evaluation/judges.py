"""Judges independent of the training reward: did the policy learn to write positive reviews?

PPO maximises the reward model's score, so that score cannot also be the evidence that it worked: a
policy can exploit its reward model ("reward hacking"). We judge with models that PPO never saw:

* **VADER** (Hutto & Gilbert, 2014, ICWSM): a rule-based sentiment lexicon, no IMDb training at all.
  A text is positive when its compound score is >= 0.05 — the threshold its authors recommend.
* **Bag of words** (TF-IDF + logistic regression, `rlhf_helpers.baselines`): trained on the IMDb train
  reviews' labels, a different model family from the reward model.

Each judge maps ``list[str] -> numpy bool array`` (True = positive).

Their accuracy on the 2,489 held-out IMDb reviews of the tiny profile (`held_out_accuracy`, measured in notebook
07): VADER 69.4% on whole reviews, 61.8% on a review's first 20 words; bag of words 91.0% and 72.5%. The course's
texts are short (a 2–8-token prompt and a 4–16-token response), so a judged positive rate is a noisy measurement.
"""

from __future__ import annotations

import numpy as np

from ..data import load_imdb_splits
from ..reward.bag_of_words import BagOfWordsBaseline

VADER_POSITIVE_THRESHOLD = 0.05


class VaderJudge:
    """Positive when VADER's compound score >= 0.05 (its authors' convention)."""

    name = "vader"

    def __init__(self, threshold: float = VADER_POSITIVE_THRESHOLD):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.threshold = threshold

    def compound(self, texts: list[str]) -> np.ndarray:
        return np.array([self.analyzer.polarity_scores(t)["compound"] for t in texts])

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.compound(texts) >= self.threshold


class BagOfWordsJudge:
    """Positive when a TF-IDF + logistic-regression classifier's log-odds are > 0 (P(positive) > 0.5)."""

    name = "bag_of_words"

    def __init__(self, baseline):
        self.baseline = baseline

    @classmethod
    def trained_on_imdb(cls, config=None) -> "BagOfWordsJudge":
        """Fit `BagOfWordsBaseline` on the profile's IMDb *train* rows, never on the held-out ones."""

        train = load_imdb_splits(config)["train"]
        return cls(BagOfWordsBaseline().fit(train["text"], train["label"]))

    def log_odds(self, texts: list[str]) -> np.ndarray:
        return self.baseline.score(list(texts))

    def probability(self, texts: list[str]) -> np.ndarray:
        """``[N]`` p(positive) = sigmoid(log-odds): a continuous score, the course's gold reward (notebook 07)."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(texts)))

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.log_odds(texts) > 0


def held_out_accuracy(judges: dict, config=None, first_words: int | None = None) -> dict[str, float]:
    """Each judge's accuracy on the labelled held-out IMDb reviews (the eval split, never used to fit a judge).

    `first_words`: judge only each review's first N words — closer to what the judges see in the course, a
    prompt of 2–8 tokens and a 4–16-token response, than a whole review."""
    held_out = load_imdb_splits(config)["eval"]
    texts, labels = list(held_out["text"]), np.asarray(held_out["label"], dtype=bool)
    if first_words is not None:
        texts = [" ".join(t.split()[:first_words]) for t in texts]
    return {name: float((np.asarray(judge(texts)) == labels).mean()) for name, judge in judges.items()}


def default_judges(config=None) -> dict:
    """Both judges, ready to call."""
    return {"vader": VaderJudge(), "bag_of_words": BagOfWordsJudge.trained_on_imdb(config)}
