"""Checks of notebook 06's exercises: one PPO step written out — the rollout, then the update.

Both run on a random 1-layer GPT-2 with the course's tokenizer and a toy reward, against the package's
`collect_rollout` and `ppo_update` on the same seeds, prompts and starting weights: the learner's step must give
the same rollout (every field) and the same updated weights. The update is compared optimiser step by optimiser
step (hooks record each mini-batch's rows, its gradient before and after clipping), so a wrong update is named by
the first quantity that parts from the reference's, not by a weight index.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..config import PPOConfig
from ..core.assets import shipped_tokenizer_dir
from ..data.tokenizer import load_tokenizer
from ..ppo.rollout import Rollout, collect_rollout
from ..ppo.trainer import minibatch_seed, ppo_update
from ..ppo.value_head import PolicyWithValueHead
from .checking import ExerciseFailed, call, exercise, expect, expect_close, passed

__all__ = ["check_rollout", "check_ppo_update"]

PROMPTS = ["The movie was", "I rented this", "This film is", "What a", "Honestly the acting", "My wife and I",
           "The plot", "It is a shame"]


def letter_reward(texts: list[str]) -> torch.Tensor:
    """A toy reward for the checks: how often the letter 'e' appears (deterministic, cheap). ``[N]``."""
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


def _setup(seed: int = 0):
    """A random tiny policy (with value head), a reference that differs from it, the tokenizer, prompts, config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(shipped_tokenizer_dir())
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


# ----------------------------------------------------------------------------------------------
# Exercise 6.2: the update, traced mini-batch by mini-batch
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Step:
    """What one optimiser step of an update saw: the rollout rows of its forward passes, the weights it started
    from, the gradient before clipping (as backward left it) and after (as optimizer.step() found it)."""

    rows: list[int]
    weights: torch.Tensor
    gradient: torch.Tensor
    clipped: torch.Tensor


class _Tracer:
    """Records, around any implementation of the update, each optimiser step as a `_Step`.

    Hooks only, nothing the learner calls is replaced: a forward hook on the token embedding (every forward pass,
    padded or packed, goes through it) says which rollout rows a mini-batch used; post-accumulate-grad hooks keep
    each parameter's gradient as backward leaves it, before any clipping; a step pre-hook on the optimiser closes
    the mini-batch.
    """

    def __init__(self, policy, optimizer, rollout: Rollout):
        self.params = list(policy.parameters())
        self.sequences = [torch.cat([q[qm.bool()], r[rm.bool()]]).tolist() for q, qm, r, rm in
                          zip(rollout.query_ids, rollout.query_mask, rollout.response_ids, rollout.response_mask)]
        self.steps: list[_Step] = []
        self.rows: set[int] = set()
        self.accumulated: dict[int, torch.Tensor] = {}
        self.handles = [policy.lm.get_input_embeddings().register_forward_hook(self._forward),
                        optimizer.register_step_pre_hook(self._step)]
        self.handles += [p.register_post_accumulate_grad_hook(lambda p, i=i: self._accumulated(i, p))
                         for i, p in enumerate(self.params)]

    def _accumulated(self, index: int, param) -> None:
        self.accumulated[index] = param.grad.detach().clone()

    def _forward(self, module, args, output) -> None:
        ids = args[0] if args else None
        if not isinstance(ids, torch.Tensor):
            return
        for row in ids.reshape(-1, ids.shape[-1]).tolist():
            for b, sequence in enumerate(self.sequences):
                n = len(sequence)
                if any(row[s : s + n] == sequence for s in range(len(row) - n + 1)):
                    self.rows.add(b)

    def _flat(self, grads) -> torch.Tensor:
        return torch.cat([(g if g is not None else torch.zeros_like(p)).detach().flatten().clone()
                          for g, p in zip(grads, self.params)])

    def _step(self, optimizer, args, kwargs) -> None:
        before = [self.accumulated.get(i) for i in range(len(self.params))]
        self.steps.append(_Step(sorted(self.rows), torch.cat([p.detach().flatten().clone() for p in self.params]),
                                self._flat(before), self._flat([p.grad for p in self.params])))
        self.rows, self.accumulated = set(), {}

    def close(self) -> list[_Step]:
        for handle in self.handles:
            handle.remove()
        return self.steps


def _traced(fn, start, rollout, settings, accelerator, case: str):
    """Run `fn` (an update) on a copy of `start` with a fresh Adam; its steps, final weights and return value."""
    policy = copy.deepcopy(start)
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    tracer = _Tracer(policy, optimizer, rollout)
    try:
        stats = call(fn, policy, optimizer, accelerator, rollout, settings, 0, case=case)
    finally:
        steps = tracer.close()
    return steps, _flat(policy), stats


def _minibatch_gradient(start, weights, rollout, rows, config, whiten="mini-batch", vf_coef=None, parts=("pg", "vf")):
    """The gradient of one mini-batch's loss at `weights`, written as the package computes it, with switches for the
    usual mistakes: advantages whitened per mini-batch / once over the rollout / not at all; the value loss's
    coefficient; the policy part or the value part alone."""
    from ..ppo.advantages import masked_whiten
    from ..ppo.losses import clipped_policy_loss, clipped_value_loss
    from ..ppo.value_head import response_logprobs_and_values

    policy = copy.deepcopy(start)
    torch.nn.utils.vector_to_parameters(weights.clone(), policy.parameters())
    policy.eval()
    idx = torch.tensor(rows)
    mask = rollout.response_mask[idx]
    advantages = {"mini-batch": lambda: masked_whiten(rollout.advantages[idx], mask),
                  "rollout": lambda: masked_whiten(rollout.advantages, rollout.response_mask)[idx],
                  "none": lambda: rollout.advantages[idx]}[whiten]()
    logprobs, _, values = response_logprobs_and_values(policy, rollout.query_ids[idx], rollout.query_mask[idx],
                                                       rollout.response_ids[idx], mask, config.temperature)
    loss = 0.0
    if "pg" in parts:
        loss = loss + clipped_policy_loss(logprobs, rollout.logprobs[idx], advantages, mask, config.clip_range)[0]
    if "vf" in parts:
        vf_loss = clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask, config.clip_range_value)[0]
        loss = loss + (config.vf_coef if vf_coef is None else vf_coef) * vf_loss
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in policy.parameters()])


def _agree(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-3) -> bool:
    """Two gradients (or weight vectors) equal up to float noise: relative to the size of the expected one."""
    return a.shape == b.shape and float((a - b).norm()) <= rtol * float(b.norm()) + 1e-7


#: What `check_ppo_update` compares at each optimiser step, in this order; the first that differs is named.
UPDATE_QUANTITIES = ["the mini-batch's rows (the permutation)", "the whitened advantages", "the policy loss",
                     "the value loss", "the gradient norm (clipping)", "the number of optimiser steps"]


def _compare_updates(mine: list[_Step], expected: list[_Step], start, rollout, config, case: str) -> None:
    """Raise `ExerciseFailed` naming the first quantity of the first mini-batch where the learner's update and the
    reference's part ways (see `UPDATE_QUANTITIES`)."""
    per_epoch = config.batch_size // config.mini_batch_size
    generator = torch.Generator().manual_seed(minibatch_seed(config.seed, 0))
    orders = [torch.randperm(config.batch_size, generator=generator).tolist() for _ in range(config.ppo_epochs)]
    lm_size = sum(p.numel() for p in start.lm.parameters())  # the value head's weights come last

    def fail(i: int, message: str):
        where = f"mini-batch {i % per_epoch + 1} of epoch {i // per_epoch + 1}"
        raise ExerciseFailed(f"ppo_update, {where}: {message}\n  case: {case}")

    for i, (m, e) in enumerate(zip(mine, expected)):
        if not _agree(m.weights, e.weights, rtol=1e-5):  # only when the learner changes weights outside the steps
            fail(i, "the weights before this step differ from the reference's although every earlier mini-batch "
                    "agreed: change the weights through optimizer.step() only, once per mini-batch.")
        # 1. the permutation
        if m.rows and m.rows != e.rows:
            epoch, k = divmod(i, per_epoch)
            size = config.mini_batch_size
            if m.rows == sorted(range(k * size, (k + 1) * size)):
                why = ("the rollouts are taken in their stored order: shuffle them, order = torch.randperm("
                       "config.batch_size, generator=generator), a fresh permutation every epoch.")
            elif epoch > 0 and m.rows == sorted(orders[0][k * size : (k + 1) * size]):
                why = ("this epoch repeats the first epoch's order: create the generator ONCE, before the epochs "
                       "loop, and draw a new torch.randperm from it in every epoch.")
            elif len(m.rows) != size:
                why = f"it holds {len(m.rows)} rollouts: a mini-batch is config.mini_batch_size = {size} of them."
            else:
                why = ("draw the order with torch.randperm(config.batch_size, generator=generator), where generator = "
                       "torch.Generator().manual_seed(minibatch_seed(config.seed, step)), created once for the update.")
            fail(i, f"the permutation differs: this mini-batch holds rollouts {m.rows}, the reference's {e.rows}: "
                    f"{why}")
        # 2.-4. the gradient backward left: advantages, policy loss, value loss
        if not _agree(m.gradient, e.gradient):
            def gradient(**switches):
                return _minibatch_gradient(start, e.weights, rollout, e.rows, config, **switches)

            hypotheses = [
                (dict(whiten="rollout"), "the whitened advantages differ: you whitened them ONCE over the whole "
                 "rollout; whiten each mini-batch's advantages over its own real tokens, masked_whiten("
                 "rollout.advantages[idx], mask), as the reference does (its mean is exactly 0 in every mini-batch)."),
                (dict(whiten="none"), "the whitened advantages differ: the advantages are not whitened; use "
                 "masked_whiten(rollout.advantages[idx], mask) in each mini-batch."),
                (dict(vf_coef=1.0), "the value loss differs: it is not multiplied by config.vf_coef: loss = "
                 "pg_loss + config.vf_coef * vf_loss."),
                (dict(parts=("pg",)), "the value loss differs: it is missing from the loss: loss = pg_loss + "
                 "config.vf_coef * vf_loss (the value head learns from it)."),
            ]
            for switches, message in hypotheses:
                if _agree(m.gradient, gradient(**switches)):
                    fail(i, message)
            if i > 0 and _agree(m.gradient, e.gradient + mine[i - 1].clipped):
                fail(i, "the gradient differs: it holds the previous mini-batch's too: call optimizer.zero_grad() "
                        "after each optimizer.step() (gradients accumulate until they are zeroed).")
            head = slice(lm_size, None)
            if _agree(m.gradient[head], e.gradient[head]):
                fail(i, "the policy loss differs (its gradient on the language model does; the value head's, which "
                        "only the value loss reaches, agrees): clipped_policy_loss(logprobs, rollout.logprobs[idx], "
                        "whitened advantages, mask, config.clip_range), with the log-probs recomputed at "
                        "config.temperature.")
            fail(i, "the value loss differs (the value head's gradient, which only the value loss reaches, does): "
                    "clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask, "
                    "config.clip_range_value), times config.vf_coef, with the values recomputed in the same pass as "
                    "the log-probs. (Until it agrees, the policy loss cannot be told apart: both reach the language "
                    f"model's weights. Gradient norm before clipping {float(m.gradient.norm()):.6g}, expected "
                    f"{float(e.gradient.norm()):.6g}.)")
        # 5. the gradient norm
        if not _agree(m.clipped, e.clipped):
            norm, limit = float(e.gradient.norm()), config.max_grad_norm
            if _agree(m.clipped, m.gradient) and limit:
                fail(i, f"the gradient norm differs: it is {norm:.4g}, above config.max_grad_norm = {limit}, and was "
                        "not clipped: the weights are those of an update WITHOUT gradient clipping. Clip the gradient "
                        "norm to config.max_grad_norm after backward, before optimizer.step().")
            fail(i, f"the gradient norm differs: after clipping it is {float(m.clipped.norm()):.4g}, expected "
                    f"{float(e.clipped.norm()):.4g} (the norm before clipping is {norm:.4g}; clip to "
                    f"config.max_grad_norm = {limit}, once, with clip_grad_norm_).")
    # 6. the number of steps
    if len(mine) != len(expected):
        expected_count = f"config.ppo_epochs × (batch_size / mini_batch_size) = {config.ppo_epochs} × {per_epoch}"
        if len(mine) == per_epoch and config.ppo_epochs > 1:
            message = (f"the number of optimiser steps differs: {len(mine)}, expected {expected_count}: the weights "
                       "are those of ONE epoch. Loop over config.ppo_epochs, with a fresh permutation of the rollouts "
                       "in each (one generator for the whole update).")
        else:
            message = (f"the number of optimiser steps differs: {len(mine)}, expected {expected_count} = "
                       f"{len(expected)}: one per mini-batch.")
        raise ExerciseFailed(f"ppo_update: {message}\n  case: {case}")


@exercise("06", "ppo_update", difficulty=4, importance=5, minutes=30)
def check_ppo_update(fn) -> None:
    """`fn(policy, optimizer, accelerator, rollout, config, step) -> dict`, one process and one shard, as
    `rlhf_helpers.ppo.ppo_update`: the same mini-batches, losses and optimiser steps, hence the same weights.

    Both updates are traced step by step, and the first mini-batch where they part is named with the first quantity
    that differs: its rows (the permutation), the whitened advantages, the policy loss, the value loss, the gradient
    norm after clipping, the number of steps (`UPDATE_QUANTITIES`)."""
    from accelerate import Accelerator

    accelerator = Accelerator()  # the process's accelerate state (its mixed precision, whatever it is)
    start, reference, tokenizer, prompts, config = _setup()
    rollout = collect_rollout(start, reference, tokenizer, letter_reward, prompts, 0.1, config, step=0)
    cases = 0
    for label, settings in [("2 epochs of 2 mini-batches, gradient clipping 1.0", config),
                            ("4 epochs of 4 mini-batches of 2, clipping 0.5",
                             dataclasses.replace(config, ppo_epochs=4, mini_batch_size=2, max_grad_norm=0.5))]:
        expected_steps, expected, _ = _traced(ppo_update, start, rollout, settings, accelerator, label)
        steps, mine, stats = _traced(fn, start, rollout, settings, accelerator, label)
        expect(isinstance(stats, dict), f"ppo_update: return a dict of statistics, got {type(stats).__name__}.")
        expect(not torch.equal(mine, _flat(start)), "ppo_update: the weights did not change: call optimizer.step() "
               f"after backward (and zero the gradients after it).\n  case: {label}")
        _compare_updates(steps, expected_steps, start, rollout, settings, label)
        expect_close(mine, expected, "the policy's weights after the update", case=label, atol=2e-6, rtol=1e-4)
        cases += 1
    passed("ppo_update", cases)
