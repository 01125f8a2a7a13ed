"""PPO for RLHF, from scratch: rollouts → rewards → advantages → clipped updates, on `accelerate`.

One PPO *step* (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022):

1. **Rollout.** Draw a batch of prompts; the policy samples a response of 4–16 tokens for each
   (top-k 0, top-p 1: the full distribution, so the KL estimate stays unbiased).
2. **Forward passes.** Log-probs and values of the sampled tokens under the policy (the "old" policy of
   this step) and log-probs under the frozen reference (the SFT model), at the sampling temperature.
3. **Rewards.** The reward model's normalised score of query + response at the last response token, and
   ``-beta * KL_t`` at every token (`rlhf_helpers.ppo.kl.per_token_rewards`).
4. **Advantages.** GAE(γ, λ) with the value head as baseline (`rlhf_helpers.ppo.advantages.compute_gae`).
5. **Update.** Several epochs over shuffled mini-batches of the clipped surrogate + ``vf_coef`` × the
   clipped value loss, advantages whitened per mini-batch, gradient clipping, and a guard that skips a
   mini-batch whose mean ratio explodes.
6. **KL control.** A fixed beta, or Ziegler et al.'s adaptive controller steering the KL to a target.

The implementation details that matter (our own list, drawn from Huang et al. 2023, "The N Implementation
Details of RLHF with PPO", and Ziegler et al. 2019), and where they are in this package:

1. Reward model and value function read query + response; the score lands on the last token → `kl.per_token_rewards`.
2. Left-padded prompts, attention masks and position ids from the mask → `policy.generation`, `core.tensors`.
3. Log-probs recomputed from ``logits / temperature`` with the sampling temperature → `policy.logprobs`.
4. Value head initialised to zero; no dropout in policy, reference or value passes → `value_head`.
5. Reward model output normalised (mean 0, std 1) on samples of the reference policy → `reward.training`.
6. Per-token KL penalty; γ = 1, λ = 0.95; advantages whitened per mini-batch → `config.PPOConfig`, `ppo_update`.
7. Clipped value loss; adaptive KL; learning rate annealed; seeds per process → `PPOConfig`, `PPOTrainer`.
8. Optional: penalise responses that never produced EOS (``missing_eos_penalty``).

This module: `ppo_update` (step 5) and `PPOTrainer` (the loop). Steps 1–4: `rlhf_helpers.ppo.rollout`.
"""


from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import PPOConfig, data_settings_of
from ..core.distributed import (
    Shard, agree, backward, mean_over_processes, micro_batch, optimizer_step, shard_seed, sum_over_processes,
)
from ..core.errors import NonFiniteLossError
from ..core.lock import run_lock
from ..core.precision import resolve_mixed_precision
from ..core.run import ResumableRun, finished_run_card
from ..core.files import permissions_from_umask
from ..core.run_card import Timer, write_run_card
from .advantages import masked_mean, masked_whiten_shards
from .kl import AdaptiveKLController, FixedKLController
from .losses import clipped_policy_loss, clipped_value_loss, entropy_from_log_softmax, entropy_from_logits
from .rollout import Rollout, collect_rollout, rollout_statistics, sample_prompt_batch
from .value_head import response_logprobs_and_values


def minibatch_seed(seed: int, step: int, shard: Shard | None = None) -> int:
    """The seed of the mini-batch order of `step`'s `shard` (one generator, a fresh permutation per epoch)."""
    return shard_seed(seed * 999_983 + step, shard or Shard(0, 1))


def reward_autocast_dtype(config: PPOConfig) -> torch.dtype | None:
    """The precision to score rollouts in: bf16 on the fast path when the policy's passes run in bf16, else None
    (float32). The reward model is outside the trainer (a ``reward_fn``), so whoever builds it asks here:
    ``load_reward_model(..., autocast_dtype=reward_autocast_dtype(config.ppo))``. Scores move by ~1e-3 (the
    normalised scale is 1), the score phase takes about half the time."""
    if config.fast_path and resolve_mixed_precision(config.mixed_precision) == "bf16":
        return torch.bfloat16
    return None


def ppo_update(policy, optimizer, accelerator, rollouts: Rollout | list[Rollout], config: PPOConfig, step: int,
               shards: list[Shard] | None = None) -> dict:
    """Step 5: `ppo_epochs` passes of shuffled mini-batches over the rollouts. Returns averaged statistics.

    `rollouts`: this process's shards of the step's batch (one `Rollout` each; `shards` says which, default one
    shard on one process). Every mini-batch takes ``mini_batch_size / S`` rows of each of the S shards, in an
    order seeded by (seed, step, shard); the gradients of a process's shards accumulate (synchronised after its
    last) and DDP averages over processes, so N processes compute what 1 process computes with the same shards
    (`rlhf_helpers.core.distributed`). Advantages are whitened over the whole mini-batch, across shards.
    """
    rollouts = [rollouts] if isinstance(rollouts, Rollout) else list(rollouts)
    shards = shards or [Shard(0, 1)]
    count = shards[0].count
    many = accelerator.num_processes > 1
    # eval mode during the update too: gradients still flow, and any dropout (hub GPT-2 has 0.1) stays
    # off, so the update sees exactly the network that produced the rollout (Huang et al. 2023, "Policy training implementation details": dropout off).
    policy.eval()
    local_batch, local_mini = config.batch_size // count, config.mini_batch_size // count
    generators = [torch.Generator().manual_seed(minibatch_seed(config.seed, step, shard)) for shard in shards]
    stats: dict[str, list[float]] = {}
    skipped = overflowed = 0
    for _ in range(config.ppo_epochs):
        orders = [torch.randperm(local_batch, generator=g) for g in generators]
        for start in range(0, local_batch, local_mini):
            picks = [order[start : start + local_mini].to(r.query_ids.device) for order, r in zip(orders, rollouts)]
            advantages = masked_whiten_shards([(r.advantages[i], r.response_mask[i]) for r, i in zip(rollouts, picks)],
                                              partial(sum_over_processes, accelerator) if many else None)
            finite, too_far, rows = True, False, []
            for k, (rollout, idx, adv) in enumerate(zip(rollouts, picks, advantages)):
                mask = rollout.response_mask[idx]
                last = k == len(rollouts) - 1  # all-reduce the gradients after the last local shard only
                with micro_batch(accelerator, policy, last):
                    with accelerator.autocast():  # the same precision as the rollout's passes
                        # fast path: the second output is the log-softmax at the real tokens, which the
                        # entropy reuses
                        logprobs, logits, values = response_logprobs_and_values(
                            policy, rollout.query_ids[idx], rollout.query_mask[idx], rollout.response_ids[idx], mask,
                            config.temperature, fast=config.fast_path)
                    pg_loss, pg_stats = clipped_policy_loss(logprobs, rollout.logprobs[idx], adv, mask,
                                                            config.clip_range)
                    vf_loss, vf_stats = clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask,
                                                           config.clip_range_value)
                    loss = pg_loss + config.vf_coef * vf_loss
                    finite = finite and bool(torch.isfinite(loss))
                    # the policy moved too far from the rollout's: this gradient would be garbage (skipped below)
                    too_far = too_far or pg_stats["ratio_mean"] > config.ratio_threshold
                    if last:
                        # one decision for all processes, before the backward that ends the mini-batch (DeepSpeed's
                        # engine steps right after it): a NaN or a runaway ratio on any shard skips / stops everywhere
                        _, too_far, bad = agree(accelerator, seconds=0.0, stop=too_far, bad=not finite)
                        if bad:
                            raise NonFiniteLossError(
                                f"PPO loss is not finite at step {step} (on at least one process). The last good "
                                "checkpoint is kept: lower the learning rate (or check the reward function's "
                                "scores), then run the same command again.")
                    backward(accelerator, policy, loss, len(rollouts), last=last, skip=last and too_far)
                with torch.no_grad():
                    if config.fast_path:  # [M] at the real tokens: their mean is the masked mean
                        entropy = entropy_from_log_softmax(logits).mean().item()
                    else:
                        entropy = masked_mean(entropy_from_logits(logits), mask).item()
                rows.append({"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "entropy": entropy,
                             **pg_stats, **vf_stats})
            # a skip drops the gradients (and its statistics); under fp16 the loss scaler drops a step whose
            # gradients overflowed (normal: its scale was too high), which is counted, not an error
            applied = optimizer_step(accelerator, policy, optimizer, config.max_grad_norm, skip=too_far)
            if too_far:
                skipped += 1
                continue
            overflowed += not applied
            for row in rows:
                for key, value in row.items():
                    stats.setdefault(key, []).append(float(value))
    summary = {k: float(np.mean(v)) for k, v in stats.items()}
    summary = mean_over_processes(accelerator, summary)  # skips are agreed, so every process has the same keys
    summary["skipped_minibatches"] = skipped
    if overflowed:  # fp16 only: mini-batches whose step the loss scaler dropped
        summary["overflow_minibatches"] = overflowed
    return summary


# ----------------------------------------------------------------------------------------------
# The trainer: steps in a loop, with statistics, checkpoints and resume
# ----------------------------------------------------------------------------------------------


class PPOTrainer:
    """Runs PPO steps on `accelerate`; checkpoints every `checkpoint_every` steps and resumes.

    The run engine (`rlhf_helpers.core.run.ResumableRun`, as for every loop of the course) owns processes, seeds,
    the schedule, budgets, checkpoints and faults: `train` holds ``output_dir/.lock`` (a second run into
    the directory raises `RunLockedError` before writing anything); SIGINT / SIGTERM end `train` after the current
    step with a checkpoint (``interrupted``, ``signal``, ``message``); a run whose checkpoint already spent its
    budget trains nothing (``already_finished``); `maybe_resume` refuses a checkpoint written with other settings
    unless ``allow_changed_settings``.

    Args:
        policy: `PolicyWithValueHead` (trained).
        reference: frozen `GPT2LMHeadModel` (the SFT policy), never updated.
        tokenizer: the policy's tokenizer.
        reward_fn: ``texts -> FloatTensor[N]`` (normalised scores), e.g. ``RewardScorer.score``.
        prompts: token-id lists to draw prompts from (``build_dataset(..., split="train")["input_ids"]``).
        output_dir: where checkpoints, the final policy and the run card go.
    """

    def __init__(self, policy, reference, tokenizer, reward_fn: Callable, prompts, config: PPOConfig,
                 output_dir: str | Path, mixed_precision: str | None = None, run_config: dict | None = None):
        config.validate(getattr(policy.config, "n_positions", None))
        scorer_tokenizer = getattr(getattr(reward_fn, "__self__", None), "tokenizer", None)
        if scorer_tokenizer is not None and scorer_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError("The reward model's tokenizer differs from the policy's. Train the reward model "
                             "from this policy (same tokenizer), or pass a reward_fn that tokenizes for itself.")
        self.config, self.tokenizer, self.reward_fn = config, tokenizer, reward_fn
        self.prompts = [list(map(int, p)) for p in prompts]
        self.run_config = run_config or {}
        if config.adaptive_kl:
            self.kl_controller = AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(config.init_kl_coef)
        # The run engine: processes, seeds, schedule, budgets, checkpoints, lock, signals (`core.run`).
        # `mixed_precision` here overrides the config's (tests pin "no" for exact comparisons).
        self.run = ResumableRun(config, output_dir, name="PPO", batch_rows=config.batch_rows,
                                batch_field=config.batch_field, mixed_precision=mixed_precision,
                                extra_state=lambda: {"kl_controller": self.kl_controller.state_dict()},
                                data_settings=data_settings_of(self.run_config))
        self.accelerator, self.mixed_precision = self.run.accelerator, self.run.mixed_precision
        self.output_dir, self.checkpoint_dir = self.run.output_dir, self.run.checkpoint_dir
        # fused: one kernel per parameter group instead of a dozen elementwise passes per tensor (fast path)
        fused = {"fused": True} if config.fast_path else {}
        optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, **fused)
        # anneal the learning rate linearly to 0 over the planned steps (Huang et al. 2023, "Policy training
        # implementation details")
        self.policy, self.optimizer = self.run.prepare(policy, optimizer,
                                                       lambda s: max(0.0, 1 - s / config.max_steps))
        self.scheduler = self.run.scheduler
        self.reference = reference.to(self.accelerator.device).eval().requires_grad_(False)
        self.timer = Timer()

    # The run's state and how its last `train` ended live in the engine.
    state = property(lambda self: self.run.state)
    interrupted = property(lambda self: self.run.interrupted)
    already_finished = property(lambda self: self.run.already_finished)
    signal = property(lambda self: self.run.signal, doc='"SIGINT" / "SIGTERM" when a signal ended the last `train`.')
    message = property(lambda self: self.run.message, doc="What was printed about an early end of the last `train`.")

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Model, value head, optimiser, scheduler, RNG (accelerate) + KL controller and history (JSON)."""
        self.run.save_checkpoint()

    def maybe_resume(self, allow_changed_settings: bool = False) -> bool:
        """Load the last checkpoint in `output_dir` if there is one. Returns whether it resumed.

        Raises `SettingsChangedError` if the checkpoint's settings (the config minus its budget fields) differ from
        this trainer's, unless `allow_changed_settings` (then both are recorded); `CheckpointError` if it is torn
        or not a PPO checkpoint; `RunLockedError` if another run is writing to `output_dir`.
        """
        saved = self.run.resume(allow_changed_settings, required=("kl_controller",))
        if saved is None:
            return False
        self.kl_controller.load_state_dict(saved["kl_controller"])
        return True

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> dict:
        """One PPO step on this process's shards of the batch; statistics are averaged over all processes."""
        return self.run.step(self._step)

    def _step(self, step: int) -> dict:
        started = time.perf_counter()
        before = dict(self.timer.totals)
        policy = self.accelerator.unwrap_model(self.policy)
        prompts = sample_prompt_batch(self.prompts, self.config.batch_size, step, self.config.seed)  # global batch
        shards = self.run.plan.local_shards()
        policy.eval()
        rollouts = [collect_rollout(policy, self.reference, self.tokenizer, self.reward_fn,
                                    shard.take(prompts, "ppo.batch_size"), self.kl_controller.value, self.config, step,
                                    self.timer, autocast=self.accelerator.autocast, shard=shard)
                    for shard in shards]
        per_shard = [rollout_statistics(r, self.kl_controller.value) for r in rollouts]
        stats = mean_over_processes(self.accelerator, {k: float(np.mean([p[k] for p in per_shard]))
                                                       for k in per_shard[0]})
        with self.timer("update"):
            stats.update(ppo_update(self.policy, self.optimizer, self.accelerator, rollouts, self.config, step,
                                    shards))
        self.scheduler.step()
        # Ziegler et al.: steer with the mean KL per response (over all processes); n_steps = rollouts in this batch.
        self.kl_controller.update(stats["kl"], self.config.batch_size)
        seconds = time.perf_counter() - started
        phases = {f"time_{k}": self.timer.totals[k] - before.get(k, 0.0) for k in self.timer.totals}
        stats.update(step=step + 1, seconds=seconds, threads=torch.get_num_threads(),
                     episodes_per_second=self.config.batch_size / seconds,
                     learning_rate=self.scheduler.get_last_lr()[0], **phases)
        stats["samples"] = [q + r for q, r in zip(rollouts[0].queries[:3], rollouts[0].responses[:3])]
        self.state["history"].append(stats)
        self.last_rollout = rollouts[0]
        return stats

    # -- the loop ---------------------------------------------------------------------------------
    def train(self, progress: bool = True, callback: Callable[[dict], None] | None = None,
              stop_after: int | None = None) -> list[dict]:
        """Run steps until `max_steps` or `max_minutes`; `stop_after` = at most this many steps in this call
        (to demonstrate an interruption). Checkpoints every `checkpoint_every` steps and at the end.

        SIGINT / SIGTERM: stop after the current step, checkpoint, set ``interrupted`` and ``signal``. A checkpoint
        that already spent the budget: trains nothing, sets ``already_finished``. `callback(stats)` runs on the
        main process after every step. Returns the history."""

        def after_step(stats: dict, last: bool) -> None:
            if callback is not None and self.accelerator.is_main_process:
                callback(stats)

        self.run.train(self._step, after_step=after_step, progress=progress, stop_after=stop_after,
                       postfix=lambda stats: {"score": f"{stats['score']:.2f}", "kl": f"{stats['kl']:.2f}",
                                              "beta": f"{stats['kl_coef']:.3f}"})
        return self.state["history"]

    def save(self, directory: str | Path | None = None, metrics: dict | None = None) -> Path:
        """Save the trained policy (LM + value head + tokenizer) and a run card.

        After a `train` that found the run already finished, the files this run saved before are kept (its phase
        timings are not in the checkpoint, so a new run card would lose them)."""
        directory = Path(directory or self.output_dir)
        if self.already_finished and finished_run_card(directory, "ppo", self.state["step"]) is not None \
                and (directory / "config.json").exists():
            return directory
        with run_lock(directory):
            if self.accelerator.is_main_process:
                self._write(directory, metrics)
        return directory

    def _write(self, directory: Path, metrics: dict | None) -> None:
        policy = self.accelerator.unwrap_model(self.policy)
        policy.save_pretrained(directory)
        self.tokenizer.save_pretrained(str(directory))
        permissions_from_umask(directory)
        history = [{k: v for k, v in h.items() if k != "samples"} for h in self.state["history"]]
        changes = {"settings_changes": self.state["settings_changes"]} if self.state.get("settings_changes") else {}
        write_run_card(directory, "ppo", {**self.run_config, "ppo": asdict(self.config)},
                       metrics={**(metrics or {}), "steps": self.state["step"], "history": history, **changes},
                       timings={"train": round(self.state["train_seconds"], 1),
                                **{k: round(v, 1) for k, v in self.timer.totals.items()}})
