"""Files a stage wrote or the package ships: where they may be written, how to read them, how to get them back.

* `check_writable_dir`: before any work, that an output directory can be created and written
  (`OutputLocationError` naming the path and the way out otherwise);
* `read_json_file`: a JSON file, or a ValueError naming it when it is truncated or corrupt;
* `restore_hint`: the sentence that says how to get a good copy of a file (``git checkout`` for the shipped
  assets, re-running the stage that wrote it otherwise).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from .assets import ASSETS_DIR
from .errors import BadValueError, CourseError, DiskFullError, MissingError

ARTIFACTS_ENV_VAR = "RLHF_ARTIFACTS"


def artifacts_root() -> Path:
    """Where every stage writes (profile P under ``<root>/P``): `$RLHF_ARTIFACTS` if set, else `artifacts/` beside
    the package in a source checkout, else `~/.cache/rlhf-from-scratch`."""
    env = os.environ.get(ARTIFACTS_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / "artifacts"
    return Path.home() / ".cache" / "rlhf-from-scratch"


# ----------------------------------------------------------------------------------------------
# Where a stage may write
# ----------------------------------------------------------------------------------------------


class OutputLocationError(CourseError, OSError):
    """An output directory that cannot be created or written; the message names the path and the way out."""


def _way_out(path: Path) -> str:
    root = artifacts_root()
    if path == root or root in path.parents:
        return (f"Set {ARTIFACTS_ENV_VAR} to a writable directory (the artifacts root is now {root}), "
                "or choose another --output-dir.")
    return "Choose another --output-dir (a directory you can write)."


def check_writable_dir(path: str | Path, way_out: str | None = None) -> Path:
    """Check, before any work, that directory `path` exists or can be created, and can be written.

    Nothing is created: the nearest existing directory on the way to `path` is tested with a temporary file.
    Raises `OutputLocationError` naming the path and the way out (`way_out`, else: set ``RLHF_ARTIFACTS`` for a
    path under the artifacts root, choose another ``--output-dir`` otherwise). Returns `path`.
    """
    given = Path(path).expanduser()
    path = given.absolute()
    way_out = way_out or _way_out(path)
    existing = path
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        kind = "a file" if existing.is_file() else "not a directory"
        where = f"{path} is {kind}" if existing == path else f"{existing} is {kind}, so {path} cannot be created"
        raise OutputLocationError(f"Cannot write to {path}: {where}. {way_out}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".rlhf-write-test-", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFullError(f"Cannot write to {path}: the disk holding {existing} is full. Free some space (or "
                                f"choose another location), then run the same command again. {way_out}") from err
        reason = err.strerror or type(err).__name__
        raise OutputLocationError(f"Cannot write to {path}: {existing} is not writable ({reason}). {way_out}") from err
    return given


# ----------------------------------------------------------------------------------------------
# Reading what a stage wrote, and how to get a good copy back
# ----------------------------------------------------------------------------------------------


def shipped_profile(directory: str | Path) -> str | None:
    """The profile name if `directory` lies inside the package's shipped assets, else None."""
    try:
        relative = Path(directory).resolve().relative_to(ASSETS_DIR.resolve())
    except (ValueError, OSError):
        return None
    return relative.parts[0] if relative.parts else None


# Which stage wrote a directory, from the run card it leaves there.
_STAGE_OF_RUN_CARD = {"run_card_sft.json": "sft", "run_card_reward.json": "reward", "run_card_ppo.json": "ppo",
                      "run_card_tokenizer.json": "tokenizer", "run_card_reward_trl.json": "reward --trl"}
_STAGE_OF_KIND = {"policy": "sft", "reward": "reward", "ppo": "ppo", "tokenizer": "tokenizer"}


def restore_hint(directory: str | Path, kind: str = "policy") -> str:
    """How to get a good copy of a file in `directory` (a sentence with a capital, no final period).

    Shipped assets: reinstall or ``git checkout``; a directory a stage wrote (found from its run card, else from
    `kind`: "policy", "reward" or "tokenizer"): re-run that stage.
    """
    directory = Path(directory)
    if shipped_profile(directory) is not None:
        return ("It ships with the package: restore it with `git checkout rlhf_helpers/assets` in the course "
                "repository, or reinstall rlhf_helpers")
    stage = next((s for name, s in _STAGE_OF_RUN_CARD.items() if (directory / name).exists()), None)
    if stage is None and (directory / "value_head.safetensors").exists():
        stage = "ppo"
    stage = stage or _STAGE_OF_KIND.get(kind, "sft")
    if stage == "tokenizer":
        return ("Write it again with `python -m rlhf_helpers tokenizer` (it saves the profile's tokenizer under "
                "<artifacts>/<profile>/tokenizer), or copy the tokenizer files from the policy it belongs to")
    return (f"Write it again by re-running the stage that wrote {directory}: `python -m rlhf_helpers {stage}` "
            f"(add `--no-resume` to retrain from scratch), with `--output-dir {directory}` if that was not its "
            "default place")


def read_json_file(file: str | Path, what: str = "file", missing_ok: bool = False, kind: str = "policy") -> dict | None:
    """Parse a JSON file; a truncated or corrupt one raises ValueError naming it and the way out."""
    file = Path(file)
    if not file.exists():
        if missing_ok:
            return None
        raise MissingError(f"{file} is missing. {restore_hint(file.parent, kind)}.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BadValueError(f"The {what} {file} is corrupt or truncated (not valid JSON: {err}). "
                            f"{restore_hint(file.parent, kind)}.") from err
    if not isinstance(data, dict):
        raise BadValueError(f"The {what} {file} holds a JSON {type(data).__name__}, not an object: it is corrupt. "
                            f"{restore_hint(file.parent, kind)}.")
    return data


def permissions_from_umask(directory: str | Path) -> None:
    """Give the files in `directory` the permissions the user's umask asks for (0644 under the usual 022).

    safetensors writes its files 0600 whatever the umask, so a model saved by one user could not be read by the
    group that shares the machine or the artifacts; every stage calls this after saving a model."""
    mask = os.umask(0)
    os.umask(mask)
    for path in Path(directory).iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def write_json_whole(path: str | Path, data) -> None:
    """Write `data` as JSON to `path` through a temporary file and a rename: a run killed mid-write leaves the
    previous file whole, never half of the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    try:
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(path)
    except BaseException:  # a full disk, an interrupt: no half-written file is left beside the whole one
        partial.unlink(missing_ok=True)
        raise
