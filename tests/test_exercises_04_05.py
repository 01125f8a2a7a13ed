"""The checks of notebooks 04 and 05 accept the reference and reject the stub and plausible wrong implementations.

``CASES``: (exercise, reference, [(wrong implementation, what the check's message must say)]);
tests/test_exercises.py runs every test file's CASES the same way. The tests below run this file's CASES on their
own too, and execute the notebooks' solution cells with nothing but the names a learner's cell may use.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers.exercises import EXERCISES, ExerciseFailed
from rlhf_helpers.exercises.learner import has_solution, solution_only, strip_solutions, stub_functions
from rlhf_helpers.exercises.ppo import _plain_gae
from rlhf_helpers.exercises.trl import grpo_advantages
from rlhf_helpers.ppo.advantages import compute_gae, leave_one_out_advantages, masked_mean, masked_whiten
from rlhf_helpers.ppo.kl import AdaptiveKLController, kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, clipped_value_loss

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["04_trl_walkthrough", "05_ppo_from_scratch"]


# -- 04 -------------------------------------------------------------------------------------------

def k3_reference(logprobs, ref_logprobs):
    return kl_penalty(logprobs, ref_logprobs, "k3")


def k3_is_k1(logprobs, ref_logprobs):
    return logprobs - ref_logprobs


def k3_reversed(logprobs, ref_logprobs):
    x = logprobs - ref_logprobs
    return torch.exp(x) - x - 1


def k3_is_k2(logprobs, ref_logprobs):
    return 0.5 * (logprobs - ref_logprobs) ** 2


def k3_without_minus_one(logprobs, ref_logprobs):
    x = ref_logprobs - logprobs
    return torch.exp(x) - x


def grpo_batch_std(rewards, k):
    grouped = rewards.view(-1, k)
    return (grouped - grouped.mean(1, keepdim=True)).view(-1) / (rewards.std() + 1e-4)


def grpo_whole_batch(rewards, k):
    return (rewards - rewards.mean()) / (rewards.std() + 1e-4)


def grpo_biased_std(rewards, k):
    grouped = rewards.view(-1, k)
    return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, unbiased=False, keepdim=True) + 1e-4)).view(-1)


def grpo_no_std(rewards, k):
    grouped = rewards.view(-1, k)
    return (grouped - grouped.mean(1, keepdim=True)).view(-1)


def grpo_tiled(rewards, k):
    return grpo_advantages(rewards.view(k, -1).T.reshape(-1), k).view(-1, k).T.reshape(-1)


def rloo_reference(rewards, k):
    return leave_one_out_advantages(rewards, k)


def rloo_includes_itself(rewards, k):
    grouped = rewards.view(-1, k)
    return (grouped - grouped.mean(1, keepdim=True)).view(-1)


def rloo_whole_batch(rewards, k):
    return rewards - (rewards.sum() - rewards) / (rewards.numel() - 1)


def rloo_divided_by_k(rewards, k):
    grouped = rewards.view(-1, k)
    return (grouped - (grouped.sum(1, keepdim=True) - grouped) / k).view(-1)


def rloo_tiled(rewards, k):
    return leave_one_out_advantages(rewards.view(k, -1).T.reshape(-1), k).view(-1, k).T.reshape(-1)


# -- 05: masked statistics ------------------------------------------------------------------------

def mean_everywhere(values, mask):
    return values.mean()


def mean_divided_by_all(values, mask):
    return (values * mask).mean()


def mean_of_row_means(values, mask):
    return ((values * mask).sum(1) / mask.sum(1)).mean()


def whiten_everywhere(values, mask):
    return (values - values.mean()) / (values.std() + 1e-8)


def whiten_biased(values, mask):
    real = values[mask.bool()]
    return torch.where(mask.bool(), (values - real.mean()) / real.std(unbiased=False), torch.zeros_like(values))


def whiten_padding_kept(values, mask):
    real = values[mask.bool()]
    return (values - real.mean()) / real.std()


# -- 05: per-token rewards ------------------------------------------------------------------------

def rewards_reference(scores, logprobs, ref_logprobs, mask, kl_coef):
    return per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, estimator="k1")[0]


def make_rewards(score_at="last_real", sign=-1.0, use_beta=True, mask_penalty=True):
    def rewards_fn(scores, logprobs, ref_logprobs, mask, kl_coef):
        kl = logprobs - ref_logprobs
        if mask_penalty:
            kl = kl * mask
        rewards = sign * (kl_coef if use_beta else 1.0) * kl
        last = mask.sum(1).long() - 1 if score_at == "last_real" else torch.full((len(scores),), mask.shape[1] - 1)
        rewards[torch.arange(len(scores)), last] += scores
        return rewards
    return rewards_fn


# -- 05: GAE --------------------------------------------------------------------------------------

def gae_loop(rewards, values, mask, gamma=1.0, lam=0.95):
    advantages = _plain_gae(rewards, values, mask, gamma, lam)
    return advantages, (advantages + values) * mask


def gae_unmasked(rewards, values, mask, gamma=1.0, lam=0.95):
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def gae_without_lambda(rewards, values, mask, gamma=1.0, lam=0.95):
    return gae_loop(rewards, values, mask, gamma, 1.0)


def gae_next_value_is_current(rewards, values, mask, gamma=1.0, lam=0.95):
    advantages = _plain_gae(rewards, values, mask, gamma, lam, next_offset=0)
    return advantages, (advantages + values) * mask


def gae_returns_are_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    advantages, _ = compute_gae(rewards, values, mask, gamma, lam)
    return advantages, advantages


def gae_returns_minus_values(rewards, values, mask, gamma=1.0, lam=0.95):
    advantages, _ = compute_gae(rewards, values, mask, gamma, lam)
    return advantages, (advantages - values) * mask


# -- 05: the losses -------------------------------------------------------------------------------

def _masked(x, mask):
    return (x * mask).sum() / mask.sum()


def policy_loss_reference(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    return clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)[0]


def make_policy_loss(reduce="max", clip=True, over="real", ratio_way="new/old", detach=False):
    def policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
        log_ratio = logprobs - old_logprobs if ratio_way == "new/old" else old_logprobs - logprobs
        ratio = torch.exp(log_ratio)
        if detach:
            ratio = ratio.detach()
        clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range) if clip else ratio
        per_token = (torch.max if reduce == "max" else torch.min)(-ratio * advantages, -clipped * advantages)
        return per_token.mean() if over == "all" else _masked(per_token, mask)
    return policy_loss


def value_loss_reference(values, old_values, returns, mask, clip_range_value=0.2):
    return clipped_value_loss(values, old_values, returns, mask, clip_range_value)[0]


def make_value_loss(around="old", reduce="max", half=True, over="real"):
    def value_loss(values, old_values, returns, mask, clip_range_value=0.2):
        if around == "old":
            clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
        else:
            clipped = torch.clamp(values, -clip_range_value, clip_range_value)
        per_token = (torch.max if reduce == "max" else torch.min)((values - returns) ** 2, (clipped - returns) ** 2)
        loss = per_token.mean() if over == "all" else _masked(per_token, mask)
        return 0.5 * loss if half else loss
    return value_loss


# -- 05: the adaptive KL controller ---------------------------------------------------------------

def kl_update_reference(beta, kl, target, horizon, n_steps):
    return AdaptiveKLController(beta, target, horizon).update(kl, n_steps)


def make_kl_update(clip=True, sign=1.0, use_n_steps=True):
    def adaptive_kl_update(beta, kl, target, horizon, n_steps):
        error = kl / target - 1
        if clip:
            error = min(max(error, -0.2), 0.2)
        return beta * (1 + sign * error * (n_steps if use_n_steps else 1) / horizon)
    return adaptive_kl_update


CASES = [
    ("k3_kl", k3_reference, [
        (k3_is_k1, "that is k1"),
        (k3_reversed, "the wrong way round"),
        (k3_is_k2, "that is k2"),
        (k3_without_minus_one, "the − 1 is missing"),
    ]),
    ("group_normalised_advantages", grpo_advantages, [
        (grpo_batch_std, "the std is the whole batch's"),
        (grpo_whole_batch, "normalised over the whole batch"),
        (grpo_biased_std, "biased std"),
        (grpo_no_std, "not divided by the group's std"),
        (grpo_tiled, "groups are read the wrong way"),
    ]),
    ("rloo_advantages", rloo_reference, [
        (rloo_includes_itself, "includes the sample itself"),
        (rloo_whole_batch, "whole batch"),
        (rloo_divided_by_k, "there are k − 1 others"),
        (rloo_tiled, "groups are read the wrong way"),
    ]),
    ("masked_mean", masked_mean, [
        (mean_everywhere, "padding included"),
        (mean_divided_by_all, "divided by B*T"),
        (mean_of_row_means, "mean of per-row means"),
    ]),
    ("masked_whiten", masked_whiten, [
        (whiten_everywhere, "whitened over the padding"),
        (whiten_biased, "biased std"),
        (whiten_padding_kept, "the padding is not 0"),
    ]),
    ("per_token_rewards", rewards_reference, [
        (make_rewards(score_at="last_column"), "last *column*"),
        (make_rewards(sign=+1.0), "sign is flipped"),
        (make_rewards(use_beta=False), "not multiplied by kl_coef"),
        (make_rewards(mask_penalty=False), "the padding is charged"),
    ]),
    ("compute_gae", compute_gae, [
        (gae_unmasked, "bootstrapped from the padding"),
        (gae_without_lambda, "λ is missing"),
        (gae_next_value_is_current, "off by one in the next value"),
        (gae_returns_are_advantages, "returns equal the advantages"),
        (gae_returns_minus_values, "returns are A_t − V_t"),
    ]),
    ("clipped_policy_loss", policy_loss_reference, [
        (make_policy_loss(reduce="min"), "min of the two *loss* terms"),
        (make_policy_loss(clip=False), "there is no clipping"),
        (make_policy_loss(over="all"), "padding included"),
        (make_policy_loss(ratio_way="old/new"), "the ratio is the wrong way round"),
        (make_policy_loss(detach=True), "carries no gradient"),
    ]),
    ("clipped_value_loss", value_loss_reference, [
        (make_value_loss(around="zero"), "clipped the value around 0"),
        (make_value_loss(reduce="min"), "min instead of max"),
        (make_value_loss(half=False), "the ½ is missing"),
        (make_value_loss(over="all"), "padding included"),
    ]),
    ("adaptive_kl_update", kl_update_reference, [
        (make_kl_update(clip=False), "the error is not clipped"),
        (make_kl_update(sign=-1.0), "the sign is flipped"),
        (make_kl_update(use_n_steps=False), "n_steps is ignored"),
    ]),
]

WRONG = [(name, wrong, fragment) for name, _, wrongs in CASES for wrong, fragment in wrongs]


def stub(*args, **kwargs):
    raise NotImplementedError()


def test_every_exercise_of_04_and_05_has_cases():
    registered = {name for name, e in EXERCISES.items() if e.notebook in ("04", "05")}
    assert registered == {name for name, _, _ in CASES}
    assert len(registered) >= 10


def test_the_hand_written_references_equal_the_package():
    """`_plain_gae` (the wrong implementations' base) is GAE itself with its switches off."""
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(7)[None] < torch.tensor([7, 3, 5])[:, None]).float()
    rewards, values = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.7)]:
        assert torch.allclose(gae_loop(rewards, values, mask, gamma, lam)[0],
                              compute_gae(rewards, values, mask, gamma, lam)[0], atol=1e-6)


# The reference / stub / wrong-implementation tests of these CASES run in tests/test_exercises.py.

# Their solution cells run with only torch/F/math/np/pd in tests/test_exercises.py (test_solution_cells_pass_their_checks_with_only_the_allowed_names).
