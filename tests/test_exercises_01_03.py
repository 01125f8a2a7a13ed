"""Every exercise of notebooks 01–03 has CASES (tests/exercise_cases/cases_01_03.py).

The reference / stub / wrong-implementation tests of those CASES, and the notebooks' solution cells run with only
torch/F/math/np/pd, are in tests/test_exercises.py.
"""

from exercise_cases.cases_01_03 import CASES

from rlhf_helpers.exercises import EXERCISES


def test_every_exercise_of_01_to_03_has_cases():
    registered = {name for name, e in EXERCISES.items() if e.notebook in ("01", "02", "03")}
    assert registered == {name for name, _, _ in CASES}
