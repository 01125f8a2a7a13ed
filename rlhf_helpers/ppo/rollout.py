"""One PPO rollout: sample responses, score them, and turn scores into per-token rewards and advantages.

Steps 1–4 of a PPO step (`rlhf_helpers.ppo.trainer` has the whole list): sample a response for each prompt
the way `rlhf_helpers.policy.generation.sample_responses` does, score ``query + response`` with the reward
function, compute log-probs under the policy and the frozen reference and the values, then the per-token
rewards (`rlhf_helpers.ppo.kl.per_token_rewards`) and GAE advantages (`rlhf_helpers.ppo.advantages.compute_gae`).
No gradients flow here: a rollout is fixed data for the update.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..config import PPOConfig
from ..core.distributed import Shard, shard_seed
from ..core.reward_fn import reward_scores
from ..core.errors import NonFiniteLossError
from ..core.run import batch_indices
from ..core.run_card import Timer
from ..policy.generation import sample_responses
from ..policy.logprobs import response_logprobs
from .advantages import compute_gae, explained_variance, masked_mean
from .kl import per_token_rewards
from .value_head import response_logprobs_and_values


@dataclass
class Rollout:
    """One batch of experience. Shapes: B rollouts, P prompt tokens (left-padded), R response tokens."""

    query_ids: torch.Tensor  # [B, P]
    query_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R]
    logprobs: torch.Tensor  # [B, R] under the policy at rollout time ("old")
    ref_logprobs: torch.Tensor  # [B, R] under the frozen reference
    values: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B] normalised reward-model scores (after penalties / clipping)
    raw_scores: torch.Tensor  # [B] the reward model's output before normalisation, if it gives one
    rewards: torch.Tensor  # [B, R] per-token rewards: -beta * KL, + score at the last token
    kl: torch.Tensor  # [B, R] per-token KL estimates
    advantages: torch.Tensor  # [B, R]
    returns: torch.Tensor  # [B, R]
    queries: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# The pieces of one step
# ----------------------------------------------------------------------------------------------


def sample_prompt_batch(prompts: list[list[int]], batch_size: int, step: int, seed: int) -> list[list[int]]:
    """The prompts of `step`: a fresh seeded permutation per pass over the prompts (resumable), drawn by the one
    batch-order function of every loop (`rlhf_helpers.core.run.batch_indices`)."""
    if len(prompts) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(prompts)} prompts.")
    return [prompts[i] for i in batch_indices(step, len(prompts), batch_size, seed).tolist()]


def sampling_seeds(seed: int, step: int, shard: Shard | None = None) -> tuple[int, int]:
    """(token-sampling seed, response-length seed) of `step`'s `shard`.

    Pure functions of (seed, step, shard): a resumed run, and whichever process runs the shard, draw the same
    responses. Shard 0 of a 1-process run uses the un-sharded seeds (`rlhf_helpers.core.distributed.shard_seed`).
    """
    shard = shard or Shard(0, 1)
    return shard_seed(seed * 1_000_003 + step, shard), shard_seed(seed * 7_919 + step, shard)


@torch.no_grad()
def collect_rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef: float, config: PPOConfig,
                    step: int, timer: Timer | None = None, autocast=None, shard: Shard | None = None) -> Rollout:
    """Steps 1–4 above for one batch of prompts (token-id lists). No gradients.

    `autocast`: a context-manager factory (e.g. ``accelerator.autocast``) for sampling and the log-prob /
    value passes; the reward function runs outside it, at its own precision.
    `shard`: which shard of the step's batch these prompts are (`rlhf_helpers.core.distributed`): the sampling
    is seeded by (seed, step, shard), so a shard gets the same responses on whichever process runs it.
    """
    timer = timer or Timer()
    autocast = autocast or contextlib.nullcontext
    shard = shard or Shard(0, 1)
    device = next(policy.parameters()).device
    # on the policy's device: a CPU generator would copy every token's probabilities off the GPU
    token_seed, length_seed = sampling_seeds(config.seed, step, shard)
    generator = torch.Generator(device=device).manual_seed(token_seed)
    with timer("generate"), autocast():
        out = sample_responses(policy.lm, tokenizer, prompts, config.response_min_tokens, config.response_max_tokens,
                               length_seed=length_seed, temperature=config.temperature,
                               top_k=config.top_k, top_p=config.top_p, stop_at_eos=config.stop_at_eos,
                               generator=generator, fast=config.fast_path)
        query_ids, query_mask = out.query_ids.to(device), out.query_mask.to(device)
        response_ids, response_mask = out.response_ids.to(device), out.response_mask.to(device)
        responses = out.texts
    with timer("score"):
        texts = [q + r for q, r in zip(out.prompts, responses)]
        raw = reward_scores(reward_fn(texts), len(texts), where=f"at step {step}").to(device)
        if not torch.isfinite(raw).all():
            raise NonFiniteLossError(f"The reward function returned non-finite scores at step {step}: the last good "
                                     "checkpoint is kept; check the reward function, then run the same command again.")
        scores = raw.clone()
        if config.missing_eos_penalty is not None:
            has_eos = ((response_ids == tokenizer.eos_token_id) & response_mask.bool()).any(1)
            scores = scores - config.missing_eos_penalty * (~has_eos).float()
        if config.score_clip is not None:
            scores = scores.clamp(-config.score_clip, config.score_clip)
    with timer("forward"), autocast():
        logprobs, _, values = response_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask,
                                                           config.temperature, fast=config.fast_path)
        ref_logprobs = response_logprobs(reference, query_ids, query_mask, response_ids, response_mask, config.temperature,
                                         response_only=config.fast_path)
        rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef, config.kl_estimator)
        advantages, returns = compute_gae(rewards, values, response_mask, config.gamma, config.lam)
    return Rollout(query_ids, query_mask, response_ids, response_mask, logprobs, ref_logprobs, values, scores, raw,
                   rewards, kl, advantages, returns, out.prompts, responses)


def rollout_statistics(rollout: Rollout, kl_coef: float) -> dict:
    """Per-step numbers worth plotting: reward, KL, lengths, value fit."""
    mask = rollout.response_mask
    kl_per_response = (rollout.kl * mask).sum(1)
    return {
        "score": rollout.scores.mean().item(),
        "raw_score": rollout.raw_scores.mean().item(),
        "kl": kl_per_response.mean().item(),
        "kl_coef": kl_coef,
        "reward_total": (rollout.rewards * mask).sum(1).mean().item(),
        "response_length": mask.sum(1).float().mean().item(),
        "explained_variance": float(explained_variance(rollout.values, rollout.returns, mask)),
        "advantage_mean": masked_mean(rollout.advantages, mask).item(),
    }
