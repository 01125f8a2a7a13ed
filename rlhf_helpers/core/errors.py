"""The package's refusals: errors whose message is written for the user — what happened, what is safe, what to do.

Every refusal is a `CourseError` *and* the built-in error it has always been (a missing model is a
`FileNotFoundError`, a bad value a `ValueError`), so code that catches the built-in type keeps working. The command
line prints a `CourseError` as one ``error:`` line (exit status 2 before any work, 1 once a stage has started;
``RLHF_TRACEBACK=1`` shows the traceback); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class CourseError(Exception):
    """A refusal of this package: its message names the problem and the way out."""


class BadValueError(CourseError, ValueError):
    """A value, a file's content or a combination of settings the course refuses."""


class BadTypeError(CourseError, TypeError):
    """A setting or argument of the wrong type."""


class MissingError(CourseError, FileNotFoundError):
    """A file or directory a stage needs is not there."""


class NotADirectoryRefusal(CourseError, NotADirectoryError):
    """A file where a directory (a model, an output location) was expected."""


class DamagedFileError(CourseError, RuntimeError):
    """A file that is there but cannot be read: truncated, corrupt, or not what it claims to be."""


class UnavailableError(CourseError, OSError):
    """Something outside the course (the hub, the disk) cannot give what a stage needs."""


class DiskFullError(CourseError, OSError):
    """The disk filled up while a stage wrote; the message says how much space is needed and what is intact."""


class NonFiniteLossError(CourseError, FloatingPointError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""
