"""The run engine: what every training loop of the course shares, written once.

Two loops drive it: `rlhf_helpers.core.training.train_loop` (SFT, the reward model, DPO, Preferred-FT, the
positive-review SFT) and `rlhf_helpers.ppo.trainer.PPOTrainer`. A loop hands `ResumableRun` its model, its
optimiser and the learning-rate multiplier of each step, and one function that does one step's work; the
engine owns the rest, the same way for every stage:

* **the processes**: accelerate's `Accelerator` (mixed precision), the shard plan of each step's global batch
  (`rlhf_helpers.core.distributed`), one seed per process; under DeepSpeed ZeRO-1/2, the engine's micro-batch,
  accumulation and clipping filled from the stage's config (`core.distributed.configure_deepspeed`) — the loops
  step the engine themselves (`core.distributed.backward` / `optimizer_step`); FSDP and ZeRO-3 are refused;
* **the schedule**: a `LambdaLR` stepped by the loop once per optimiser step. It is *not* handed to
  ``accelerator.prepare`` (accelerate's wrapper steps it once per process per step, which would run the schedule
  N times too fast on N processes), but registered for checkpointing, so that ``save_state`` carries it;
* **the state**: ``step``, ``train_seconds`` (the clock of the steps themselves: held-out evaluations and
  checkpoint writes are not counted), ``history``, the ``settings`` and ``budget`` a resume is compared with;
* **the budgets**: ``max_steps``, and ``max_minutes`` checked after every step on the main process's clock,
  agreed by all processes (`agree`) so that every process leaves after the same step;
* **the CPU threads**: as many as the cores other processes leave free, looked at again as the run goes
  (`rlhf_helpers.core.threads`), so that a busy machine slows a run as little as it can — and changes none of
  its numbers (`rlhf_helpers.core.thread_invariance`);
* **the checkpoint**: resume (settings compared, `rlhf_helpers.core.checkpoint`), every ``checkpoint_every``
  steps and at the end;
* **faults**: the output directory's lock (`rlhf_helpers.core.lock`), SIGINT / SIGTERM ending the run after the
  current step with a checkpoint (`rlhf_helpers.core.signals`), and the messages said at an early end.

Batches are a pure function of (seed, step) (`batch_indices`), so a resumed run sees exactly the batches it
would have seen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, budget_of, load_checkpoint, resume_settings, save_checkpoint
from .distributed import (
    accelerator_kwargs, agree, configure_deepspeed, refuse_sharded_parameters, shard_plan,
)
from .errors import NonFiniteLossError
from .lock import run_lock
from .precision import configure_deepspeed_precision, refuse_unscaled_fp16, resolve_mixed_precision
from .signals import StopRequest, stop_on_signals
from .threads import ThreadGovernor

STATE_VERSION = 2
"""Version of the state layout in ``trainer_state.json``. 2: one layout for every loop (``train_seconds``);
PPO checkpoints of version 1 (no version key; ``seconds``) are read and converted."""


# ----------------------------------------------------------------------------------------------
# Batch order: one function for every loop
# ----------------------------------------------------------------------------------------------


def batch_indices(step: int, n_rows: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices ``[batch_size]`` of the rows in the global batch of `step`: a fresh seeded permutation per epoch.

    A pure function of its arguments, so a resumed run (and every process) draws exactly the batches it would
    have. Every loop uses it: SFT blocks, reward-model pairs, DPO pairs, PPO prompts.
    """
    steps_per_epoch = n_rows // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {n_rows} training rows.")
    epoch, position = divmod(step, steps_per_epoch)
    permutation = np.random.default_rng([seed, epoch]).permutation(n_rows)
    return torch.from_numpy(permutation[position * batch_size : (position + 1) * batch_size])


# ----------------------------------------------------------------------------------------------
# What is said when a run ends early
# ----------------------------------------------------------------------------------------------


TIMING_KEYS = ("seconds", "threads", "episodes_per_second")  # and every ``time_<phase>``


def without_timings(history: list[dict]) -> list[dict]:
    """A run's logged rows without what the clock and the machine's load decide (seconds, phase times, threads):
    what two runs of the same computation share, bit for bit, however busy their machines were."""
    return [{k: v for k, v in row.items() if not (k.startswith("time_") or k in TIMING_KEYS)} for row in history]


def finished_message(name: str, step: int, seconds: float, config, checkpoint_dir: Path) -> str | None:
    """What to say when a resumed run has nothing left to train (its step or time budget is spent), else None."""
    if step >= config.max_steps:
        return (f"{name} already finished (step {step} of {config.max_steps}): the checkpoint in {checkpoint_dir} "
                f"reached max_steps, nothing to train. Raise {config.flag('max_steps')} to train further, or pass "
                "--no-resume to start afresh.")
    if config.max_minutes is not None and seconds >= 60 * config.max_minutes:
        return (f"{name} already finished: its time budget (max_minutes={config.max_minutes}) was spent at step "
                f"{step} of {config.max_steps}, nothing to train. Raise {config.flag('max_minutes')} to train "
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
# The engine
# ----------------------------------------------------------------------------------------------


class ResumableRun:
    """One resumable training run in ``output_dir`` (checkpoints in ``output_dir/checkpoint``).

    Args:
        config: the stage's config (`rlhf_helpers.config.TrainConfig`: ``max_steps``, ``max_minutes``,
            ``checkpoint_every``, ``micro_batch_size``, ``mixed_precision``, ``seed``, and ``flag(name)``).
        name: what the progress bar and the messages call the stage ("PPO", "SFT").
        batch_rows: rows in one step's global batch, cut into shards (`core.distributed.shard_plan`);
            `batch_field` names the config field(s) it comes from, for the error message.
        mixed_precision: overrides the config's (tests pin "no" for exact comparisons).
        extra_state: called at every checkpoint; its dict is saved beside the state (PPO: the KL controller).
        data_settings: the course settings that shape this run's data (`CourseConfig.data_settings`): compared on
            resume like the stage's own settings.

    After `train`: ``interrupted`` (a signal or `stop_after` ended it before the step budget, checkpointed),
    ``signal`` ("SIGINT" / "SIGTERM"), ``already_finished`` (the checkpoint had spent its budget: nothing
    trained) and ``message`` (what was said about an early end).
    """

    def __init__(self, config, output_dir: str | Path, *, name: str, batch_rows: int, batch_field: str,
                 mixed_precision: str | None = None, extra_state: Callable[[], dict] | None = None,
                 data_settings: dict | None = None):
        self.config, self.name = config, name
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoint"
        self.mixed_precision = resolve_mixed_precision(mixed_precision or config.mixed_precision)
        refuse_unscaled_fp16(self.mixed_precision)  # fp16 on a CPU: no loss scaler
        self.accelerator = Accelerator(mixed_precision=self.mixed_precision, **accelerator_kwargs())
        refuse_sharded_parameters(self.accelerator)  # FSDP, ZeRO-3: refused before any training
        # which shards of every step's batch this process runs (a clear error if they cannot be equal)
        self.plan = shard_plan(self.accelerator, batch_rows, config.micro_batch_size, where=batch_field,
                               micro_flag=config.flag("micro_batch_size"))
        # DeepSpeed (ZeRO-1/2): its micro-batch, accumulation, clipping and precision from ours, before `prepare`
        # reads them
        configure_deepspeed(self.accelerator, self.plan, batch_rows, config.max_grad_norm,
                            where=batch_field, clip_flag=config.flag("max_grad_norm"))
        configure_deepspeed_precision(self.accelerator, self.mixed_precision)
        # each process its own stream (dropout, sampling); batches and shards are seeded apart
        # (Huang et al. 2023, "The N Implementation Details of RLHF with PPO": seeds per process)
        set_seed(config.seed + self.accelerator.process_index)
        self.extra_state = extra_state
        # CPU threads from the cores the machine's other processes leave free (`core.threads`); not on a GPU
        self.threads = ThreadGovernor(getattr(config, "threads", None)) if self.accelerator.device.type == "cpu" \
            else None
        settings = resume_settings(config)
        if data_settings:  # what shapes the data (the filter, the split, the prompts): a resume must share it too
            settings["data"] = json.loads(json.dumps(data_settings, default=str))
        self.state = {"version": STATE_VERSION, "step": 0, "train_seconds": 0.0, "history": [],
                      "settings": settings, "budget": budget_of(config)}
        self.model = self.optimizer = self.scheduler = self.bar = None
        self.interrupted, self.already_finished = False, False
        self.signal: str | None = None
        self.message: str | None = None

    # -- set up -----------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                lr_multiplier: Callable[[int], float]) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Wrap `model` and `optimizer` for the processes (accelerate) and attach the schedule (kept out of
        ``prepare``, registered for checkpointing: see the module's docstring). Returns the wrapped pair."""
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        return self.model, self.optimizer

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """The model, optimiser, schedule and RNG (accelerate) + the state and `extra_state` (JSON), atomically."""
        extra = self.extra_state() if self.extra_state is not None else {}
        save_checkpoint(self.accelerator, self.checkpoint_dir, {**self.state, **extra})

    def resume(self, allow_changed_settings: bool = False, required: tuple[str, ...] = ()) -> dict | None:
        """Load the last checkpoint in the output directory, if any, into the prepared objects and the state.

        Returns the saved state (with the keys of `extra_state`), or None when there is no checkpoint. Raises
        `SettingsChangedError` if it was written with other settings (unless `allow_changed_settings`: then both
        are recorded), `CheckpointError` if it is torn, foreign or lacks a `required` key, `RunLockedError` if
        another run is writing to the directory.
        """
        with run_lock(self.output_dir):
            saved = load_checkpoint(self.accelerator, self.checkpoint_dir, settings=self.state["settings"],
                                    allow_changed_settings=allow_changed_settings, budget=self.state["budget"])
        if saved is None:
            return None
        missing = [key for key in required if not isinstance(saved.get(key), dict)]
        if missing:
            raise CheckpointError(f"The checkpoint in {self.checkpoint_dir} is not a {self.name} checkpoint (no "
                                  f"{', '.join(missing)} state). Start afresh with --no-resume, or choose another "
                                  "--output-dir.")
        if "train_seconds" not in saved:  # version 1 (PPO): the clock was called "seconds"
            saved["train_seconds"] = float(saved.pop("seconds", 0.0))
        saved["version"] = STATE_VERSION
        self.state = {key: value for key, value in saved.items() if key not in required}
        self.accelerator.print(f"Resuming {self.name} from step {saved['step']} ({self.checkpoint_dir})")
        return saved

    # -- steps ------------------------------------------------------------------------------------
    def step(self, work: Callable[[int], object]):
        """One step: ``work(step)`` (its result is returned), then the step count and the clock advance."""
        started = time.perf_counter()
        result = work(self.state["step"])
        self.state["step"] += 1
        self.state["train_seconds"] += time.perf_counter() - started
        return result

    def train(self, work: Callable[[int], object], *, after_step: Callable[[object, bool], None] | None = None,
              postfix: Callable[[object], dict] | None = None, progress: bool = True,
              stop_after: int | None = None) -> None:
        """Run steps until the step or time budget is spent, a stop signal arrives, or `stop_after` steps ran in
        this call (as if the run were killed there: used to test and demonstrate resuming).

        ``work(step)`` does one step's work; ``after_step(result, last)`` runs after it, before the checkpoint
        (held-out evaluations, logs, callbacks; ``last``: the run ends after this step); ``postfix(result)``
        gives the numbers shown on the progress bar. Holds the output directory's lock throughout.
        """
        config, accelerator, state = self.config, self.accelerator, self.state
        self.interrupted, self.already_finished, self.signal = False, False, None
        self.message = finished_message(self.name, state["step"], state["train_seconds"], config,
                                        self.checkpoint_dir)
        if self.message is not None:
            self.already_finished = True
            accelerator.print(self.message)
            return
        if stop_after is not None and stop_after <= 0:
            self.interrupted = True
            return
        with run_lock(self.output_dir), stop_on_signals() as stop:
            self.bar = tqdm(total=config.max_steps, initial=state["step"], desc=self.name,
                            disable=not progress or not accelerator.is_main_process)
            steps_here, reason = 0, None
            while state["step"] < config.max_steps:
                result = self.step(work)
                steps_here += 1
                if self.threads is not None:
                    self.threads.adjust()
                self.bar.update(1)
                if postfix is not None:
                    self.bar.set_postfix(postfix(result))
                reason = self._stop_reason(steps_here, stop_after, stop)
                last = state["step"] >= config.max_steps or reason is not None
                if after_step is not None:
                    after_step(result, last)
                if state["step"] % config.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                if reason is not None:
                    break
            self.bar.close()
        if reason in ("stop_after", "signal") and state["step"] < config.max_steps:
            self.interrupted = True
            if reason == "signal":
                self.signal = stop.signal or "signal"  # None: another process received it
                self.message = interrupted_message(self.name, self.signal, state["step"], self.checkpoint_dir)
                accelerator.print(self.message)

    def _stop_reason(self, steps_here: int, stop_after: int | None, stop: StopRequest) -> str | None:
        """Why the run stops after this step: "signal", "stop_after", "time", or None (go on).

        The same answer on every process: one collective call per step shares the main process's clock and any
        process's stop signal, so no process enters a step that another has left (that would hang its all-reduce).
        """
        state = self.state
        state["train_seconds"], signalled, _ = agree(self.accelerator, seconds=state["train_seconds"],
                                                     stop=stop.signal is not None)
        if signalled:
            return "signal"
        if stop_after is not None and steps_here >= stop_after:
            return "stop_after"
        if self.config.max_minutes is not None and state["train_seconds"] >= 60 * self.config.max_minutes:
            return "time"
        return None

    def check_finite(self, finite: bool, what: str) -> None:
        """Agreed across processes: a non-finite loss on any process stops all of them here, naming the last
        good checkpoint and the way out."""
        _, _, bad = agree(self.accelerator, seconds=0.0, bad=not finite)
        if bad:
            raise NonFiniteLossError(f"{what} is not finite at step {self.state['step']} (on at least one process); "
                                     f"the last good checkpoint is in {self.checkpoint_dir} (lower the learning "
                                     "rate, then run the same command again).")
