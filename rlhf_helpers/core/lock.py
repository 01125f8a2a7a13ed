"""One run at a time per output directory: ``output_dir/.lock``.

``with run_lock(output_dir):`` creates the lock file atomically (``O_CREAT | O_EXCL``) holding the pid, the host,
the start time and the command, and deletes it at the end (also on an exception). A second run into the same
directory fails at once with `RunLockedError`, naming the pid and the lock file. A lock left by a process that
is no longer alive on this host (a run killed with ``kill -9``) is stale: it is taken over, with a note.

The lock is re-entrant within a process (a stage holds it around the training loop, which takes it too). On
several processes (``accelerate launch``) only the main process takes it, and all of them raise if it is held.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from accelerate.utils import broadcast_object_list

from .distributed import process_state
from .errors import CourseError, DiskFullError
from .files import check_writable_dir

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # lock files this process holds -> nesting depth


class RunLockedError(CourseError, RuntimeError):
    """Another live run holds the output directory's lock."""


def check_not_locked(output_dir: str | Path) -> None:
    """Refuse at once, before any work, when a live run holds ``output_dir/.lock`` (`RunLockedError`). The stage
    takes the lock itself right after (`run_lock`): this only makes the refusal immediate."""
    path = Path(os.path.abspath(Path(output_dir) / LOCK_NAME))
    if not path.exists() or str(path) in _held:
        return
    _, holder = _read(path)
    if holder and _alive(holder, str(path)):
        raise RunLockedError(_held_message(path, holder))


@contextmanager
def run_lock(output_dir: str | Path):
    """Hold ``output_dir/.lock`` for the duration of the block (creating `output_dir` if needed)."""
    path = Path(os.path.abspath(Path(output_dir) / LOCK_NAME))
    state = process_state()  # the process group, as the training loop's `Accelerator` will see it
    error, acquired = None, False
    if state.is_main_process:
        try:
            acquired = _acquire(path)
        except (RunLockedError, OSError) as err:
            error = err
    if state.num_processes > 1:  # every process learns whether the main one got the lock
        shared = [None if error is None else str(error)]
        broadcast_object_list(shared)
        if shared[0] is not None and error is None:
            error = RunLockedError(shared[0])
    if error is not None:
        raise error
    try:
        yield path
    finally:
        if acquired:
            _release(path)


def _acquire(path: Path) -> bool:
    """Take the lock (or re-enter it); True when this call must release it. Raises `RunLockedError`."""
    key = str(path)
    if key in _held:
        _held[key] += 1
        return True
    _make_directory(path.parent)
    mine = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    for _ in range(5):
        try:
            _create(path, json.dumps(mine) + "\n")
        except FileExistsError:
            text, holder = _read(path)
            if _alive(holder, key):
                raise RunLockedError(_held_message(path, holder)) from None
            _take_over(path, text, holder)
            continue
        _held[key] = 1
        return True
    raise RunLockedError(f"Could not take the lock {path}: other runs keep taking it. Wait for them, or choose "
                         "another --output-dir.")


def _create(path: Path, text: str) -> None:
    """Create the lock file with `text`, atomically (``FileExistsError`` if it exists); a full disk is named."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        except OSError:
            path.unlink(missing_ok=True)  # a half-written lock would be read as another run's
            raise
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DiskFullError(f"The disk holding {path.parent} is full: the lock file {path} could not be "
                                "written. Free some space (or choose another --output-dir / RLHF_ARTIFACTS), then "
                                "run the same command again.") from err
        raise


def _release(path: Path) -> None:
    key = str(path)
    _held[key] -= 1
    if _held[key] > 0:
        return
    del _held[key]
    _, holder = _read(path, retry=False)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _make_directory(directory: Path) -> None:
    """Create the output directory, after the same check the stages make up front (`check_writable_dir`)."""
    check_writable_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)


def _read(path: Path, retry: bool = True) -> tuple[str, dict]:
    """The lock file's text and contents ({} when unreadable); an empty file may be one being written: wait once."""
    text = ""
    for attempt in range(2 if retry else 1):
        if attempt:
            time.sleep(0.2)
        try:
            text = path.read_text()
            holder = json.loads(text)
        except FileNotFoundError:
            return "", {}
        except (OSError, ValueError):
            continue
        if isinstance(holder, dict):
            return text, holder
    return text, {}


def _alive(holder: dict, key: str) -> bool:
    """Whether the process named in the lock may still be running (a lock from another host: assume so)."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not holder:
        return False  # unreadable or foreign: nobody can be relying on it
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return key in _held  # our own pid but not held by us: left over (e.g. a pid recycled)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:  # a zombie (killed, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _take_over(path: Path, text: str, holder: dict) -> None:
    """Remove a stale lock, unless another run replaced it in the meantime (then put that one back)."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run removed it first: try again
    if aside.read_text() != text:  # not the stale lock we read: someone else's fresh lock, give it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    who = f"pid {holder['pid']} on {holder.get('host')}" if holder else "an unreadable lock"
    print(f"Note: took over the stale lock {path} ({who} is no longer running: that run was killed).")


def _held_message(path: Path, holder: dict) -> str:
    where = "this process" if holder["pid"] == os.getpid() else f"pid {holder['pid']} on {holder.get('host')}"
    return (f"Another run is writing to {path.parent}: {where} holds the lock file {path} (since "
            f"{holder.get('started', '?')}; command: {holder.get('command', '?')}). Wait for it to finish or choose "
            f"another --output-dir; if that process is gone, delete {path}.")
