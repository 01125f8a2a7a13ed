"""A bag-of-words baseline for the reward model: TF-IDF features + logistic regression.

Before trusting a 5-million-parameter transformer, ask what a linear model over word counts achieves.
Each review becomes a sparse vector of TF-IDF weights over words and word pairs (Salton & Buckley
1988; sublinear term frequency ``1 + log tf``), and a logistic regression learns one weight per feature
(positive words get positive weights). Its decision function ``w·x + b`` is a *score*, so it can be
compared with the reward model on the same held-out pairs: a pair counts when the chosen (positive)
text scores strictly higher.

It is trained as a classifier on labelled reviews (not on pairs): with a linear score, the
Bradley–Terry loss on (positive, negative) pairs and the logistic loss on labels reward the same thing,
a score that separates the two classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import clean_review


@dataclass
class BagOfWordsBaseline:
    """TF-IDF (words and word pairs) + L2-regularised logistic regression, from scikit-learn."""

    ngram_range: tuple[int, int] = (1, 2)
    """Unigrams and bigrams: bigrams catch "not good" / "well worth"."""

    min_df: int = 2
    """Ignore n-grams seen in fewer than 2 training reviews (typos, names)."""

    C: float = 4.0
    """Inverse regularisation strength of the logistic regression."""

    seed: int = 0

    def __post_init__(self):
        self.vectorizer = None
        self.classifier = None

    def fit(self, texts, labels) -> "BagOfWordsBaseline":
        """Fit on raw review texts (cleaned here with `clean_review`) and 0/1 labels."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        texts = [clean_review(t) for t in texts]
        labels = np.asarray(labels)
        if len(texts) != len(labels) or len(set(labels.tolist())) != 2:
            raise ValueError("fit needs as many labels as texts, with both classes present.")
        self.vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, min_df=self.min_df, sublinear_tf=True)
        features = self.vectorizer.fit_transform(texts)
        self.classifier = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        self.classifier.fit(features, labels)
        return self

    def score(self, texts) -> np.ndarray:
        """``[N]`` float scores ``w·x + b`` (log-odds of "positive"); higher = more positive."""
        if self.classifier is None:
            raise RuntimeError("The baseline is not fitted yet: call .fit(texts, labels) first.")
        if isinstance(texts, str):
            raise TypeError("score takes a list of texts; wrap a single text in a list.")
        return self.classifier.decision_function(self.vectorizer.transform([clean_review(t) for t in texts]))

    def top_words(self, n: int = 10) -> dict[str, list[tuple[str, float]]]:
        """The `n` most positive and most negative features with their weights."""
        names = self.vectorizer.get_feature_names_out()
        weights = self.classifier.coef_[0]
        order = np.argsort(weights)
        return {"positive": [(names[i], float(weights[i])) for i in order[::-1][:n]],
                "negative": [(names[i], float(weights[i])) for i in order[:n]]}
