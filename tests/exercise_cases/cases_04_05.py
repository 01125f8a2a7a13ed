"""Exercise cases of notebooks 04 and 05: TRL's GRPO / RLOO pieces and PPO's pieces.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

import math

import torch

from rlhf_helpers.exercises.ppo import _plain_gae
from rlhf_helpers.exercises.trl import grpo_advantages
from rlhf_helpers.ppo.advantages import compute_gae, leave_one_out_advantages, masked_mean, masked_whiten
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.ppo.kl import AdaptiveKLController, kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, clipped_value_loss, entropy_from_logits


# -- 04 -------------------------------------------------------------------------------------------

def make_grpo_loss(kl="k3", kl_times_ratio=True, reduce=None, surrogate="max", mask_padding=True):
    """GRPO's loss written out by hand, with optional bugs (the right one: all defaults)."""
    def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, beta, epsilon, loss_type):
        ratio = torch.exp(logprobs - old_logprobs)
        a = advantages[:, None]
        if surrogate == "max":
            per_token = torch.max(-ratio * a, -torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
        else:  # the min of the two loss terms
            per_token = torch.min(-ratio * a, -torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
        log_r = ref_logprobs - logprobs
        if kl == "k3":
            per_token_kl = torch.exp(log_r) - log_r - 1
        elif kl == "k1":
            per_token_kl = logprobs - ref_logprobs
        else:  # k3 with the log-ratio the wrong way round
            per_token_kl = torch.exp(-log_r) + log_r - 1
        if kl_times_ratio:
            per_token_kl = per_token_kl * ratio
        per_token = per_token + beta * per_token_kl
        weights = mask if mask_padding else torch.ones_like(mask)
        if (reduce or loss_type) == "grpo":
            return ((per_token * weights).sum(1) / weights.sum(1)).mean()
        return (per_token * weights).sum() / weights.sum()

    return grpo_loss


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


def grpo_without_epsilon(rewards, k):
    grouped = rewards.view(-1, k)
    return ((grouped - grouped.mean(1, keepdim=True)) / grouped.std(1, keepdim=True)).view(-1)


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


# -- 05: the log-probabilities of a response ------------------------------------------------------
# Each wrong implementation is the whole function as a learner might write it, one mistake in it.

def make_response_logprobs(window="right", positions=True, attention=True, temperature_op="divide",
                           normalise="log_softmax", zero_padding=True, no_grad=False):
    def response_logprobs(model, query_ids, query_mask, response_ids, response_mask, temperature=1.0):
        P, R = query_ids.shape[1], response_ids.shape[1]
        input_ids = torch.cat([query_ids, response_ids], 1)
        mask = torch.cat([query_mask, response_mask], 1).long()
        kwargs = {}
        if attention:
            kwargs["attention_mask"] = mask
        if positions:
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.set_grad_enabled(not no_grad and torch.is_grad_enabled()):
            logits = model(input_ids=input_ids, **kwargs).logits
        logits = logits[:, P - 1:-1] if window == "right" else logits[:, P:]
        if temperature_op == "divide":
            logits = logits / temperature
        elif temperature_op == "multiply":
            logits = logits * temperature
        if normalise == "log_softmax":
            logp = torch.log_softmax(logits, dim=-1)
        elif normalise == "softmax":
            logp = torch.softmax(logits, dim=-1)
        elif normalise == "wrong_axis":
            logp = torch.log_softmax(logits, dim=1)
        else:
            logp = logits
        picked = torch.gather(logp, 2, response_ids.unsqueeze(-1)).squeeze(-1)
        return picked * response_mask if zero_padding else picked
    return response_logprobs


def logprobs_reference(model, query_ids, query_mask, response_ids, response_mask, temperature=1.0):
    return response_logprobs(model, query_ids, query_mask, response_ids, response_mask, temperature)


# -- 05: the entropy ------------------------------------------------------------------------------

def entropy_log_of_softmax(logits):
    p = torch.softmax(logits, -1)
    return -(p * torch.log(p)).sum(-1)


def entropy_unclamped(logits):
    log_p = torch.log_softmax(logits, -1)
    return -(log_p.exp() * log_p).sum(-1)


def entropy_sign_flipped(logits):
    log_p = torch.log_softmax(logits, -1).clamp(min=torch.finfo(logits.dtype).min)
    return (log_p.exp() * log_p).sum(-1)


def entropy_in_bits(logits):
    log_p = torch.log_softmax(logits, -1).clamp(min=torch.finfo(logits.dtype).min)
    return -(log_p.exp() * log_p / math.log(2)).sum(-1)


def entropy_of_logits(logits):
    return -(torch.softmax(logits, -1) * logits).sum(-1)


def entropy_over_positions(logits):
    log_p = torch.log_softmax(logits, 1)
    return -(log_p.exp() * log_p).sum(-1)


# -- 05: the KL estimators ------------------------------------------------------------------------

def make_kl(k1_sign=1.0, k1_abs=False, k3="right", ignore_estimator=False):
    def kl(logprobs, ref_logprobs, estimator="k1"):
        log_r = ref_logprobs - logprobs
        if estimator == "k1" or ignore_estimator:
            k1 = k1_sign * (logprobs - ref_logprobs)
            return k1.abs() if k1_abs else k1
        if k3 == "reversed":
            return torch.exp(-log_r) + log_r - 1
        if k3 == "k2":
            return 0.5 * log_r ** 2
        if k3 == "no_minus_one":
            return torch.exp(log_r) - log_r
        return torch.exp(log_r) - 1 - log_r  # exp(x) - 1 rather than expm1: within the check's tolerance
    return kl


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


def gae_values_not_masked(rewards, values, mask, gamma=1.0, lam=0.95):
    """The rewards are masked, the values are not: the last real token bootstraps from a padded value."""
    rewards = rewards * mask
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B)
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
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
    ("grpo_loss", make_grpo_loss(), [
        (make_grpo_loss(kl="k1"), "the KL term is k1"),
        (make_grpo_loss(kl="reversed"), "log-ratio is the wrong way round"),
        (make_grpo_loss(kl_times_ratio=False), "not multiplied by the ratio"),
        (make_grpo_loss(surrogate="min"), "min of the two *loss* terms"),
        (make_grpo_loss(reduce="dapo"), "that is the \"dapo\" normalisation"),
        (make_grpo_loss(reduce="grpo"), "that is the \"grpo\" normalisation"),
        (make_grpo_loss(mask_padding=False), "padding included"),
    ]),
    ("group_normalised_advantages", grpo_advantages, [
        (grpo_batch_std, "the std is the whole batch's"),
        (grpo_whole_batch, "normalised over the whole batch"),
        (grpo_biased_std, "biased std"),
        (grpo_no_std, "not divided by the group's std"),
        (grpo_tiled, "groups are read the wrong way"),
        (grpo_without_epsilon, "divided by the group's std alone"),
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
    ("response_logprobs", logprobs_reference, [
        (make_response_logprobs(window="own"), "read from its own column"),
        (make_response_logprobs(temperature_op="none"), "the temperature is missing"),
        (make_response_logprobs(temperature_op="multiply"), "multiplied the logits by the temperature"),
        (make_response_logprobs(positions=False), "the position ids are the default"),
        (make_response_logprobs(positions=False, attention=False), "neither the attention mask nor position ids"),
        (make_response_logprobs(attention=False), "the attention mask is not passed"),
        (make_response_logprobs(normalise="softmax"), "these are probabilities"),
        (make_response_logprobs(normalise="wrong_axis"), "over the wrong axis"),
        (make_response_logprobs(normalise="none"), "raw logits"),
        (make_response_logprobs(zero_padding=False), "the padding is not 0"),
        (make_response_logprobs(no_grad=True), "no gradient reaches the model"),
    ]),
    ("entropy_from_logits", entropy_from_logits, [
        (entropy_log_of_softmax, "NaN or inf on large logits"),
        (entropy_unclamped, "NaN where a token is banned"),
        (entropy_sign_flipped, "the sign is flipped"),
        (entropy_in_bits, "entropy in bits"),
        (entropy_of_logits, "logits in place of the log-probabilities"),
        (entropy_over_positions, "wrong axis"),
    ]),
    ("kl_penalty", kl_penalty, [
        (make_kl(k1_sign=-1.0), "k1's sign is flipped"),
        (make_kl(k1_abs=True), "that is |k1|"),
        (make_kl(k3="reversed"), "k3's log-ratio is the wrong way round"),
        (make_kl(k3="k2"), "that is k2"),
        (make_kl(k3="no_minus_one"), "k3 misses its - 1"),
        (make_kl(ignore_estimator=True), "that is k1, where estimator='k3'"),
    ]),
    ("per_token_rewards", rewards_reference, [
        (make_rewards(score_at="last_column"), "last *column*"),
        (make_rewards(sign=+1.0), "sign is flipped"),
        (make_rewards(use_beta=False), "not multiplied by kl_coef"),
        (make_rewards(mask_penalty=False), "the padding is charged"),
    ]),
    ("compute_gae", compute_gae, [
        (gae_unmasked, "bootstrapped from the padding"),
        (gae_values_not_masked, "bootstraps from padded values"),
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
