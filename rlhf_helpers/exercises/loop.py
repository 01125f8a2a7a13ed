"""Checks of notebook 06's exercises: one PPO step written out — the rollout, then the update.

Both run on a random 1-layer GPT-2 with the course's tokenizer and a toy reward, against the package's
`collect_rollout` and `ppo_update` on the same seeds, prompts and starting weights: the learner's step must give
the same rollout (every field) and the same updated weights.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..config import PPOConfig
from ..core.assets import shipped_tokenizer_dir
from ..data.tokenizer import load_tokenizer
from ..ppo.rollout import Rollout, collect_rollout
from ..ppo.trainer import ppo_update
from ..ppo.value_head import PolicyWithValueHead
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_rollout", "check_ppo_update"]

PROMPTS = ["The movie was", "I rented this", "This film is", "What a", "Honestly the acting", "My wife and I",
           "The plot", "It is a shame"]


def letter_reward(texts: list[str]) -> torch.Tensor:
    """A toy reward for the checks: how often the letter 'e' appears (deterministic, cheap). ``[N]``."""
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


def _setup(seed: int = 0):
    """A random tiny policy (with value head), a reference that differs from it, the tokenizer, prompts, config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(shipped_tokenizer_dir("tiny"))
    torch.manual_seed(seed)
    lm_config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                           resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, eos_token_id=tokenizer.eos_token_id,
                           bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    lm = GPT2LMHeadModel(lm_config).eval()
    reference = copy.deepcopy(lm).requires_grad_(False)
    with torch.no_grad():  # move the policy off the reference, so the KL is not zero and its sign shows
        for p in lm.parameters():
            p.add_(0.02 * torch.randn_like(p))
    policy = PolicyWithValueHead(lm)
    with torch.no_grad():  # a value head that is not zero, so the values matter in GAE and the value loss
        for p in policy.value_head.parameters():
            p.normal_(0, 0.1)
    config = PPOConfig(batch_size=8, mini_batch_size=4, ppo_epochs=2, response_min_tokens=3, response_max_tokens=6,
                       learning_rate=1e-3, seed=seed, mixed_precision="no")
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    return policy, reference, tokenizer, prompts, config


FIELDS = [("response_ids", "the sampled tokens differ: sample with sample_responses, seeded by sampling_seeds(config.seed, step)"),
          ("response_mask", "the response mask differs: the lengths come from sample_responses's length_seed"),
          ("logprobs", "the policy's log-probs differ: response_logprobs_and_values at config.temperature"),
          ("ref_logprobs", "the reference's log-probs differ: response_logprobs(reference, ...), not the policy"),
          ("values", "the values differ: they come from the policy's value head, in the same pass as the log-probs"),
          ("scores", "the scores differ: score query + response (the whole text), not the response alone"),
          ("kl", "the per-token KL differs: per_token_rewards returns it, with config.kl_estimator"),
          ("rewards", "the per-token rewards differ: per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, ...)"),
          ("advantages", "the advantages differ: compute_gae(rewards, values, mask, config.gamma, config.lam)"),
          ("returns", "the returns differ: the second output of compute_gae")]


@exercise("06", "rollout", difficulty=3, importance=5, minutes=20)
def check_rollout(fn) -> None:
    """`fn(policy, reference, tokenizer, reward_fn, prompts, kl_coef, config, step) -> Rollout`, as
    `rlhf_helpers.ppo.collect_rollout`."""
    policy, reference, tokenizer, prompts, config = _setup()
    cases = 0
    for step, kl_coef in [(0, 0.2), (3, 0.05)]:
        case = f"8 prompts, step {step}, kl_coef {kl_coef}, a random 1-layer policy that differs from its reference"
        expected = collect_rollout(policy, reference, tokenizer, letter_reward, prompts, kl_coef, config, step)
        with torch.no_grad():
            answer = call(fn, policy, reference, tokenizer, letter_reward, prompts, kl_coef, config, step, case=case)
        expect(isinstance(answer, Rollout), f"rollout: return a rlhf_helpers.ppo.Rollout, got {type(answer).__name__}.")
        for name, message in FIELDS:
            mine, theirs = getattr(answer, name), getattr(expected, name)
            diagnoses = []
            if name == "rewards":
                flipped = expected.rewards + 2 * kl_coef * expected.kl * expected.response_mask
                diagnoses = [(flipped, "the KL penalty has the wrong sign: each token gets -kl_coef * KL_t.")]
            if name == "advantages":
                from ..ppo.advantages import compute_gae
                lam_one, _ = compute_gae(expected.rewards, expected.values, expected.response_mask, config.gamma, 1.0)
                diagnoses = [(lam_one, "these are GAE with lambda = 1: pass config.lam.")]
            expect_close(mine.float(), theirs.float(), f"rollout.{name}", case=case, atol=1e-5, diagnoses=diagnoses,
                         hint=message)
        cases += 1
    passed("rollout", cases)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@exercise("06", "ppo_update", difficulty=4, importance=5, minutes=30)
def check_ppo_update(fn) -> None:
    """`fn(policy, optimizer, accelerator, rollout, config, step) -> dict`, one process and one shard, as
    `rlhf_helpers.ppo.ppo_update`: the same mini-batches, losses and optimiser steps, hence the same weights."""
    from accelerate import Accelerator

    accelerator = Accelerator()  # the process's accelerate state (its mixed precision, whatever it is)
    start, reference, tokenizer, prompts, config = _setup()
    rollout = collect_rollout(start, reference, tokenizer, letter_reward, prompts, 0.1, config, step=0)
    cases = 0
    variants = [("expected", config), ("one epoch", dataclasses.replace(config, ppo_epochs=1)),
                ("no gradient clipping", dataclasses.replace(config, max_grad_norm=None))]
    for label, settings in [("2 epochs of 2 mini-batches, gradient clipping 1.0", config),
                            ("4 epochs of 4 mini-batches of 2, clipping 0.5",
                             dataclasses.replace(config, ppo_epochs=4, mini_batch_size=2, max_grad_norm=0.5))]:
        runs = {}
        for name, variant in [("expected", settings)] + (variants[1:] if settings is config else []):
            policy = copy.deepcopy(start)
            optimizer = torch.optim.Adam(policy.parameters(), lr=variant.learning_rate)
            ppo_update(policy, optimizer, accelerator, rollout, variant, step=0)
            runs[name] = _flat(policy)
        policy = copy.deepcopy(start)
        optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
        stats = call(fn, policy, optimizer, accelerator, rollout, settings, 0, case=label)
        expect(isinstance(stats, dict), f"ppo_update: return a dict of statistics, got {type(stats).__name__}.")
        mine = _flat(policy)
        expect(not torch.equal(mine, _flat(start)), "ppo_update: the weights did not change: call optimizer.step() "
               f"after backward (and zero the gradients after it).\n  case: {label}")
        diagnoses = [(runs["one epoch"], "the weights are those of ONE epoch: loop over config.ppo_epochs, with a "
                      "fresh permutation of the rollouts in each (one generator for the whole update)."),
                     (runs["no gradient clipping"], "the weights are those of an update WITHOUT gradient clipping: "
                      "clip the gradient norm to config.max_grad_norm before optimizer.step().")] if len(runs) > 1 else []
        expect_close(mine, runs["expected"], "the policy's weights after the update", case=label, atol=2e-6, rtol=1e-4,
                     diagnoses=diagnoses)
        cases += 1
    passed("ppo_update", cases)
