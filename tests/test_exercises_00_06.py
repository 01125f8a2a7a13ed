"""The PPO-update exercise of notebook 06: the notebook's solution pattern is what its check accepts.

The exercises' CASES (reference, stub, wrong implementations) live in tests/exercise_cases/ and run in
tests/test_exercises.py.
"""

from exercise_cases.cases_00_06 import make_update


def test_the_hand_written_update_equals_the_package_on_the_check_setup():
    """The notebook's solution pattern (no accelerate calls but backward) is what the check accepts."""
    from rlhf_helpers import exercises

    exercises.check_ppo_update(make_update())
