"""The one resumable training loop of the course, on 🤗 accelerate (SFT and reward-model training use it).

A stage gives the loop two functions: ``loss_fn(model, step, device) -> (loss, logs)`` (the mean loss of the
batch of `step`, and numbers to log) and ``evaluate(model) -> dict`` (held-out metrics). The loop does the rest,
the same way for every stage:

* AdamW with weight decay on matrices only, linear warmup then cosine decay (`lr_at`), gradient clipping;
* device placement and mixed precision through accelerate (bf16 autocast where fast), so
  ``accelerate launch -m rlhf_helpers <stage>`` runs the same loop on several devices;
* a step budget and a wall-clock budget, a progress bar, a training-loss curve and a held-out curve;
* resumable checkpoints (`rlhf_helpers.core.checkpoint`: accelerate's ``save_state`` + the loop's state, swapped
  in atomically). Batches are a pure function of (seed, step) (`batch_indices`), so a resumed run sees
  exactly the batches it would have seen.

The caller saves the final model and the run card (they differ per stage).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config import SupervisedConfig
from .checkpoint import load_checkpoint, save_checkpoint
from .precision import resolve_mixed_precision

LossFn = Callable[[torch.nn.Module, int, torch.device], "tuple[torch.Tensor, dict[str, float]]"]


# ----------------------------------------------------------------------------------------------
# Batches and the learning-rate schedule
# ----------------------------------------------------------------------------------------------


def batch_indices(step: int, n_rows: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the rows in the batch of `step`: a fresh seeded permutation every epoch.

    A pure function of its arguments, so a resumed run draws exactly the batches it would have.
    """
    steps_per_epoch = n_rows // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {n_rows} training rows.")
    epoch, position = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    permutation = torch.randperm(n_rows, generator=generator)
    return permutation[position * batch_size : (position + 1) * batch_size]


def lr_at(step: int, config: SupervisedConfig) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: SupervisedConfig) -> torch.optim.AdamW:
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
    """``step``, ``train_seconds``, ``history`` (held-out rows), ``train_log`` (training-loss rows)."""
    accelerator: object
    mixed_precision: str
    interrupted: bool = False
    """True when `stop_after` ended this call before the step budget (a checkpoint was written)."""
    already_finished: bool = False
    """True when the checkpoint had already reached `max_steps`: nothing was trained in this call."""
    extra: dict = field(default_factory=dict)


def train_loop(model: torch.nn.Module, config: SupervisedConfig, output_dir: str | Path, loss_fn: LossFn,
               evaluate: Callable[[torch.nn.Module], dict], *, name: str, resume: bool = True,
               progress: bool = True, stop_after: int | None = None) -> LoopResult:
    """Train `model` with `loss_fn` until `max_steps` or `max_minutes`; checkpoint into ``output_dir/checkpoint``.

    Args:
        loss_fn: ``(model, step, device) -> (loss, logs)``: the mean loss of the batch of `step` (a pure function
            of step and seed) and a dict of floats averaged into the training-loss curve.
        evaluate: ``(unwrapped model) -> dict`` of held-out metrics (runs at step 0, every `eval_every` steps and
            at the end; the model is in eval mode and under autocast).
        name: what the progress bar and the messages call this stage.
        stop_after: leave after this many steps *in this call* (checkpointed), as if the run were killed there;
            a later call with the same `output_dir` resumes (used to test and demonstrate resuming).
    """
    checkpoint_dir = Path(output_dir) / "checkpoint"
    mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    set_seed(config.seed)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    result = LoopResult(unwrapped, {"step": 0, "train_seconds": 0.0, "history": [], "train_log": []},
                        accelerator, mixed_precision)

    saved = load_checkpoint(accelerator, checkpoint_dir) if resume else None
    if saved is not None:
        result.state = saved
        accelerator.print(f"Resuming {name} from step {saved['step']} ({checkpoint_dir})")
    state = result.state
    if state["step"] >= config.max_steps:
        accelerator.print(f"{name}: the checkpoint in {checkpoint_dir} already reached max_steps={config.max_steps}; "
                          "nothing to train (raise --max-steps to train further, or pass --no-resume to start afresh).")
        result.already_finished = True
        return result
    if not state["history"]:
        state["history"].append(_held_out(unwrapped, accelerator, evaluate, 0, 0.0))

    started, seconds_before, first_step = time.perf_counter(), state["train_seconds"], state["step"]
    window: list[dict] = []  # logs of the steps since the last training-curve entry
    bar = tqdm(total=config.max_steps, initial=state["step"], desc=name,
               disable=not progress or not accelerator.is_main_process)
    model.train()
    while state["step"] < config.max_steps:
        loss, logs = _optimizer_step(model, optimizer, scheduler, accelerator, loss_fn, config, state["step"], name,
                                     checkpoint_dir)
        state["step"] += 1
        state["train_seconds"] = seconds_before + time.perf_counter() - started
        window.append({"loss": loss, **logs})
        bar.update(1)
        out_of_time = config.max_minutes is not None and state["train_seconds"] >= 60 * config.max_minutes
        result.interrupted = stop_after is not None and state["step"] - first_step >= stop_after
        last = state["step"] == config.max_steps or out_of_time or result.interrupted
        if state["step"] % config.log_every == 0 or last:
            means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            state["train_log"].append({"step": state["step"], **means, "lr": scheduler.get_last_lr()[0],
                                       "seconds": round(state["train_seconds"], 2)})
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
            window = []
        if state["step"] % config.eval_every == 0 or last:
            row = _held_out(unwrapped, accelerator, evaluate, state["step"], state["train_seconds"])
            state["history"].append(row)
            bar.write(f"step {state['step']}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds")))
        if state["step"] % config.checkpoint_every == 0 or last:
            save_checkpoint(accelerator, checkpoint_dir, state)
        if out_of_time or result.interrupted:
            break
    bar.close()
    result.interrupted = result.interrupted and state["step"] < config.max_steps
    return result


def _optimizer_step(model, optimizer, scheduler, accelerator, loss_fn: LossFn, config: SupervisedConfig,
                    step: int, name: str, checkpoint_dir: Path) -> tuple[float, dict]:
    """One step: loss under autocast, backward, gradient clipping, optimiser and schedule. Returns the loss."""
    with accelerator.autocast():
        loss, logs = loss_fn(model, step, accelerator.device)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{name} loss is {loss.item()} at step {step}; the last good checkpoint is in "
                                 f"{checkpoint_dir} (lower the learning rate, then run the same command again).")
    accelerator.backward(loss)
    if config.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), logs


def _held_out(model, accelerator, evaluate, step: int, seconds: float) -> dict:
    """One row of the held-out curve: `evaluate` in eval mode, without gradients, under autocast."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        row = {"step": step, "seconds": round(seconds, 1), **evaluate(model)}
    model.train(was_training)
    return row
