"""Checkpoints that survive a crash: written beside the old one, then swapped in.

A checkpoint is a directory holding accelerate's state (model, optimiser, scheduler, RNG: ``save_state``) and
``trainer_state.json`` (step, history, anything else the stage needs to resume). The JSON file is written
*last*, so a directory that has it is complete.

Saving writes ``checkpoint.tmp``, moves the old ``checkpoint`` aside to ``checkpoint.old``, renames the new one
into place, then deletes the old one. A run killed at any moment leaves a complete checkpoint under one of the
three names, and `load_checkpoint` finds it.

Loading checks every file first, so a torn or foreign file is named in one `CheckpointError` with the way out
(``--no-resume`` or deleting the checkpoint), never a library traceback; nothing is deleted. The JSON state also
holds the run's settings (`resume_settings`: the stage config minus its budget fields); a resume whose settings
differ is refused with a `SettingsChangedError` listing each field, unless `allow_changed_settings` (then both
are recorded in ``settings_changes``). The budget (`budget_of`: ``max_steps``, ``max_minutes``) may change on a
resume, to extend a run: that is said and recorded in ``settings_changes`` too.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import zipfile
from pathlib import Path

from safetensors import safe_open

from .errors import CourseError, DiskFullError

STATE_FILE = "trainer_state.json"
BUDGET_FIELDS = ("max_steps", "max_minutes", "checkpoint_every", "eval_every", "log_every", "threads")
"""Config fields a resumed run may change freely: how long to train, how often to save, evaluate and log, and the
CPU threads (they change speed, not what is computed beyond float rounding)."""


class CheckpointError(CourseError, RuntimeError):
    """A checkpoint that cannot be loaded: the message names the file and the way out."""


class SettingsChangedError(CourseError, ValueError):
    """A resume whose settings differ from the checkpoint's, not allowed by ``allow_changed_settings``."""


def save_checkpoint(accelerator, checkpoint_dir: str | Path, state: dict) -> None:
    """Save accelerate's state and `state` (JSON) to `checkpoint_dir`, atomically.

    Every process must call it: each saves its own RNG state (``random_states_<rank>.pkl``), the main process
    the model, optimiser and schedule, then writes the JSON file and swaps the directory in. On several
    machines the output directory must be on a file system they share.
    """
    checkpoint_dir = Path(checkpoint_dir)
    tmp = checkpoint_dir.with_name("checkpoint.tmp")
    try:
        _save(accelerator, checkpoint_dir, tmp, state)
    except (OSError, RuntimeError) as err:
        if not _disk_full(err, tmp):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # the partial new checkpoint: the last good one is untouched
        last = complete_checkpoint(checkpoint_dir)
        kept = (f"The last good checkpoint (step {_step_of(last)}) in {last} is intact" if last is not None
                else "No checkpoint had been written yet")
        raise DiskFullError(f"The disk filled up while writing a checkpoint to {tmp} ({err}). {kept}; "
                            f"the partial one was removed. A checkpoint here needs about {_size_mb(last, state)} MB "
                            "free: free that much (or more), then run the same command again to resume.") from err


def _disk_full(err: BaseException, tmp: Path) -> bool:
    """Whether a failed save ran out of disk: ENOSPC, or torch's zip writer failing (it reports a full disk as
    "unexpected pos ..." or "file write failed") while the disk holds less than a megabyte."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left" in str(err):
        return True
    try:
        return shutil.disk_usage(tmp.parent).free < 1_000_000
    except OSError:
        return False


def _step_of(found: Path) -> object:
    try:
        return json.loads((found / STATE_FILE).read_text()).get("step", "?")
    except (OSError, ValueError):
        return "?"


def _size_mb(found: Path | None, state: dict) -> int:
    """Megabytes a checkpoint takes: the last complete one's size, else a floor from the state alone."""
    if found is None:
        return max(1, len(json.dumps(state)) // 1_000_000)
    return max(1, round(sum(f.stat().st_size for f in found.iterdir() if f.is_file()) / 1e6))


def _save(accelerator, checkpoint_dir: Path, tmp: Path, state: dict) -> None:
    old = checkpoint_dir.with_name("checkpoint.old")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not checkpoint_dir.exists() and (tmp / STATE_FILE).exists():
            tmp.rename(checkpoint_dir)  # the last save's swap was cut short: keep its finished copy, don't delete it
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # pickle, not safetensors: the tied LM head and embedding are one tensor, which safetensors cannot
    # store twice (accelerate would drop one and warn on every save).
    accelerator.save_state(str(tmp), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
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


def load_checkpoint(accelerator, checkpoint_dir: str | Path, settings: dict | None = None,
                    allow_changed_settings: bool = False, budget: dict | None = None) -> dict | None:
    """Restore accelerate's state from the last complete checkpoint; return its JSON state (None: none).

    `settings` (see `resume_settings`): compared with the checkpoint's before anything is loaded; a difference
    raises `SettingsChangedError` unless `allow_changed_settings`, which records it in the state instead.
    `budget` (see `budget_of`): a new step or time budget is allowed, but said and recorded (``settings_changes``),
    since the learning-rate schedule runs over ``max_steps``.
    Raises `CheckpointError` (naming the file, and the way out) for a torn or foreign checkpoint.
    """
    found = complete_checkpoint(checkpoint_dir)
    if found is None:
        checkpoint_dir = Path(checkpoint_dir)
        if checkpoint_dir.is_dir():  # a swapped-in checkpoint always holds its state file: this one was damaged
            raise CheckpointError(_way_out(f"The checkpoint {checkpoint_dir} has no {STATE_FILE} (deleted or "
                                           "damaged), so its step and history are unknown", checkpoint_dir))
        return None
    for path in sorted(found.iterdir()):
        problem = _file_problem(path)
        if problem is not None:
            raise CheckpointError(_way_out(f"The checkpoint file {path} is damaged ({problem})", found))
    state = json.loads((found / STATE_FILE).read_text())
    if settings is not None:
        _check_settings(accelerator, state, settings, found, allow_changed_settings)
    if budget is not None:
        _note_budget_change(accelerator, state, budget)
    try:
        accelerator.load_state(str(found))
    except Exception as err:  # a file we could not vet: still say where, and the way out
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise CheckpointError(_way_out(f"The checkpoint in {found} cannot be loaded ({type(err).__name__}: "
                                       f"{detail})", found)) from err
    return state


def _way_out(what: str, found: Path) -> str:
    return (f"{what}. Start afresh with --no-resume (the new run replaces the checkpoint), or delete {found}. "
            f"Nothing was deleted: the finished model files in {found.parent} stay until a new run finishes.")


def _file_problem(path: Path) -> str | None:
    """What is wrong with one checkpoint file (None: it looks whole). Cheap: no tensor is read."""
    if not path.is_file():
        return None
    if path.name == STATE_FILE:
        try:
            state = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            return f"not valid JSON, truncated? {type(err).__name__}: {err}"
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            return "not a training state of this course: no step number"
        return None
    if path.suffix in (".bin", ".pkl", ".pt", ".pth"):  # torch.save writes a zip archive; a torn one has no end
        return None if zipfile.is_zipfile(path) else "truncated, or not a file written by torch.save"
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    return None


def safetensors_problem(path: Path) -> str | None:
    """Whether a safetensors file is whole: `safe_open` reads only its header and checks that the tensors' bytes
    cover the rest of the file exactly (a truncated file fails)."""
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as err:  # safetensors raises its own error type for every kind of damage
        return f"truncated, or not a safetensors file ({type(err).__name__}: {err})"


# ----------------------------------------------------------------------------------------------
# The settings a resumed run must share with its checkpoint
# ----------------------------------------------------------------------------------------------


def resume_settings(config) -> dict:
    """The stage config (a dataclass) as a JSON-ready dict, without the budget fields a resume may change."""
    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {k: v for k, v in values.items() if k not in BUDGET_FIELDS}


def budget_of(config) -> dict:
    """The budget of a stage config: ``max_steps`` (its learning-rate schedule runs over them) and ``max_minutes``."""
    return {"max_steps": config.max_steps, "max_minutes": config.max_minutes}


def _note_budget_change(accelerator, state: dict, budget: dict) -> None:
    """Say and record (``settings_changes``) a resume with another budget than the checkpoint's; then adopt it."""
    saved = state.get("budget")
    state["budget"] = budget
    if saved is None:  # a checkpoint written before budgets were recorded
        return
    changed = {key: {"saved": saved.get(key), "now": value} for key, value in budget.items() if saved.get(key) != value}
    if not changed:
        return
    what = ", ".join(f"{key} {v['saved']} -> {v['now']}" for key, v in changed.items())
    schedule = (" The learning-rate schedule now runs over the new max_steps (from this step on)."
                if "max_steps" in changed else "")
    accelerator.print(f"Resuming at step {state['step']} with a new budget: {what}.{schedule} Recorded in the run "
                      "card (settings_changes).")
    state.setdefault("settings_changes", []).append({"step": state["step"], "budget": changed})


def _check_settings(accelerator, state: dict, settings: dict, found: Path, allow: bool) -> None:
    """Refuse (or, when allowed, record) a resume whose settings differ from the checkpoint's."""
    saved = state.get("settings")
    if saved is None:  # a checkpoint written before settings were recorded: nothing to compare with
        state["settings"] = settings
        return
    missing = "(absent)"
    # "data" (the settings that shape the data) is recorded since state version 2: an older checkpoint lacks it
    keys = sorted((set(saved) | set(settings)) - ({"data"} - set(saved)))
    changed = {key: {"saved": saved.get(key, missing), "now": settings.get(key, missing)}
               for key in keys
               if json.dumps(saved.get(key, missing)) != json.dumps(settings.get(key, missing))}  # NaN == NaN here
    if not changed:
        return
    lines = "\n".join(f"  {key}: {v['saved']!r} (saved) vs {v['now']!r} (now)" for key, v in changed.items())
    if not allow:
        raise SettingsChangedError(
            f"The checkpoint in {found} was written with other settings:\n{lines}\nResuming would mix two runs. "
            "Run again with the saved settings, pass --allow-changed-settings (allow_changed_settings=True) to "
            "resume anyway (both are recorded), or start afresh with --no-resume or another --output-dir.")
    accelerator.print(f"Resuming from {found} with changed settings (recorded in the checkpoint and the run card):"
                      f"\n{lines}")
    state["settings"] = settings
    state.setdefault("settings_changes", []).append({"step": state["step"], "changed": changed})
