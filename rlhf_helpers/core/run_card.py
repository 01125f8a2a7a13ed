"""Run cards: one JSON file per command run, written beside its artifacts.

A run card records what is needed to trust and repeat a result: the config, the seed, the versions
of the libraries, the git commit, the metrics and how long each phase took.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .distributed import is_main_process

_LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "trl", "numpy", "pandas")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the course depends on (missing ones are skipped)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    """The checkout's commit (with '-dirty' when files changed), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def write_run_card(
    directory: str | Path,
    stage: str,
    config: dict,
    metrics: dict | None = None,
    timings: dict | None = None,
    **extra,
) -> Path:
    """Write ``<directory>/run_card_<stage>.json`` and return its path (on several processes: the main one writes)."""
    directory = Path(directory)
    path = directory / f"run_card_{stage}.json"
    if not is_main_process():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    card = {
        "stage": stage,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "seed": config.get("seed"),
        "metrics": metrics or {},
        "timings_s": timings or {},
        "versions": library_versions(),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        **extra,
    }
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return path


def read_run_card(directory: str | Path, stage: str) -> dict:
    """Load ``run_card_<stage>.json`` from `directory`."""
    return json.loads((Path(directory) / f"run_card_{stage}.json").read_text())


class Timer:
    """Accumulates wall time per named phase: ``with timer("rollout"): ...``; ``timer.totals``."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self.start

        return _Phase()


class SweepCard:
    """The run card of a sweep that runs part by part (notebook 07's, notebook 08's): ``{"parts": {name: {"result",
    "wall_seconds"}}, ...}``, rewritten after every part (temporary file + rename: a sweep killed mid-write leaves
    the previous card whole), so a killed sweep keeps what it finished and `todo` skips it next time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("parts", {})

    def todo(self, parts, redo: bool = False) -> list[str]:
        """The `parts` not in the card yet (all of them with `redo`), in the order given."""
        return [p for p in parts if redo or p not in self.data["parts"]]

    def add(self, part: str, result: dict, wall_seconds: float, **header) -> None:
        """Record one finished part, refresh the header (when, commit, versions, machine, and `header`), write."""
        from .files import write_json_whole
        from .precision import resolve_mixed_precision
        from .thread_invariance import numerics_threads

        self.data["parts"][part] = {"result": result, "wall_seconds": round(wall_seconds, 1)}
        self.data.update(created=time.strftime("%Y-%m-%d %H:%M:%S"), commit=git_commit(), versions=library_versions(),
                         machine={"processor": platform.processor() or platform.machine(),
                                  # the count whose numbers the run computed (fewer threads on a busy machine
                                  # reproduce the full count's: `core.thread_invariance`)
                                  "threads": numerics_threads(),
                                  "mixed_precision": resolve_mixed_precision("auto")}, **header)
        write_json_whole(self.path, self.data)
