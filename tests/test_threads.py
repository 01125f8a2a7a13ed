"""`core.threads.ThreadGovernor`: threads follow the cores that other processes leave free (fake counters)."""

import pytest
import torch

from rlhf_helpers.core import threads


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose /proc counters the test advances: ``tick(elapsed, others, own)`` in core-jiffies."""
    state = {"busy": 0, "total": 0, "own": 0}

    def tick(elapsed_per_core, others_busy, own_busy):
        state["total"] += 2 * elapsed_per_core
        state["busy"] += others_busy + own_busy
        state["own"] += own_busy

    # an adapting governor installs `core.thread_invariance`: undone after the test
    monkeypatch.setattr(threads.thread_invariance, "_reference_threads", threads.thread_invariance._reference_threads)
    monkeypatch.setattr(threads.thread_invariance.F, "layer_norm", threads.thread_invariance.F.layer_norm)
    monkeypatch.setenv(threads.ADAPT_ENV_VAR, "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "_machine_busy_and_total", lambda: (state["busy"], state["total"]))
    monkeypatch.setattr(threads, "_own_busy", lambda: state["own"])
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: tick(25, 0, 0))  # the first look: an idle machine
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield tick
    torch.set_num_threads(before)


def test_threads_follow_the_free_cores(machine):
    governor = threads.ThreadGovernor(every_seconds=0)
    assert torch.get_num_threads() == 2  # idle: both cores
    machine(100, others_busy=95, own_busy=100)  # another process kept one core busy
    assert governor.adjust() == 1 and torch.get_num_threads() == 1
    machine(100, others_busy=5, own_busy=100)  # it ended
    assert governor.adjust() == 2
    machine(100, others_busy=20, own_busy=180)  # light load elsewhere (a fifth of a core): keep both
    assert governor.adjust() == 2
    assert [count for _, count in governor.history] == [1, 2]  # each change recorded, with its time


def test_a_pinned_count_is_left_alone(machine, monkeypatch):
    governor = threads.ThreadGovernor(threads=1, every_seconds=0)
    machine(100, others_busy=0, own_busy=100)
    assert governor.adjust() == 1 and not governor.active
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not threads.ThreadGovernor(every_seconds=0).active
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.ADAPT_ENV_VAR, "0")
    assert not threads.ThreadGovernor(every_seconds=0).active


def test_the_real_counters_read():
    busy, total = threads._machine_busy_and_total()
    assert 0 <= busy <= total and threads._own_busy() >= 0 and threads.cores() >= 1
