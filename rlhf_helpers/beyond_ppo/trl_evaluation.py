"""TRL's trainers evaluated along their runs exactly like ours: a `TrainerCallback` around `HeldOutEvaluator`.

Notebook 08's frontier puts every method on the same two axes — sequence KL to the SFT policy and the gold judge,
both measured on the same 256 held-out prompts with the same sampling seed. Our own loops call the evaluator
themselves (`evaluation.along_training`); TRL's trainers (GRPO, RLOO, DPO) are `transformers.Trainer`s, whose
hook for "do something every n steps" is a callback. `HeldOutCallback` is that hook: it evaluates the policy when
training begins, every ``every`` optimiser steps and when training ends, writes the rows to
``<output_dir>/evaluations.json`` after each one, and can end the run early (``stop_at``) so that the learning-rate
schedule still decays over the planned ``max_steps``, as our PPO's does when notebook 07 stops it at step 150.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..core.files import write_json_whole
from ..core.precision import plain_copy

__all__ = ["HeldOutCallback", "StopAt", "plain_copy"]


class StopAt(TrainerCallback):
    """End training after `stop_at` optimiser steps (None: never), while the learning-rate schedule keeps the
    length of ``max_steps``."""

    def __init__(self, stop_at: int | None):
        self.stop_at = stop_at

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_training_stop = True
        return control


class HeldOutCallback(StopAt):
    """Evaluate a `transformers.Trainer`'s policy with `evaluator` along the run.

    Args:
        evaluator: a `HeldOutEvaluator` (``evaluator(policy_lm) -> metrics``).
        every: evaluate every ``every`` optimiser steps (TRL's ``global_step``), at the start and at the end.
        output_dir: where ``evaluations.json`` goes (rewritten after each evaluation).
        step_unit: optimiser steps per reported step: rows carry ``step = global_step // step_unit`` (for GRPO and
            RLOO the Adam steps of one round of 64 completions, so a step means what a PPO step means; 1 for DPO).
        stop_at: end training after this many optimiser steps (None: at ``max_steps``).
        keep_samples: keep the first ``keep_samples`` held-out samples in each row.
    Rows: ``{"step", "train_seconds", **metrics, "eval_seconds"}``; ``train_seconds`` excludes the evaluations.
    """

    def __init__(self, evaluator, every: int, output_dir, step_unit: int = 1, stop_at: int | None = None,
                 keep_samples: int = 0):
        if every < 1 or step_unit < 1:
            raise ValueError(f"every and step_unit must be >= 1, got every={every}, step_unit={step_unit}.")
        super().__init__(stop_at)
        self.evaluator, self.every, self.step_unit = evaluator, int(every), int(step_unit)
        self.path = Path(output_dir) / "evaluations.json"
        self.keep_samples = keep_samples
        self.rows: list[dict] = []
        self.started: float | None = None
        self.eval_seconds = 0.0

    def _evaluate(self, state, model) -> None:
        started = time.perf_counter()
        train_seconds = started - self.started - self.eval_seconds  # the time spent training so far
        with torch.no_grad():
            metrics = self.evaluator(plain_copy(model))
        spent = time.perf_counter() - started
        self.eval_seconds += spent
        row = {"step": state.global_step // self.step_unit, "train_seconds": round(train_seconds, 1), **metrics,
               "eval_seconds": round(spent, 1)}
        if self.keep_samples:
            row["samples"] = self.evaluator.last_samples[: self.keep_samples]
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_whole(self.path, self.rows)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.started = time.perf_counter()
        self._evaluate(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        super().on_step_end(args, state, control)
        if state.global_step % self.every == 0 or control.should_training_stop:
            self._evaluate(state, model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.rows or self.rows[-1]["step"] != state.global_step // self.step_unit:
            self._evaluate(state, model)
