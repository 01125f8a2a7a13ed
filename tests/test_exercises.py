"""Every exercise check can fail, and the learner's notebooks are generated, current, and fail on their stubs.

Each ``tests/exercise_cases/cases_*.py`` module (data, not collected as tests) lists ``CASES``: (exercise name,
reference implementation, [(wrong implementation, a fragment its diagnosis must contain), ...]). Here every check
must accept its reference, reject the stub with the stub message, and reject every wrong implementation with the
named diagnosis.
"""

import importlib
import inspect
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers import exercises
from rlhf_helpers.exercises import EXERCISES, ExerciseFailed
from rlhf_helpers.exercises.learner import (BEGIN, END, MarkerError, has_solution, learner_notebook, solution_only,
                                            strip_solutions, stub_functions, write_learner_notebooks,
                                            write_mistake_boxes)
from rlhf_helpers.exercises.mistakes import MISTAKES, mistakes_box

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CASE_FILES = sorted((Path(__file__).parent / "exercise_cases").glob("cases_*.py"))


def _load_cases():
    cases = []
    for path in CASE_FILES:  # imported by name (tests/ is on sys.path), so the test files share the same modules
        cases += list(importlib.import_module(f"exercise_cases.{path.stem}").CASES)
    return cases


CASES = _load_cases()
BY_NAME = {name: (reference, wrongs) for name, reference, wrongs in CASES}
WRONG = [(name, wrong, fragment) for name, _, wrongs in CASES for wrong, fragment in wrongs]


def check_of(name):
    return EXERCISES[name].check


def stub(*args, **kwargs):
    raise NotImplementedError()


def test_the_course_has_at_least_20_exercises_in_notebooks_01_to_06():
    in_01_06 = [e for e in EXERCISES.values() if "01" <= e.notebook <= "06"]
    assert len(in_01_06) >= 20, sorted(EXERCISES)
    for e in EXERCISES.values():
        assert 1 <= e.difficulty <= 5 and 1 <= e.importance <= 5 and e.minutes > 0, e


def test_every_exercise_has_a_reference_and_a_wrong_implementation():
    missing = [name for name in EXERCISES if name not in BY_NAME or not BY_NAME[name][1]]
    assert not missing, f"no CASES (reference + at least one wrong implementation) for: {missing}"
    unknown = [name for name in BY_NAME if name not in EXERCISES]
    assert not unknown, f"CASES for exercises that are not registered: {unknown}"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_the_check_accepts_the_reference(name, capsys):
    torch.manual_seed(12345)
    before = torch.random.get_rng_state()
    check_of(name)(BY_NAME[name][0])
    assert "✓" in capsys.readouterr().out
    # the learner's notebook draws the same random numbers whether or not (or how often) it ran the check
    assert torch.equal(torch.random.get_rng_state(), before), "the check moved the global torch random stream"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_the_check_rejects_the_stub(name):
    with pytest.raises(ExerciseFailed, match="stub"):
        check_of(name)(stub)


@pytest.mark.parametrize("name,wrong,fragment", WRONG, ids=[f"{n}-{getattr(w, '__name__', 'wrong')}-{i}"
                                                            for i, (n, w, _) in enumerate(WRONG)])
def test_the_check_rejects_a_wrong_implementation_and_says_why(name, wrong, fragment):
    with pytest.raises(ExerciseFailed) as failure:
        check_of(name)(wrong)
    message = str(failure.value)
    assert fragment in message, f"{name}: expected the diagnosis {fragment!r}, got:\n{message}"
    # a named diagnosis is listed in the exercise's "common mistakes" box (the generic messages are its last line)
    if not any(generic in message for generic in GENERIC_MESSAGES):
        listed = [f for _, f in MISTAKES[name]]
        assert any(f in message for f in listed), (f"{name}: the check says\n{message}\nbut no entry of "
                                                   f"MISTAKES[{name!r}] (rlhf_helpers/exercises/mistakes.py) names it")


# -- the "common mistakes" boxes ------------------------------------------------------------------

#: What every check says without a diagnosis: the box's last line covers these.
GENERIC_MESSAGES = ("wrong values", "NaN or inf", "still the stub", " raised ")


def test_every_exercise_lists_what_its_check_recognises():
    assert set(MISTAKES) == set(EXERCISES), sorted(set(MISTAKES) ^ set(EXERCISES))
    assert all(len(MISTAKES[name]) >= 3 for name in EXERCISES), {n: len(m) for n, m in MISTAKES.items()}


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_listed_mistake_is_a_message_its_check_can_print(name):
    module = sys.modules[EXERCISES[name].check.__module__]
    text = inspect.getsource(module)
    missing = [fragment for _, fragment in MISTAKES[name] if fragment not in text]
    assert not missing, f"{name}: listed in MISTAKES but no message of {module.__name__} says it: {missing}"


def test_every_exercise_check_cell_is_followed_by_its_mistakes_box():
    stale = write_mistake_boxes(NOTEBOOKS, check=True)
    assert not stale, f"the common-mistakes boxes are out of date in {stale}: run python scripts/make_learner_notebooks.py"
    for solved in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(solved.read_text(encoding="utf-8"))["cells"]
        for cell, following in zip(cells, cells[1:]):
            for name in re.findall(r"exercises\.check_(\w+)\(", "".join(cell["source"])):
                assert "".join(following["source"]) == mistakes_box(name), f"{solved.name}: {name}"


# -- the learner's notebooks ----------------------------------------------------------------------


def test_strip_solutions_leaves_nbgraders_stub_at_the_same_indentation():
    source = f"def f(x):\n    \"\"\"doc\"\"\"\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n"
    assert strip_solutions(source) == 'def f(x):\n    """doc"""\n    # YOUR CODE HERE\n    raise NotImplementedError()'
    for broken in [f"{BEGIN}\nx", f"x\n{END}", f"{BEGIN}\n{BEGIN}\n{END}"]:
        with pytest.raises(MarkerError):
            strip_solutions(broken)


def test_the_learner_notebooks_are_current():
    stale = write_learner_notebooks(NOTEBOOKS, check=True)
    assert not stale, f"notebooks/learner/ is out of date for {stale}: run python scripts/make_learner_notebooks.py"


def _learner_exercises():
    """(notebook, cell source with the stub, the check it calls, the function it checks) for every exercise cell."""
    found = []
    for solved in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = learner_notebook(json.loads(solved.read_text(encoding="utf-8")), solved.name)["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        for i, cell in enumerate(code):
            if "raise NotImplementedError()" not in cell["source"] or "# YOUR CODE HERE" not in cell["source"]:
                continue
            following = code[i + 1]["source"] if i + 1 < len(code) else ""
            calls = re.findall(r"exercises\.(check_\w+)\((\w+)", following)
            assert calls, f"{solved.name}: the exercise cell is not followed by a check cell:\n{cell['source'][:200]}"
            for check, function in calls:
                found.append((solved.name, cell["source"], check, function))
    return found


LEARNER_EXERCISES = _learner_exercises()


def test_every_registered_exercise_is_in_a_notebook():
    checked = {check for _, _, check, _ in LEARNER_EXERCISES}
    missing = [name for name in EXERCISES if f"check_{name}" not in checked]
    assert not missing, f"exercises with a check but no notebook cell: {missing}"


@pytest.mark.parametrize("notebook,source,check,function", LEARNER_EXERCISES,
                         ids=[f"{n}-{f}" for n, _, _, f in LEARNER_EXERCISES])
def test_the_learner_notebook_stub_fails_its_check(notebook, source, check, function):
    namespace = {"torch": torch, "F": F, "math": math, "np": np, "pd": pd}
    exec(compile(source, f"{notebook} (learner)", "exec"), namespace)
    with pytest.raises(ExerciseFailed, match="stub"):
        getattr(exercises, check)(namespace[function])


def test_solved_notebooks_mark_every_solution():
    """No exercise cell in a solved notebook without markers (it would reach the learner solved)."""
    for solved in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(solved.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and has_solution(source):
                strip_solutions(source, solved.name)  # balanced markers


# Notebooks whose solution cells need nothing but torch / F / math / np / pd (06's call the package's PPO pieces).
SELF_CONTAINED = ["01_dataset_preparation", "02_sft_policy", "03_reward_model", "04_trl_walkthrough",
                  "05_ppo_from_scratch", "07_evaluation", "08_beyond_ppo"]


def restricted_namespace() -> dict:
    return {"torch": torch, "F": F, "math": math, "np": np, "pd": pd}


@pytest.mark.parametrize("notebook", SELF_CONTAINED)
def test_solution_cells_pass_their_checks_with_only_the_allowed_names(notebook, capsys):
    """Each solved cell, exec'd alone, passes its check; the same cell stubbed fails it as a stub."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    sources = [s for s in ("".join(c["source"]) for c in cells if c["cell_type"] == "code") if has_solution(s)]
    expected = {name for name, e in EXERCISES.items() if e.notebook == notebook[:2]}
    found = set()
    for source in sources:
        names = stub_functions(source)
        assert names, f"{notebook}: an exercise cell defines no function:\n{source[:200]}"
        stubbed, solved = restricted_namespace(), restricted_namespace()
        exec(compile(strip_solutions(source), f"{notebook} (stubbed)", "exec"), stubbed)
        exec(compile(solution_only(source), f"{notebook} (solution)", "exec"), solved)
        for name in names:
            assert callable(stubbed[name]) and callable(solved[name])
            if name in EXERCISES:
                with pytest.raises(ExerciseFailed, match="stub"):
                    EXERCISES[name].check(stubbed[name])
                EXERCISES[name].check(solved[name])
                found.add(name)
    assert found == expected, f"{notebook}: exercises without a solution cell: {sorted(expected - found)}"
    assert capsys.readouterr().out.count("✓") == len(expected)


def test_a_failed_check_shows_its_message_not_the_checking_machinery():
    """Jupyter shows `_render_traceback_`: the stub's message alone; for a crash, the learner's traceback first."""
    from rlhf_helpers.exercises.checking import call

    def stubbed():
        raise NotImplementedError()

    def crashing():
        return 1 / 0

    with pytest.raises(ExerciseFailed) as stub:
        call(stubbed)
    assert stub.value._render_traceback_() == [f"ExerciseFailed: {stub.value}"]
    with pytest.raises(ExerciseFailed) as crash:
        call(crashing, case="x = 1")
    shown = "\n".join(crash.value._render_traceback_())
    assert "in crashing" in shown and "ZeroDivisionError" in shown and shown.endswith("on the case: x = 1")


def test_every_learner_cell_has_its_own_id():
    """nbformat 4.5 cells carry ids; without them JupyterLab adds some and shows the copy as modified on opening."""
    for path in sorted((Path(__file__).parent.parent / "notebooks" / "learner").glob("*.ipynb")):
        ids = [cell.get("id") for cell in json.loads(path.read_text())["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), path.name
