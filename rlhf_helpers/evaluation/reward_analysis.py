"""What does the reward model reward? Length, words, and where it disagrees with the judges.

A learned reward model is a proxy: PPO pushes the policy towards whatever raises its score, whether or not a
human (here: an independent judge) would agree. Three cheap probes:

* `length_bias`: the reward's and the gold's mean by response length — a proxy that rises with length while the
  gold does not rewards length itself (Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations
  in RLHF").
* `word_attributions`: occlusion — the score of the text minus its score with one word left out, for every
  word (one batched call of the reward model).
* `disagreements`: the samples whose proxy rank and gold rank are furthest apart.
"""

from __future__ import annotations

import numpy as np

from ..core.reward_fn import reward_scores

__all__ = ["length_bias", "word_attributions", "disagreements"]


def length_bias(samples: list[dict], tokenizer, keys=("reward", "p_positive/bag_of_words")) -> dict:
    """Mean of each of `keys` per response length (tokens), and each key's Pearson correlation with the length.

    `samples`: `evaluate_policy` / `HeldOutEvaluator` samples (``query``, ``response`` and the `keys`). Returns
    ``{"by_length": {length: {key: mean, "n": count}}, "correlation": {key: r}}``.
    """
    lengths = np.array([len(tokenizer(s["response"], add_special_tokens=False)["input_ids"]) for s in samples])
    by_length = {}
    for length in sorted(set(lengths.tolist())):
        picked = [s for s, n in zip(samples, lengths) if n == length]
        by_length[int(length)] = {"n": len(picked), **{k: float(np.mean([s[k] for s in picked])) for k in keys}}
    correlation = {}
    for k in keys:
        values = np.array([s[k] for s in samples], dtype=float)
        ok = values.std() > 0 and lengths.std() > 0
        correlation[k] = float(np.corrcoef(lengths, values)[0, 1]) if ok else float("nan")
    return {"by_length": by_length, "correlation": correlation}


def word_attributions(reward_fn, text: str) -> list[tuple[str, float]]:
    """``[(word, score(text) - score(text without that word)), ...]`` for the whitespace-separated words of `text`.

    Positive: the word raises the reward. Occlusion ignores interactions between words (two words that only
    count together each look small), but it needs nothing from the model except its scores."""
    words = text.split(" ")
    variants = [text] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    scores = reward_scores(reward_fn(variants), len(variants), where="in word_attributions").tolist()
    return [(word, scores[0] - s) for word, s in zip(words, scores[1:])]


def disagreements(samples: list[dict], proxy: str = "reward", gold: str = "p_positive/bag_of_words",
                  n: int = 5) -> dict[str, list[dict]]:
    """The `n` samples the proxy likes most more than the gold does (``"proxy_over_gold"``), and the reverse
    (``"gold_over_proxy"``), by the difference of their percentile ranks (ranks: the two scores live on different
    scales). Each sample gains ``rank_gap`` (proxy percentile - gold percentile, in [-1, 1])."""
    if len(samples) < 2:
        raise ValueError("disagreements needs at least 2 samples.")
    p = np.array([s[proxy] for s in samples], dtype=float)
    g = np.array([s[gold] for s in samples], dtype=float)
    percentile = lambda x: x.argsort().argsort() / (len(x) - 1)  # noqa: E731
    gap = percentile(p) - percentile(g)
    order = np.argsort(-gap)
    with_gap = [{**samples[i], "rank_gap": float(gap[i])} for i in range(len(samples))]
    return {"proxy_over_gold": [with_gap[i] for i in order[:n]],
            "gold_over_proxy": [with_gap[i] for i in order[::-1][:n]]}
