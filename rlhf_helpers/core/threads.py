"""CPU threads chosen from the cores other processes leave free, re-checked as a run goes.

PyTorch starts one intra-op thread per core. On a machine where another process is busy (a second kernel, a
browser, a test run), that is one thread too many: the OpenMP threads of one operation wait for each other at
every barrier, and the thread that shares its core with the other process holds all of them back. Measured on
2 cores, 60 PPO steps at the tiny defaults, median seconds per step: 2 threads 0.32 idle but 1.03 beside one
busy process (3.2x slower); 1 thread 0.43 idle and 0.43 beside it. So the right count depends on the load, and
the load changes while a run goes.

`ThreadGovernor` reads how much CPU the *other* processes used since its last look — the machine's busy time
(``/proc/stat``) minus this process's own (``/proc/self/stat``) — and sets ``torch.set_num_threads`` to the
cores they left free (at least 1, at most the cores there are). The run engine (`rlhf_helpers.core.run`) asks
it after every step; it looks again every `every_seconds`. Nothing is measured by sleeping: the counters are
cumulative, so a look costs two small file reads.

A thread count is not allowed to change the result: with fewer threads than cores, the two kernels whose
rounding follows the thread count (LayerNorm's and the attention softmax's backward) are computed as all the
cores would compute them (`rlhf_helpers.core.thread_invariance`), so a seed trains the same policy, bit for bit,
on an idle and on a busy machine.

It stays out of the way when the user chose: ``OMP_NUM_THREADS`` set in the environment, or a config's
``threads`` set to a number, pins the count; ``RLHF_ADAPT_THREADS=0`` leaves PyTorch's own count (the tests set
it: comparisons of two runs bit for bit need the same count in both). Off Linux (no ``/proc``) or on a GPU it
does nothing.
"""

from __future__ import annotations

import os
import time

import torch

from . import thread_invariance

ADAPT_ENV_VAR = "RLHF_ADAPT_THREADS"


def _machine_busy_and_total() -> tuple[int, int]:
    """Busy and total jiffies of all cores since boot (``/proc/stat``'s first line)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_busy() -> int:
    """Jiffies this process (all its threads) has run: user + system time (``/proc/self/stat``)."""
    with open("/proc/self/stat") as handle:
        after_name = handle.read().rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadGovernor:
    """Keeps ``torch.get_num_threads()`` at the number of cores other processes leave free.

    Args:
        threads: a fixed count (then nothing adapts), or None to adapt.
        every_seconds: how often to look again at the load.
    """

    def __init__(self, threads: int | None = None, every_seconds: float = 5.0):
        self.cores = cores()
        self.every_seconds = every_seconds
        self.fixed = threads if threads is not None else (int(os.environ["OMP_NUM_THREADS"])
                                                          if os.environ.get("OMP_NUM_THREADS", "").isdigit() else None)
        self.active = (self.fixed is None and os.path.exists("/proc/stat") and self.cores > 1
                       and os.environ.get(ADAPT_ENV_VAR, "1") != "0")
        self.history: list[tuple[float, int]] = []  # (seconds since start, threads) at every change
        self._started = time.perf_counter()
        if self.fixed is not None:
            torch.set_num_threads(max(1, self.fixed))
        self._last = self._read() if self.active else None
        if self.active:
            # fewer threads must not mean other numbers: the few kernels whose sums follow the thread count are
            # summed as all the cores would sum them (`core.thread_invariance`), so idle and busy give one result
            thread_invariance.install(self.cores)
            time.sleep(0.25)  # a first look before the first step: a quarter of a second of the others alone
            self.adjust(force=True)

    def _read(self) -> tuple[float, int, int, int]:
        busy, total = _machine_busy_and_total()
        return time.perf_counter(), busy, total, _own_busy()

    def others_busy(self) -> float | None:
        """Cores the other processes kept busy, on average, since the last look (None: not measured yet)."""
        if not self.active:
            return None
        now = self._read()
        _, busy0, total0, own0 = self._last
        _, busy1, total1, own1 = now
        self._last = now
        elapsed_per_core = (total1 - total0) / self.cores
        if elapsed_per_core <= 0:
            return None
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / elapsed_per_core)

    def adjust(self, force: bool = False) -> int:
        """Look at the load if `every_seconds` have passed (or `force`), set the thread count; return it."""
        if not self.active:
            return torch.get_num_threads()
        if not force and time.perf_counter() - self._last[0] < self.every_seconds:
            return torch.get_num_threads()
        others = self.others_busy()
        if others is None:
            return torch.get_num_threads()
        # a core the others use more than a third of the time is theirs: a thread there waits at every barrier
        free = self.cores - int(others + 2 / 3)
        wanted = min(self.cores, max(1, free))
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
            self.history.append((round(time.perf_counter() - self._started, 1), wanted))
        return wanted
