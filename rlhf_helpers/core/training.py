"""The one resumable training loop of the course, on 🤗 accelerate (SFT and reward-model training use it).

A stage gives the loop two functions: ``loss_fn(model, step, shard, device) -> (loss, logs)`` (the mean loss of
`shard`'s part of the batch of `step`, and numbers to log) and ``evaluate(model) -> dict`` (held-out metrics). The
loop does the rest, the same way for every stage:

* AdamW with weight decay on matrices only, linear warmup then cosine decay (`lr_at`), gradient clipping;
* device placement and mixed precision through accelerate (bf16 autocast where fast), so
  ``accelerate launch -m rlhf_helpers <stage>`` runs the same loop on several devices: the global batch is cut
  into shards (`rlhf_helpers.core.distributed`), each process runs its own shards (gradient accumulation when
  it has several), the schedule steps once per optimiser step, the time budget and stop signals are agreed by
  all processes, and only the main process writes;
* a step budget and a wall-clock budget, a progress bar, a training-loss curve and a held-out curve;
* resumable checkpoints (`rlhf_helpers.core.checkpoint`: accelerate's ``save_state`` + the loop's state, swapped
  in atomically). Batches are a pure function of (seed, step) (`batch_indices`), so a resumed run sees
  exactly the batches it would have seen;
* faults: SIGINT / SIGTERM end the run at the end of the current step with a checkpoint (`core.signals`); a
  lock file keeps a second run out of the output directory (`core.lock`); a finished run run again trains
  nothing and says so; a resume with other settings than the checkpoint's is refused unless allowed.

The caller saves the final model and the run card (they differ per stage).
"""

from __future__ import annotations

import contextlib
import json
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
from .checkpoint import budget_of, load_checkpoint, resume_settings, save_checkpoint
from .distributed import Shard, ShardPlan, agree, mean_over_processes, shard_plan
from .lock import run_lock
from .precision import resolve_mixed_precision
from .signals import StopRequest, stop_on_signals

LossFn = Callable[[torch.nn.Module, int, Shard, torch.device], "tuple[torch.Tensor, dict[str, float]]"]


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
# How a run ended early: messages shared by the loop, the stages and PPO
# ----------------------------------------------------------------------------------------------

_STAGE_PREFIX = {"SFTConfig": "sft", "RewardConfig": "reward", "PPOConfig": "ppo"}


def flag(config, field_name: str) -> str:
    """The command-line flag of a stage config's field: ``flag(SFTConfig(), "max_steps") == "--sft.max-steps"``."""
    prefix = _STAGE_PREFIX.get(type(config).__name__)
    return f"--{prefix + '.' if prefix else ''}{field_name.replace('_', '-')}"


def finished_message(name: str, step: int, seconds: float, config, checkpoint_dir: Path) -> str | None:
    """What to say when a resumed run has nothing left to train (its step or time budget is spent), else None."""
    if step >= config.max_steps:
        return (f"{name} already finished (step {step} of {config.max_steps}): the checkpoint in {checkpoint_dir} "
                f"reached max_steps, nothing to train. Raise {flag(config, 'max_steps')} to train further, or pass "
                "--no-resume to start afresh.")
    if config.max_minutes is not None and seconds >= 60 * config.max_minutes:
        return (f"{name} already finished: its time budget (max_minutes={config.max_minutes}) was spent at step "
                f"{step} of {config.max_steps}, nothing to train. Raise {flag(config, 'max_minutes')} to train "
                "further, or pass --no-resume to start afresh.")
    return None


def interrupted_message(name: str, signal_name: str, step: int, checkpoint_dir: Path) -> str:
    return (f"{name} interrupted ({signal_name}) at step {step}: checkpoint saved in {checkpoint_dir}; run the same "
            "command again to resume.")


def finished_run_card(output_dir: str | Path, stage: str, step: int) -> dict | None:
    """The run card ``run_card_<stage>.json`` in `output_dir` if it records a run that ended at `step`, else None.

    A finished run run again uses it to tell whether the final files on disk are those of its checkpoint (then
    they are not written again: the reward stage's saved model is normalised, its checkpoint is not).
    """
    try:
        card = json.loads((Path(output_dir) / f"run_card_{stage}.json").read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("metrics", {}).get("steps") == step else None


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
    extra: dict = field(default_factory=dict)

    def interrupted_summary(self) -> dict:
        """The dict a stage returns for an interrupted call: steps, interrupted, and signal + message if any."""
        summary = {"steps": self.state["step"], "interrupted": True}
        if self.signal is not None:
            summary.update(signal=self.signal, message=self.message)
        return summary


@dataclass
class _Run:
    """What the steps need besides the result: the prepared objects and where to checkpoint."""

    model: torch.nn.Module  # wrapped by accelerate
    optimizer: torch.optim.Optimizer
    scheduler: object
    config: SupervisedConfig
    checkpoint_dir: Path
    name: str
    plan: ShardPlan  # which shards of each step's batch this process runs


def train_loop(model: torch.nn.Module, config: SupervisedConfig, output_dir: str | Path, loss_fn: LossFn,
               evaluate: Callable[[torch.nn.Module], dict], *, name: str, batch_rows: int, resume: bool = True,
               progress: bool = True, stop_after: int | None = None,
               allow_changed_settings: bool = False) -> LoopResult:
    """Train `model` with `loss_fn` until `max_steps` or `max_minutes`; checkpoint into ``output_dir/checkpoint``.

    Args:
        loss_fn: ``(model, step, shard, device) -> (loss, logs)``: the mean loss of `shard`'s part of the batch of
            `step` (``shard.take(rows)`` of a batch that is a pure function of step and seed) and a dict of floats
            averaged into the training-loss curve.
        batch_rows: rows in one step's global batch (cut into ``batch_rows / config.micro_batch_size`` shards, or
            one per process when ``micro_batch_size`` is None).
        evaluate: ``(unwrapped model) -> dict`` of held-out metrics (runs at step 0, every `eval_every` steps and
            at the end; the model is in eval mode and under autocast).
        name: what the progress bar and the messages call this stage.
        stop_after: leave after this many steps *in this call* (checkpointed), as if the run were killed there;
            a later call with the same `output_dir` resumes (used to test and demonstrate resuming).
        allow_changed_settings: resume even if the config differs from the checkpoint's (outside `BUDGET_FIELDS`);
            both are recorded. Otherwise such a resume raises `SettingsChangedError`.

    Holds ``output_dir/.lock`` throughout (`RunLockedError` if another run holds it). SIGINT / SIGTERM end the
    call after the current step with a checkpoint (``result.interrupted``, ``result.signal``).
    """
    with run_lock(output_dir):
        result, run = _prepare(model, config, Path(output_dir) / "checkpoint", name, batch_rows)
        _restore(result, run, resume, allow_changed_settings)
        state = result.state
        result.message = finished_message(name, state["step"], state["train_seconds"], config, run.checkpoint_dir)
        if result.message is not None:
            result.already_finished = True
            result.accelerator.print(result.message)
            return result
        if not state["history"]:
            state["history"].append(_held_out(result.model, result.accelerator, evaluate, 0, 0.0))
        with stop_on_signals() as stop:
            _run_steps(result, run, loss_fn, evaluate, progress, stop_after, stop)
    return result


def _prepare(model, config: SupervisedConfig, checkpoint_dir: Path, name: str,
             batch_rows: int) -> tuple[LoopResult, _Run]:
    """Accelerator, seeds, AdamW and its schedule, all prepared; a fresh state."""
    mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    batch_name = {"sft": "sft.batch_size", "reward": "reward.full_batch_size + reward.snippet_batch_size"}
    plan = shard_plan(accelerator, batch_rows, config.micro_batch_size, where=batch_name.get(config.stage, "batch"),
                      micro_flag=flag(config, "micro_batch_size"))
    set_seed(config.seed + accelerator.process_index)  # each process its own stream (dropout); batches are seeded apart
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config))
    # The scheduler is not handed to `prepare`: accelerate's wrapper steps it once per *process* per step (unless
    # batches are split), which would run the schedule N times too fast. It is stepped here once per optimiser
    # step, and registered so that `save_state` / `load_state` still carry it.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    state = {"step": 0, "train_seconds": 0.0, "history": [], "train_log": [], "settings": resume_settings(config),
             "budget": budget_of(config)}
    result = LoopResult(accelerator.unwrap_model(model), state, accelerator, mixed_precision)
    return result, _Run(model, optimizer, scheduler, config, checkpoint_dir, name, plan)


def _restore(result: LoopResult, run: _Run, resume: bool, allow_changed_settings: bool) -> None:
    """Load the last checkpoint into the prepared objects and the result's state (if resuming and there is one)."""
    if not resume:
        return
    saved = load_checkpoint(result.accelerator, run.checkpoint_dir, settings=result.state["settings"],
                            allow_changed_settings=allow_changed_settings, budget=result.state["budget"])
    if saved is not None:
        result.state = saved
        result.accelerator.print(f"Resuming {run.name} from step {saved['step']} ({run.checkpoint_dir})")


def _run_steps(result: LoopResult, run: _Run, loss_fn: LossFn, evaluate, progress: bool, stop_after: int | None,
               stop: StopRequest) -> None:
    """The steps, from the state's step to the budget (or an early stop); checkpoints as configured and at the end."""
    config, accelerator, state = run.config, result.accelerator, result.state
    started, seconds_before, first_step = time.perf_counter(), state["train_seconds"], state["step"]
    window: list[dict] = []  # logs of the steps since the last training-curve entry
    bar = tqdm(total=config.max_steps, initial=state["step"], desc=run.name,
               disable=not progress or not accelerator.is_main_process)
    run.model.train()
    reason = None
    while state["step"] < config.max_steps:
        loss, logs = _optimizer_step(run, accelerator, loss_fn, state["step"])
        state["step"] += 1
        state["train_seconds"] = seconds_before + time.perf_counter() - started  # agreed in `_stop_reason`
        window.append({"loss": loss, **logs})
        bar.update(1)
        reason = _stop_reason(state, config, state["step"] - first_step, stop_after, stop, accelerator)
        last = state["step"] == config.max_steps or reason is not None
        if state["step"] % config.log_every == 0 or last:
            _log_window(state, window, run.scheduler, bar)
            window = []
        if state["step"] % config.eval_every == 0 or last:
            row = _held_out(result.model, accelerator, evaluate, state["step"], state["train_seconds"])
            state["history"].append(row)
            if accelerator.is_main_process:
                bar.write(f"step {state['step']}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", "seconds")))
        if state["step"] % config.checkpoint_every == 0 or last:
            save_checkpoint(accelerator, run.checkpoint_dir, state)
        if reason is not None:
            break
    bar.close()
    if reason in ("stop_after", "signal") and state["step"] < config.max_steps:
        result.interrupted = True
        if reason == "signal":
            result.signal = stop.signal or "signal"  # None: another process received it
            result.message = interrupted_message(run.name, result.signal, state["step"], run.checkpoint_dir)
            accelerator.print(result.message)


def _stop_reason(state: dict, config: SupervisedConfig, steps_here: int, stop_after: int | None, stop: StopRequest,
                 accelerator) -> str | None:
    """Why the loop stops after this step: "signal", "stop_after", "time", or None (go on).

    The same answer on every process: one collective call per step shares the main process's clock and any
    process's stop signal, so no process enters a step that another has left (that would hang the all-reduce).
    """
    state["train_seconds"], signalled, _ = agree(accelerator, seconds=state["train_seconds"],
                                                 stop=stop.signal is not None)
    if signalled:
        return "signal"
    if stop_after is not None and steps_here >= stop_after:
        return "stop_after"
    if config.max_minutes is not None and state["train_seconds"] >= 60 * config.max_minutes:
        return "time"
    return None


def _log_window(state: dict, window: list[dict], scheduler, bar) -> None:
    """One entry of the training curve: the mean of each log over the steps since the last entry."""
    means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    state["train_log"].append({"step": state["step"], **means, "lr": scheduler.get_last_lr()[0],
                               "seconds": round(state["train_seconds"], 2)})
    bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})


def _optimizer_step(run: _Run, accelerator, loss_fn: LossFn, step: int) -> tuple[float, dict]:
    """One step: this process's shards (loss under autocast, backward), then clipping, optimiser and schedule.

    Each shard's loss is divided by the number of local shards and DDP averages over processes, so the gradient
    is the mean over all shards of the step (`rlhf_helpers.core.distributed`). Gradients are synchronised only
    after the last local shard (``no_sync`` before). Returns the loss and logs, averaged over all shards.
    """
    shards = run.plan.local_shards()
    losses, logs_sum, finite = [], {}, True
    for k, shard in enumerate(shards):
        syncing = k == len(shards) - 1
        with contextlib.nullcontext() if syncing else accelerator.no_sync(run.model):
            with accelerator.autocast():
                loss, logs = loss_fn(run.model, step, shard, accelerator.device)
            finite = finite and bool(torch.isfinite(loss))
            # backward even when not finite: every process must take part in the gradient all-reduce
            accelerator.backward(loss / len(shards))
        losses.append(loss.item())
        for key, value in logs.items():
            logs_sum[key] = logs_sum.get(key, 0.0) + value
    _, _, bad = agree(accelerator, seconds=0.0, bad=not finite)  # one process's NaN stops them all, here
    if bad:
        raise FloatingPointError(f"{run.name} loss is not finite at step {step} (on at least one process: "
                                 f"{losses}); the last good checkpoint is in {run.checkpoint_dir} (lower the "
                                 "learning rate, then run the same command again).")
    if run.config.max_grad_norm:
        accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
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
