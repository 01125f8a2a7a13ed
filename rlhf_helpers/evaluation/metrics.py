"""Evaluate a policy on held-out prompts: reward, independent judges, KL to the reference, fluency.

For N held-out prompts, sample one response each with the PPO recipe (top-k 0, top-p 1, 4–16 tokens)
and report:

* ``reward``: mean normalised reward-model score (what PPO optimised);
* ``positive_rate/<judge>``: share of query + response texts a judge calls positive (independent);
* ``kl``: mean over responses of sum_t (log pi - log pi_ref), an unbiased estimate of
  KL(pi || pi_ref) per response, in nats (0 for the reference itself);
* ``ref_perplexity``: exp of the mean negative log-likelihood of the response tokens under the frozen
  reference — rises when the policy writes text the SFT model finds unlikely (a fluency proxy);
* ``distinct_1`` / ``distinct_2``: unique unigrams / bigrams over all responses (diversity; falls on
  mode collapse, e.g. "great great great").
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import EvaluationConfig
from ..core.reward_fn import reward_scores
from ..policy.generation import sample_responses
from ..policy.logprobs import response_logprobs
from ..policy.model import check_tokenizer_matches


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over `texts` (Li et al. 2016): 1.0 = no repetition at all."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def check_evaluation_inputs(policy_lm, reference_lm, tokenizer, prompts, reward_fn=None, judges=None) -> None:
    """The checks of `evaluate_policy` that need no sampling (also usable on their own, before a long run)."""
    if isinstance(prompts, str) or not hasattr(prompts, "__len__"):
        raise TypeError(f"prompts must be a list of prompts (token-id lists or strings); got a {type(prompts).__name__}.")
    if len(prompts) == 0:
        raise ValueError("evaluate_policy got no prompts (an empty list): pass at least one held-out prompt, e.g. "
                         "build_dataset(tokenizer, config, split='eval')['input_ids'][:256]; with the command line, "
                         "use --n-prompts >= 1.")
    check_tokenizer_matches(policy_lm, tokenizer, where="(the policy being evaluated)")
    check_tokenizer_matches(reference_lm, tokenizer, where="(the reference policy)")
    if reward_fn is not None and not callable(reward_fn):
        raise TypeError(f"reward_fn must be a function texts -> scores (e.g. scorer.score); got a {type(reward_fn).__name__}.")
    scorer = getattr(reward_fn, "__self__", None)
    if scorer is not None and callable(getattr(scorer, "check_same_tokenizer", None)):
        scorer.check_same_tokenizer(tokenizer)
    for name, judge in (judges or {}).items():
        if not callable(judge):
            raise TypeError(f"Judge {name!r} must be a function texts -> verdicts; got a {type(judge).__name__}.")


@torch.no_grad()
def evaluate_policy(policy_lm, reference_lm, tokenizer, prompts, reward_fn=None, judges: dict | None = None,
                    seed: int = EvaluationConfig.seed, temperature: float = 1.0, batch_size: int = 64, min_tokens: int = 4,
                    max_tokens: int = 16) -> tuple[dict, list[dict]]:
    """Metrics of `policy_lm` on `prompts` (token-id lists). Returns ``(metrics, samples)``.

    Responses are sampled as PPO samples them (`sample_responses`: full distribution, one length per response
    drawn from ``[min_tokens, max_tokens]``, not cut at EOS), with a fixed `seed` so every policy is judged on
    the same kind of draw.

    Refused with ValueError / TypeError before any sampling: no prompts; a tokenizer that is not the policy's or
    the reference's (`check_tokenizer_matches`, by fingerprint when the models record one) or, when `reward_fn` is
    a `RewardScorer`'s method, not the reward model's; afterwards, a reward function or judge that does not return
    one value per text.
    """
    check_evaluation_inputs(policy_lm, reference_lm, tokenizer, prompts, reward_fn, judges)
    out = sample_responses(policy_lm, tokenizer, prompts, min_tokens, max_tokens, length_seed=seed, seed=seed,
                           temperature=temperature, batch_size=batch_size)
    q_ids, q_mask, r_ids, r_mask = out.query_ids, out.query_mask, out.response_ids, out.response_mask
    queries, responses = out.prompts, out.texts
    texts = [q + r for q, r in zip(queries, responses)]
    device = next(policy_lm.parameters()).device
    logprobs, ref_logprobs = [], []
    for start in range(0, len(prompts), batch_size):
        part = slice(start, start + batch_size)
        args = [t[part].to(device) for t in (q_ids, q_mask, r_ids, r_mask)]
        logprobs.append(response_logprobs(policy_lm, *args, temperature=temperature))
        ref_logprobs.append(response_logprobs(reference_lm, *args, temperature=temperature))
    logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
    mask = r_mask.to(device).float()
    kl = ((logprobs - ref_logprobs) * mask).sum(1)
    metrics = {
        "n": len(prompts),
        "kl": kl.mean().item(),
        "ref_perplexity": math.exp(-(ref_logprobs * mask).sum().item() / mask.sum().item()),
        "response_length": mask.sum(1).mean().item(),
        "distinct_1": distinct_n(responses, 1),
        "distinct_2": distinct_n(responses, 2),
    }
    samples = [{"query": q, "response": r, "kl": k} for q, r, k in zip(queries, responses, kl.tolist())]
    if reward_fn is not None:
        scores = reward_scores(reward_fn(texts), len(texts), where="in evaluate_policy")
        metrics["reward"] = scores.mean().item()
        for sample, score in zip(samples, scores.tolist()):
            sample["reward"] = score
    for name, judge in (judges or {}).items():
        verdicts = np.asarray(judge(texts))
        if verdicts.shape != (len(texts),):
            raise ValueError(f"Judge {name!r} must return one verdict per text; got shape {verdicts.shape} for "
                             f"{len(texts)} texts.")
        metrics[f"positive_rate/{name}"] = float(verdicts.mean())
        for sample, verdict in zip(samples, verdicts.tolist()):
            sample[name] = bool(verdict)
    return metrics, samples
