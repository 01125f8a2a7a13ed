"""Best-of-n sampling: the simplest way to optimise a reward model, and the baseline PPO must beat.

For each prompt draw n responses from the SFT policy, keep the one the reward model (the proxy) scores highest.
Nothing is trained; the "policy" is the sampling procedure, whose KL from the SFT policy is at most
``log n - (n - 1) / n`` nats (`best_of_n_kl`). Gao, Schulman & Hilton 2022 ("Scaling Laws for Reward Model
Overoptimization") fit the gold reward of best-of-n as ``d (alpha - beta d)`` with ``d = sqrt(KL)``.

`draw_candidates` samples ``n_max`` responses per prompt once and scores them; `best_of_n_curve` reads every
n that divides ``n_max`` off the same draws: the ``n_max`` draws of a prompt are cut into ``n_max / n`` disjoint
groups of n, the best of each group is kept, and the results are averaged (more groups: less noise for small n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import EvaluationConfig
from ..core.reward_fn import reward_scores
from ..policy.generation import sample_responses
from .overoptimisation import best_of_n_kl

__all__ = ["Candidates", "draw_candidates", "best_of_n_curve", "best_of_n_select"]


@dataclass
class Candidates:
    """``n_max`` scored responses for each of P prompts; arrays are ``[n_max, P]`` (draw, prompt)."""

    queries: list[str]
    """``[P]`` decoded prompts."""
    responses: list[list[str]]
    """``[n_max][P]`` decoded responses."""
    proxy: np.ndarray
    """The reward model's normalised score of query + response."""
    gold: np.ndarray
    """The gold judge's p(positive)."""
    verdicts: dict[str, np.ndarray]
    """Each judge's True / False verdict."""
    gold_name: str = "bag_of_words"
    """The judge whose p(positive) is `gold`."""

    @property
    def n_max(self) -> int:
        return self.proxy.shape[0]


@torch.no_grad()
def draw_candidates(policy_lm, tokenizer, prompts, reward_fn, judges: dict, gold: str = "bag_of_words",
                    n_max: int = 64, seed: int = EvaluationConfig.seed, min_tokens: int = 4, max_tokens: int = 16,
                    temperature: float = 1.0, batch_size: int = 256, progress: bool = True) -> Candidates:
    """Sample `n_max` responses per prompt (PPO's sampling: one length per response in ``[min_tokens,
    max_tokens]``) and score each with `reward_fn` and every judge; `gold` names the judge whose ``probability``
    is the gold reward. Draw k of every prompt uses the seeds ``seed + k`` (lengths and tokens)."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}.")
    if not callable(getattr(judges.get(gold), "probability", None)):
        raise ValueError(f"The gold judge {gold!r} must be one of the judges ({sorted(judges)}) and have a "
                         "probability(texts) method (e.g. BagOfWordsJudge).")
    responses, proxy, gold_p, verdicts, queries = [], [], [], {name: [] for name in judges}, None
    for k in tqdm(range(n_max), desc="best-of-n draws", disable=not progress):
        out = sample_responses(policy_lm, tokenizer, prompts, min_tokens, max_tokens, length_seed=seed + k,
                               seed=seed + k, temperature=temperature, batch_size=batch_size)
        queries = out.prompts
        texts = [q + r for q, r in zip(out.prompts, out.texts)]
        responses.append(out.texts)
        proxy.append(reward_scores(reward_fn(texts), len(texts), where="in draw_candidates").numpy())
        gold_p.append(np.asarray(judges[gold].probability(texts), dtype=float))
        for name, judge in judges.items():
            verdicts[name].append(np.asarray(judge(texts), dtype=bool))
    return Candidates(queries, responses, np.stack(proxy), np.stack(gold_p),
                      {name: np.stack(v) for name, v in verdicts.items()}, gold)


def best_of_n_select(proxy: np.ndarray, n: int) -> np.ndarray:
    """Indices ``[n_max / n, P]`` of the best draw (highest `proxy`) in each disjoint group of n draws.

    `proxy`: ``[n_max, P]``; group g holds draws ``g*n ... g*n + n - 1``; n must divide n_max."""
    n_max = proxy.shape[0]
    if n < 1 or n_max % n:
        raise ValueError(f"n must divide the number of draws ({n_max}), got n = {n}.")
    groups = proxy.reshape(n_max // n, n, -1)
    return groups.argmax(axis=1) + (np.arange(n_max // n) * n)[:, None]


def best_of_n_curve(candidates: Candidates, ns=None) -> list[dict]:
    """One row per n: ``n``, ``kl`` (the bound ``log n - (n - 1)/n``), ``reward`` (proxy), ``p_positive/<gold>``
    and ``positive_rate/<judge>`` of the kept responses, averaged over groups and prompts. Default `ns`: the
    powers of 2 up to ``n_max``."""
    n_max = candidates.n_max
    ns = ns or [2**i for i in range(n_max.bit_length()) if 2**i <= n_max and n_max % 2**i == 0]
    prompts = np.arange(candidates.proxy.shape[1])
    rows = []
    for n in ns:
        best = best_of_n_select(candidates.proxy, n)
        row = {"n": n, "kl": best_of_n_kl(n), "reward": float(candidates.proxy[best, prompts].mean()),
               f"p_positive/{candidates.gold_name}": float(candidates.gold[best, prompts].mean())}
        for name, v in candidates.verdicts.items():
            row[f"positive_rate/{name}"] = float(v[best, prompts].mean())
        rows.append(row)
    return rows
