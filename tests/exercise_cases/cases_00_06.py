"""Exercise cases of notebooks 00 and 06: the closed-form optimum, the rollout, the PPO update.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

import dataclasses

import numpy as np
import torch

from rlhf_helpers.intro import optimal_policy
from rlhf_helpers.policy.generation import sample_responses
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.ppo import Rollout, collect_rollout, ppo_update
from rlhf_helpers.ppo.advantages import compute_gae, masked_whiten
from rlhf_helpers.ppo.kl import per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, clipped_value_loss
from rlhf_helpers.ppo.rollout import sampling_seeds
from rlhf_helpers.ppo.trainer import minibatch_seed
from rlhf_helpers.ppo.value_head import response_logprobs_and_values


# -- 00: the closed-form optimum ------------------------------------------------------------------

def optimal_policy_without_log_space(pi_ref, reward, beta):
    weights = pi_ref * np.exp(reward / beta)  # overflows for small beta
    return weights / weights.sum()


def optimal_policy_reward_times_beta(pi_ref, reward, beta):
    logits = np.log(pi_ref) + reward * beta
    w = np.exp(logits - logits.max())
    return w / w.sum()


def optimal_policy_unnormalised(pi_ref, reward, beta):
    return pi_ref * np.exp(np.minimum(reward / beta, 700))


# -- 06: the rollout ------------------------------------------------------------------------------

def make_rollout(kl_sign=1.0, lam=None, score_response_only=False):
    """A hand-written rollout, with optional bugs."""

    def rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef, config, step):
        token_seed, length_seed = sampling_seeds(config.seed, step)
        out = sample_responses(policy.lm, tokenizer, prompts, config.response_min_tokens, config.response_max_tokens,
                               length_seed=length_seed, temperature=config.temperature, top_k=config.top_k,
                               top_p=config.top_p, stop_at_eos=config.stop_at_eos,
                               generator=torch.Generator().manual_seed(token_seed))
        q, qm, r, rm = out.query_ids, out.query_mask, out.response_ids, out.response_mask
        texts = out.texts if score_response_only else [p + t for p, t in zip(out.prompts, out.texts)]
        scores = torch.as_tensor(reward_fn(texts), dtype=torch.float32)
        logprobs, _, values = response_logprobs_and_values(policy, q, qm, r, rm, config.temperature)
        ref_logprobs = response_logprobs(reference, q, qm, r, rm, config.temperature)
        rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, rm, kl_coef, config.kl_estimator)
        if kl_sign < 0:  # the bug: + kl_coef * KL_t (the package refuses a negative kl_coef, so flip it here)
            rewards = rewards + 2 * kl_coef * kl * rm
        advantages, returns = compute_gae(rewards, values, rm, config.gamma, config.lam if lam is None else lam)
        return Rollout(q, qm, r, rm, logprobs, ref_logprobs, values, scores, scores, rewards, kl, advantages, returns,
                       out.prompts, out.texts)

    return rollout


def reference_rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef, config, step):
    return collect_rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef, config, step)


# -- 06: the update -------------------------------------------------------------------------------

def make_update(epochs=None, clip_gradients=True, whiten="mini-batch", shuffle="once", vf_coef=None,
                zero_grad=True):
    """A hand-written update, with optional bugs: `whiten` "mini-batch" (right), "rollout" (once over the whole
    rollout) or "none"; `shuffle` "once" (one generator, right), "every epoch" (re-seeded each epoch) or "none"."""
    def update(policy, optimizer, accelerator, rollout, config, step):
        policy.eval()
        generator = torch.Generator().manual_seed(minibatch_seed(config.seed, step))
        whole = masked_whiten(rollout.advantages, rollout.response_mask)
        for _ in range(config.ppo_epochs if epochs is None else epochs):
            if shuffle == "every epoch":
                generator = torch.Generator().manual_seed(minibatch_seed(config.seed, step))
            order = (torch.arange(config.batch_size) if shuffle == "none"
                     else torch.randperm(config.batch_size, generator=generator))
            for start in range(0, config.batch_size, config.mini_batch_size):
                idx = order[start : start + config.mini_batch_size]
                mask = rollout.response_mask[idx]
                advantages = {"mini-batch": lambda: masked_whiten(rollout.advantages[idx], mask),
                              "rollout": lambda: whole[idx], "none": lambda: rollout.advantages[idx]}[whiten]()
                logprobs, _, values = response_logprobs_and_values(
                    policy, rollout.query_ids[idx], rollout.query_mask[idx], rollout.response_ids[idx], mask,
                    config.temperature)
                pg_loss, _ = clipped_policy_loss(logprobs, rollout.logprobs[idx], advantages, mask, config.clip_range)
                vf_loss, _ = clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask,
                                                config.clip_range_value)
                (pg_loss + (config.vf_coef if vf_coef is None else vf_coef) * vf_loss).backward()
                if clip_gradients and config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                if zero_grad:
                    optimizer.zero_grad()
        return {}

    return update


def update_with_the_old_values_as_returns(policy, optimizer, accelerator, rollout, config, step):
    """The value loss's target is the rollout's values instead of its returns (the policy loss is right)."""
    wrong = dataclasses.replace(rollout, returns=rollout.values + 0.5 * rollout.response_mask)
    return make_update()(policy, optimizer, accelerator, wrong, config, step)


def update_with_the_old_logprobs_from_the_reference(policy, optimizer, accelerator, rollout, config, step):
    """The ratio's denominator is the reference's log-probs instead of the rollout's (the value loss is right)."""
    wrong = dataclasses.replace(rollout, logprobs=rollout.ref_logprobs)
    return make_update()(policy, optimizer, accelerator, wrong, config, step)


def update_that_never_steps(policy, optimizer, accelerator, rollout, config, step):
    return {}


def reference_update(policy, optimizer, accelerator, rollout, config, step):
    return ppo_update(policy, optimizer, accelerator, rollout, config, step)


CASES = [
    ("optimal_policy", optimal_policy, [
        (optimal_policy_without_log_space, "NaN or inf"),
        (optimal_policy_reward_times_beta, "multiplied the reward by beta"),
        (optimal_policy_unnormalised, "does not sum to 1"),
    ]),
    ("rollout", reference_rollout, [
        (make_rollout(kl_sign=-1.0), "wrong sign"),
        (make_rollout(lam=1.0), "lambda = 1"),
        (make_rollout(score_response_only=True), "query + response"),
    ]),
    ("ppo_update", reference_update, [
        (make_update(epochs=1), "ONE epoch"),
        (make_update(clip_gradients=False), "WITHOUT gradient clipping"),
        (make_update(whiten="rollout"), "whitened them ONCE over the whole rollout"),
        (make_update(whiten="none"), "the advantages are not whitened"),
        (make_update(shuffle="none"), "taken in their stored order"),
        (make_update(shuffle="every epoch"), "repeats the first epoch's order"),
        (make_update(vf_coef=1.0), "not multiplied by config.vf_coef"),
        (make_update(zero_grad=False), "call optimizer.zero_grad()"),
        (update_with_the_old_values_as_returns, "the value loss differs"),
        (update_with_the_old_logprobs_from_the_reference, "the policy loss differs"),
        (update_that_never_steps, "did not change"),
    ]),
]
