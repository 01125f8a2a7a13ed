"""The supervised training loop (SFT, the reward model, DPO, Preferred-FT, positive-review SFT), on the run engine.

A stage gives the loop two functions: ``loss_fn(model, step, shard, device) -> (loss, logs)`` (the mean loss of
`shard`'s part of the batch of `step`, and numbers to log) and ``evaluate(model) -> dict`` (held-out metrics). The
loop adds what supervised stages share: AdamW with weight decay on matrices only, linear warmup then cosine decay
(`lr_at`), gradient clipping, micro-batch accumulation, a training-loss curve and a held-out curve. Everything a
run needs besides — processes, seeds, the schedule's registration, budgets, checkpoints and resume, the lock,
signals, the messages — is the run engine's (`rlhf_helpers.core.run.ResumableRun`), which PPO drives too.

The caller saves the final model and the run card (they differ per stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .distributed import Shard, backward, mean_over_processes, micro_batch, optimizer_step
from .lock import run_lock
from .run import ResumableRun, batch_indices, finished_message, finished_run_card, interrupted_message

__all__ = ["train_loop", "LoopResult", "lr_at", "make_optimizer", "batch_indices", "finished_message",
           "finished_run_card", "interrupted_message"]

LossFn = Callable[[torch.nn.Module, int, Shard, torch.device], "tuple[torch.Tensor, dict[str, float]]"]


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule and the optimiser
# ----------------------------------------------------------------------------------------------


def lr_at(step: int, config) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights only (biases and LayerNorm gains are not decayed)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    """What `train_loop` hands back: the trained (unwrapped) model and the loop's state."""

    model: torch.nn.Module
    state: dict
    """``step``, ``train_seconds``, ``history`` (held-out rows), ``train_log`` (training-loss rows), ``settings``
    (and ``settings_changes`` when a resume was allowed to change them)."""
    accelerator: object
    mixed_precision: str
    interrupted: bool = False
    """True when `stop_after` or a SIGINT / SIGTERM ended this call before the step budget (a checkpoint was written)."""
    already_finished: bool = False
    """True when the checkpoint had already spent its step (or time) budget: nothing was trained in this call."""
    signal: str | None = None
    """"SIGINT" or "SIGTERM" when a signal ended this call."""
    message: str | None = None
    """What was printed about an early end (interrupted by a signal, or already finished)."""

    def interrupted_summary(self) -> dict:
        """The dict a stage returns for an interrupted call: steps, interrupted, and signal + message if any."""
        summary = {"steps": self.state["step"], "interrupted": True}
        if self.signal is not None:
            summary.update(signal=self.signal, message=self.message)
        return summary


def train_loop(model: torch.nn.Module, config, output_dir: str | Path, loss_fn: LossFn,
               evaluate: Callable[[torch.nn.Module], dict], *, name: str, batch_rows: int, resume: bool = True,
               progress: bool = True, stop_after: int | None = None,
               allow_changed_settings: bool = False, data_settings: dict | None = None) -> LoopResult:
    """Train `model` with `loss_fn` until `max_steps` or `max_minutes`; checkpoint into ``output_dir/checkpoint``.

    Args:
        config: a `rlhf_helpers.config.SupervisedConfig` (SFT, reward, DPO, Preferred-FT settings).
        loss_fn: ``(model, step, shard, device) -> (loss, logs)``: the mean loss of `shard`'s part of the batch of
            `step` (``shard.take(rows)`` of a batch that is a pure function of step and seed: `batch_indices`) and
            a dict of floats averaged into the training-loss curve.
        batch_rows: rows in one step's global batch (cut into ``batch_rows / config.micro_batch_size`` shards, or
            one per process when ``micro_batch_size`` is None).
        evaluate: ``(unwrapped model) -> dict`` of held-out metrics (runs at step 0, every `eval_every` steps and
            at the end; the model is in eval mode and under autocast).
        name: what the progress bar and the messages call this stage.
        stop_after: leave after this many steps *in this call* (checkpointed), as if the run were killed there;
            a later call with the same `output_dir` resumes (used to test and demonstrate resuming).
        allow_changed_settings: resume even if the config differs from the checkpoint's (outside the budget
            fields); both are recorded. Otherwise such a resume raises `SettingsChangedError`.
        data_settings: the course settings that shape the data (`CourseConfig.data_settings`), compared on resume.

    Holds ``output_dir/.lock`` throughout (`RunLockedError` if another run holds it). SIGINT / SIGTERM end the
    call after the current step with a checkpoint (``result.interrupted``, ``result.signal``).
    """
    with run_lock(output_dir):
        run = ResumableRun(config, output_dir, name=name, batch_rows=batch_rows,
                           batch_field=config.batch_field, data_settings=data_settings)
        run.state["train_log"] = []
        wrapped, optimizer = run.prepare(model, make_optimizer(model, config), lambda step: lr_at(step, config))
        if resume:
            run.resume(allow_changed_settings)
        result = LoopResult(run.unwrapped(), run.state, run.accelerator, run.mixed_precision)
        if not run.state["history"] and run.state["step"] < config.max_steps:
            run.state["history"].append(_held_out(result.model, run.accelerator, evaluate, 0, 0.0))
        window: list[dict] = []  # logs of the steps since the last training-curve entry

        def work(step: int) -> dict:
            loss, logs = _optimizer_step(run, wrapped, optimizer, loss_fn, step)
            return {"loss": loss, **logs}

        def after_step(logs: dict, last: bool) -> None:
            state = run.state
            window.append(logs)
            if state["step"] % config.log_every == 0 or last:
                means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                state["train_log"].append({"step": state["step"], **means, "lr": run.scheduler.get_last_lr()[0],
                                           "seconds": round(state["train_seconds"], 2)})
                run.bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
                window.clear()
            if state["step"] % config.eval_every == 0 or last:
                row = _held_out(result.model, run.accelerator, evaluate, state["step"], state["train_seconds"])
                state["history"].append(row)
                if run.accelerator.is_main_process:
                    run.bar.write(f"step {state['step']}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds")))

        wrapped.train()
        run.train(work, after_step=after_step, progress=progress, stop_after=stop_after)
    result.state = run.state
    result.interrupted, result.already_finished = run.interrupted, run.already_finished
    result.signal, result.message = run.signal, run.message
    return result


def _optimizer_step(run: ResumableRun, model, optimizer, loss_fn: LossFn, step: int) -> tuple[float, dict]:
    """One step: this process's shards (loss under autocast, backward), then clipping, optimiser and schedule.

    Each shard's loss is divided by the number of local shards and DDP averages over processes, so the gradient
    is the mean over all shards of the step (`rlhf_helpers.core.distributed`). Gradients are synchronised only
    after the last local shard (``no_sync`` before). A non-finite loss on any process stops every process before
    the last backward (so DeepSpeed's engine never steps on it). Returns the loss and logs, averaged over all shards.
    """
    accelerator = run.accelerator
    shards = run.plan.local_shards()
    losses, logs_sum, finite = [], {}, True
    for k, shard in enumerate(shards):
        last = k == len(shards) - 1
        with micro_batch(accelerator, model, last):
            with accelerator.autocast():
                loss, logs = loss_fn(model, step, shard, accelerator.device)
            losses.append(loss.item())
            finite = finite and math.isfinite(losses[-1])
            if last:  # agreed by every process, before the backward that ends the step
                run.check_finite(finite, f"The {run.name} loss ({losses})")
            backward(accelerator, model, loss, len(shards), last=last)
        for key, value in logs.items():
            logs_sum[key] = logs_sum.get(key, 0.0) + value
    # under fp16 a step whose gradients overflowed is dropped by the loss scaler (not an error); the schedule still
    # follows the step count
    optimizer_step(accelerator, model, optimizer, run.config.max_grad_norm)
    run.scheduler.step()
    means = mean_over_processes(accelerator, {"loss": sum(losses) / len(losses),
                                              **{k: v / len(shards) for k, v in logs_sum.items()}})
    return means.pop("loss"), means


def _held_out(model, accelerator, evaluate, step: int, seconds: float) -> dict:
    """One row of the held-out curve: `evaluate` in eval mode, without gradients, under autocast."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        row = {"step": step, "seconds": round(seconds, 1), **evaluate(model)}
    model.train(was_training)
    return row
