"""The data of the exercise-check tests: one ``cases_*.py`` per notebook group, each holding ``CASES``
(loaded by tests/test_exercises.py). Named so that pytest does not collect them as tests."""
