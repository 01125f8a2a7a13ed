"""Checks of notebook 04's exercises: what TRL's GRPO and RLOO trainers compute, written by the learner.

* ``group_normalised_advantages``: GRPO's advantage, each reward centred and scaled within its prompt's group, against
  the three lines of TRL 1.16's `GRPOTrainer._generate_and_score_completions` written out here (`grpo_advantages`:
  the package has no function of its own for it, since it trains GRPO through TRL).
* ``k3_kl``: the per-token KL estimate of `trl.GRPOTrainer` (Schulman's k3), against
  `rlhf_helpers.ppo.kl.kl_penalty(..., "k3")`.
* ``rloo_advantages``: RLOO's leave-one-out baseline, against `rlhf_helpers.ppo.advantages.leave_one_out_advantages`.

Rewards come flat, ``[N * k]``, with the k completions of a prompt next to each other (TRL's ``RepeatSampler``).
"""

from __future__ import annotations

import torch

from ..ppo.advantages import leave_one_out_advantages as reference_leave_one_out
from ..ppo.kl import kl_penalty as reference_kl_penalty
from .checking import call, exercise, expect_close, passed

__all__ = ["check_group_normalised_advantages", "check_k3_kl", "check_rloo_advantages"]

GRPO_STD_EPS = 1e-4  # TRL 1.16: advantages / (std_rewards + 1e-4)


# ----------------------------------------------------------------------------------------------
# Exercise 4.1: GRPO's group-normalised advantages
# ----------------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``[N * k]`` -> ``[N * k]``: (r − group mean) / (group std + 1e-4), the unbiased std of each prompt's k rewards,
    as TRL 1.16's `GRPOTrainer` with its default ``scale_rewards="group"``."""
    grouped = rewards.reshape(-1, k)
    centred = grouped - grouped.mean(1, keepdim=True)
    return (centred / (grouped.std(1, keepdim=True) + GRPO_STD_EPS)).reshape(rewards.shape)


def _group_cases(seed: int = 1) -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 3.0, 0.3]).repeat_interleave(4)  # groups of different spreads and means
    offsets = torch.tensor([0.0, 5.0, -2.0]).repeat_interleave(4)
    return [
        ("N=3 prompts, k=4, groups of different means and spreads", torch.randn(12, generator=g) * scales + offsets, 4),
        ("N=2, k=3, the second group's rewards all equal (std 0: advantages 0)",
         torch.tensor([1.0, 2.0, 4.0, 0.5, 0.5, 0.5]), 3),
        ("N=4, k=2", torch.randn(8, generator=g) * 2 + torch.arange(4.0).repeat_interleave(2), 2),
    ]


@exercise("04", "group_normalised_advantages", difficulty=2, importance=4, minutes=10)
def check_group_normalised_advantages(fn) -> None:
    """`fn(rewards [N * k], k) -> [N * k]`: each reward centred on its group's mean and divided by its group's
    unbiased std + 1e-4 (TRL 1.16's GRPO default)."""
    cases = _group_cases()
    for case, rewards, k in cases:
        expected = grpo_advantages(rewards, k)
        answer = call(fn, rewards.clone(), k, case=case)
        grouped = rewards.reshape(-1, k)
        centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
        tiled = rewards.reshape(k, -1).T  # column j of the tiled layout read as prompt j
        tiled = ((tiled - tiled.mean(1, keepdim=True)) / (tiled.std(1, keepdim=True) + GRPO_STD_EPS)).T.reshape(-1)
        expect_close(answer, expected, "group_normalised_advantages", case=case, atol=1e-4, diagnoses=[
            (centred / (rewards.std() + GRPO_STD_EPS),
             "the mean is the group's but the std is the whole batch's (TRL's scale_rewards=\"batch\"): divide by the "
             "std of the prompt's own k rewards."),
            ((rewards - rewards.mean()) / (rewards.std() + GRPO_STD_EPS),
             "you normalised over the whole batch: the mean and std are those of each prompt's group of k rewards "
             "(rewards.view(-1, k) along dim 1)."),
            ((centred.reshape(-1, k) / (grouped.std(1, unbiased=False, keepdim=True) + GRPO_STD_EPS)).reshape(-1),
             "that is the biased std (divided by k): TRL uses the unbiased one (k − 1), torch.std's default."),
            (centred, "the rewards are centred but not divided by the group's std (that is Dr. GRPO, TRL's "
                      "scale_rewards=\"none\"): divide by std + 1e-4."),
            (tiled, "the groups are read the wrong way: the k completions of a prompt are *adjacent* "
                    "(rewards.view(-1, k)), not one every N (view(k, -1))."),
        ])
    passed("group_normalised_advantages", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 4.2: TRL's k3 KL estimator
# ----------------------------------------------------------------------------------------------


def _kl_cases(seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(4, 10, generator=g) * 5
    near = -torch.rand(3, 6, generator=g) * 2
    far = -torch.rand(2, 5, generator=g) * 8
    return [
        ("B=4, T=10, log-ratios of about ±1", logprobs, logprobs + torch.randn(4, 10, generator=g)),
        ("B=3, T=6, policy = reference (every estimate 0)", near, near.clone()),
        ("B=2, T=5, log-ratios up to ±6", far, far + (torch.rand(2, 5, generator=g) - 0.5) * 12),
    ]


@exercise("04", "k3_kl", difficulty=1, importance=4, minutes=5)
def check_k3_kl(fn) -> None:
    """`fn(logprobs [B, T], ref_logprobs [B, T]) -> [B, T]`: TRL's per-token k3, ``exp(ref - logp) - (ref - logp) - 1``,
    as `rlhf_helpers.ppo.kl.kl_penalty(logprobs, ref_logprobs, "k3")`."""
    cases = _kl_cases()
    for case, logp, ref in cases:
        expected = reference_kl_penalty(logp, ref, "k3")
        answer = call(fn, logp.clone(), ref.clone(), case=case)
        log_ratio = ref - logp  # log(pi_ref / pi_theta)
        expect_close(answer, expected, "k3_kl", case=case, atol=1e-4, diagnoses=[
            (logp - ref, "that is k1, logp − ref_logp: unbiased too, but negative on single tokens. k3 is "
                         "exp(ref − logp) − (ref − logp) − 1, which is never negative."),
            (torch.expm1(-log_ratio) + log_ratio, "the log-ratio is the wrong way round: k3 uses log r = ref_logp − logp "
                                                  "(r = π_ref / π_θ), because the tokens were sampled from π_θ; "
                                                  "exp(logp − ref) − (logp − ref) − 1 estimates KL(π_ref ‖ π_θ) instead."),
            (0.5 * log_ratio ** 2, "that is k2 = ½ (log r)²: close to k3 when the models are close, but biased. k3 is "
                                   "(r − 1) − log r with r = exp(ref − logp)."),
            (log_ratio, "that is −k1 = ref − logp: k3 is exp(ref − logp) − (ref − logp) − 1."),
            (torch.exp(log_ratio) - log_ratio, "the − 1 is missing: without it the estimate is 1 where the models agree."),
            (torch.expm1(log_ratio), "that is r − 1 alone: it averages to 0 under π_θ; k3 subtracts log r from it."),
        ])
    passed("k3_kl", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 4.3: RLOO's leave-one-out baseline
# ----------------------------------------------------------------------------------------------


def _rloo_cases(seed: int = 2) -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("N=3 prompts, k=4, groups of different means",
         torch.randn(12, generator=g) + torch.tensor([0.0, 4.0, -3.0]).repeat_interleave(4), 4),
        ("N=2, k=2 (the baseline is the other completion's reward)", torch.tensor([1.0, 3.0, -2.0, 5.0]), 2),
        ("N=4, k=3", torch.randn(12, generator=g) * 2 + torch.arange(4.0).repeat_interleave(3), 3),
    ]


@exercise("04", "rloo_advantages", difficulty=2, importance=4, minutes=10)
def check_rloo_advantages(fn) -> None:
    """`fn(rewards [N * k], k) -> [N * k]`: each reward minus the mean of the other k − 1 rewards of its prompt,
    as `rlhf_helpers.ppo.advantages.leave_one_out_advantages`."""
    cases = _rloo_cases()
    for case, rewards, k in cases:
        expected = reference_leave_one_out(rewards, k)
        answer = call(fn, rewards.clone(), k, case=case)
        grouped = rewards.reshape(-1, k)
        sums = grouped.sum(1, keepdim=True)
        n = rewards.numel()
        tiled = reference_leave_one_out(rewards.reshape(k, -1).T.contiguous(), k).T.reshape(-1)
        expect_close(answer, expected, "rloo_advantages", case=case, atol=1e-5, diagnoses=[
            ((grouped - sums / k).reshape(-1), "the baseline includes the sample itself (r − group mean): leave it out, "
                                               "b_i = (Σ_j r_j − r_i) / (k − 1), so the baseline does not depend on y_i."),
            (rewards - (rewards.sum() - rewards) / (n - 1),
             "you left one out of the whole batch: the baseline is the mean of the other k − 1 completions of the "
             "*same prompt* (rewards.view(-1, k))."),
            (rewards - rewards.mean(), "you centred on the whole batch's mean: the baseline is the mean of the other "
                                       "k − 1 completions of the same prompt."),
            ((grouped - (sums - grouped) / k).reshape(-1), "the others' sum is divided by k: there are k − 1 others."),
            (tiled, "the groups are read the wrong way: the k completions of a prompt are *adjacent* "
                    "(rewards.view(-1, k)), not one every N (view(k, -1))."),
        ])
    passed("rloo_advantages", len(cases))
