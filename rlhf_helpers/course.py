"""What the notebooks share that is about the course, not about RLHF: the test budget switch.

The tests run every notebook with ``RLHF_CI=1`` (set in ``conftest.py``), and the long live demos shrink so the
whole course runs in minutes. A notebook never reads that variable itself; it asks `budget`:

    steps = budget(learner=600, ci=40)   # 600 steps for you, 40 when the tests run this notebook

so the learner sees one named call with both numbers, not test plumbing.
"""

from __future__ import annotations

import os

CI_VARIABLE = "RLHF_CI"


def in_ci() -> bool:
    """True when the tests run this notebook (``RLHF_CI=1``)."""
    return os.environ.get(CI_VARIABLE) == "1"


def budget(learner, ci):
    """`learner` when you run the notebook, `ci` when the tests do (numbers, minutes, sizes: anything)."""
    return ci if in_ci() else learner
