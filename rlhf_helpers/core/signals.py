"""Stop a training loop at the end of its current step on Ctrl-C (SIGINT) or SIGTERM, so it can save first.

``with stop_on_signals() as stop:`` installs handlers for SIGINT and SIGTERM for the duration of the loop and
restores the previous ones afterwards. The first signal is only recorded (``stop.signal == "SIGINT"``); the loop
reads ``stop.signal`` after each step, writes a checkpoint and returns. A second signal stops at
once, as usual: KeyboardInterrupt for SIGINT, SystemExit(143) for SIGTERM (the steps since the last checkpoint
are then lost; the checkpoint swap survives it, see `rlhf_helpers.core.checkpoint`).

On several processes (``accelerate launch``) the loops share the flag (`rlhf_helpers.core.distributed.agree`, with
the main process's clock), so they all stop after the same step.
Outside the main thread (where Python cannot install signal handlers) nothing is installed.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The first stop signal received while a loop runs (None: none)."""

    def __init__(self):
        self.signal: str | None = None

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:  # the second signal: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signal = name
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {name} again"
        # os.write, not print: a print from a handler can collide with a print (or progress bar) in progress
        os.write(2, f"\n{name} received: finishing the current step, then saving a checkpoint "
                    f"({again} to stop at once, losing the steps since the last checkpoint).\n".encode())


@contextmanager
def stop_on_signals():
    """Record SIGINT / SIGTERM instead of dying for the duration of the block; yields the `StopRequest`."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, request._handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
