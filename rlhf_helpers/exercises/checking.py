"""The machinery every exercise check shares: call the learner's function, compare, say what is wrong.

A check (``check_<exercise>(fn)`` in the sibling modules) feeds the learner's function random and edge-case
inputs, compares each answer with the package's own function (the *reference*), and raises `ExerciseFailed`
with a message that names the mistake when it recognises one. Recognising works by computing what the
common wrong implementations would return (mask ignored, sign flipped, off by one, ...) and matching the
learner's answer against them — so "you whitened over the padding" rather than only "values differ".

The solution in a notebook and the package's function never drift apart silently: the notebook runs the
check on its solution, so a solution that stopped matching the package fails the notebook test.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch


class ExerciseFailed(AssertionError):
    """The learner's function gave a wrong answer; the message says which case and, if known, why."""

    def _render_traceback_(self) -> list[str]:
        """What Jupyter shows for a failed check: the message, not the ~20 lines of the checking machinery. When
        the learner's own code raised, its traceback comes first (that is where the bug is)."""
        lines = []
        if self.__cause__ is not None:
            lines += "".join(traceback.format_exception(self.__cause__)).rstrip("\n").split("\n")
            lines += ["", "The check, on that error:"]
        return lines + [f"ExerciseFailed: {self}"]


@dataclass(frozen=True)
class Exercise:
    """One exercise of the course: where it is, how hard and how important, and its check."""

    notebook: str  # "05"
    name: str  # the function the learner writes, e.g. "compute_gae"
    difficulty: int  # 1 (a few lines) … 5 (a page, and subtle)
    importance: int  # 1 (nice to know) … 5 (the heart of RLHF)
    minutes: int  # a time budget for a learner
    check: Callable = field(compare=False, repr=False)


#: Every exercise of the course, in course order; filled by the `exercise` decorator.
EXERCISES: dict[str, Exercise] = {}


def exercise(notebook: str, name: str, difficulty: int, importance: int, minutes: int):
    """Register a check function as the check of exercise `name` (a decorator)."""

    def register(check: Callable) -> Callable:
        if name in EXERCISES:
            raise ValueError(f"two exercises are called {name!r}")

        @functools.wraps(check)
        def checked(*args, **kwargs):
            # a check seeds and draws what it needs under a forked random state: running it (once, twice, or not
            # at all) leaves the notebook's own torch random stream where it was
            with torch.random.fork_rng(devices=[]):
                return check(*args, **kwargs)

        EXERCISES[name] = Exercise(notebook, name, difficulty, importance, minutes, checked)
        return checked

    return register


# ----------------------------------------------------------------------------------------------
# Calling the learner's code
# ----------------------------------------------------------------------------------------------


def call(fn: Callable, *args, case: str = "", **kwargs):
    """Call the learner's `fn`; a stub (NotImplementedError) or a crash becomes a clear `ExerciseFailed`."""
    name = getattr(fn, "__name__", "your function")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise ExerciseFailed(f"`{name}` is still the stub (it raises NotImplementedError): write its body in "
                             "place of `raise NotImplementedError()`, run that cell, then this one.") from None
    except ExerciseFailed:
        raise
    except Exception as error:  # the learner's bug, shown with the case that triggered it
        raise ExerciseFailed(f"`{name}` raised {type(error).__name__}: {error}"
                             + (f"\n  on the case: {case}" if case else "")) from error


# ----------------------------------------------------------------------------------------------
# Comparing answers
# ----------------------------------------------------------------------------------------------


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=True))


def as_tensor(value, what: str) -> torch.Tensor:
    """The learner's answer as a tensor (numbers and lists are accepted where a number is asked)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (int, float)) or (isinstance(value, (list, tuple)) and value
                                           and all(isinstance(v, (int, float)) for v in value)):
        return torch.tensor(value, dtype=torch.float64)
    raise ExerciseFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}.")


def expect_close(actual, expected: torch.Tensor, what: str, diagnoses: Iterable[tuple[torch.Tensor, str]] = (),
                 atol: float = 1e-5, rtol: float = 1e-4, case: str = "", hint: str = "") -> None:
    """Raise `ExerciseFailed` unless `actual` ≈ `expected`.

    `diagnoses`: ``(what a known mistake returns, the message that names it)`` pairs, tried in order when the
    answer is wrong; the first that matches the learner's answer is the message. `case` describes the input;
    `hint` is added to the message when no diagnosis matches.
    """
    where = f"\n  case: {case}" if case else ""
    actual = as_tensor(actual, what)
    expected = expected.detach()
    if expected.dim() == 0 and actual.dim() == 1 and actual.numel() == 1:
        actual = actual.reshape(())
    if actual.shape != expected.shape:
        raise ExerciseFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.{where}")
    if not torch.isfinite(actual).all() and torch.isfinite(expected).all():
        raise ExerciseFailed(f"{what}: contains NaN or inf where the answer is finite (a division by zero, or a "
                             f"log/exp that overflowed?).{where}")
    if _close(actual, expected, atol, rtol):
        return
    for wrong, message in diagnoses:
        if _close(actual, wrong.detach(), atol, rtol):
            raise ExerciseFailed(f"{what}: {message}{where}")
    difference = (actual.double() - expected.double()).abs()
    index = tuple(int(i) for i in torch.nonzero(difference == difference.max())[0]) if difference.dim() else ()
    got, want = actual[index].item() if index else actual.item(), expected[index].item() if index else expected.item()
    at = f" at index {index}" if index else ""
    hint = f"\n  hint: {hint}" if hint else ""
    raise ExerciseFailed(f"{what}: wrong values (largest difference{at}: got {got:.6g}, expected {want:.6g}).{where}{hint}")


def expect(condition: bool, message: str) -> None:
    """Raise `ExerciseFailed(message)` unless `condition`."""
    if not condition:
        raise ExerciseFailed(message)


def passed(name: str, cases: int) -> None:
    """What a check prints when every case agrees with the reference."""
    print(f"✓ {name}: all {cases} cases agree with the reference.")
