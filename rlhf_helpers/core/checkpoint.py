"""Checkpoints that survive a crash: written beside the old one, then swapped in.

A checkpoint is a directory holding accelerate's state (model, optimiser, scheduler, RNG: ``save_state``) and
``trainer_state.json`` (step, history, anything else the stage needs to resume). The JSON file is written
*last*, so a directory that has it is complete.

Saving writes ``checkpoint.tmp``, moves the old ``checkpoint`` aside to ``checkpoint.old``, renames the new one
into place, then deletes the old one. A run killed at any moment leaves a complete checkpoint under one of the
three names, and `load_checkpoint` finds it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"


def save_checkpoint(accelerator, checkpoint_dir: str | Path, state: dict) -> None:
    """Save accelerate's state and `state` (JSON) to `checkpoint_dir`, atomically (main process writes)."""
    checkpoint_dir = Path(checkpoint_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp, old = checkpoint_dir.with_name("checkpoint.tmp"), checkpoint_dir.with_name("checkpoint.old")
        if not checkpoint_dir.exists() and (tmp / STATE_FILE).exists():
            tmp.rename(checkpoint_dir)  # the last save's swap was cut short: keep its finished copy, don't delete it
        shutil.rmtree(tmp, ignore_errors=True)
        # pickle, not safetensors: the tied LM head and embedding are one tensor, which safetensors cannot
        # store twice (accelerate would drop one and warn on every save).
        accelerator.save_state(str(tmp), safe_serialization=False)
        (tmp / STATE_FILE).write_text(json.dumps(state))
        if checkpoint_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            checkpoint_dir.rename(old)
        tmp.rename(checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint left by the last save (recovering from a save that was cut short), or None."""
    checkpoint_dir = Path(checkpoint_dir)
    candidates = [checkpoint_dir, checkpoint_dir.with_name("checkpoint.tmp"), checkpoint_dir.with_name("checkpoint.old")]
    for candidate in candidates:  # newest first: a finished tmp is newer than an old one
        if (candidate / STATE_FILE).exists():
            return candidate
    return None


def load_checkpoint(accelerator, checkpoint_dir: str | Path) -> dict | None:
    """Restore accelerate's state from the last complete checkpoint; return its JSON state (None: none)."""
    found = complete_checkpoint(checkpoint_dir)
    if found is None:
        return None
    try:
        state = json.loads((found / STATE_FILE).read_text())
        accelerator.load_state(str(found))
    except Exception as err:  # a torn or foreign file: say which, and the way out
        raise RuntimeError(f"The checkpoint in {found} cannot be loaded ({type(err).__name__}: {err}). Delete it "
                           "or start afresh with --no-resume (the finished model files beside it are kept).") from err
    return state
