"""Every notebook has a jupytext py:percent source beside it, with the same cells.

The ``notebooks/NN_x.py`` files are the reviewable sources; the ``.ipynb`` files carry the outputs and are what
nbval runs. The two must not drift apart: this test compares them cell by cell (type, source, tags) without
running anything.
"""

import json
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAIRING = "ipynb,py:percent"
NBVAL_COMMENTS = ("# NBVAL_CHECK_OUTPUT", "# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP", "# NBVAL_RAISES_EXCEPTION")


def fix_hint(notebook: Path) -> str:
    return f"run `jupytext --sync notebooks/{notebook.name}` from the repository root (see notebooks/README.md)"


def ipynb_cells(notebook: Path) -> list[tuple[str, str, list]]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(c["cell_type"], "".join(c["source"]), c["metadata"].get("tags", [])) for c in cells]


def py_cells(source: Path) -> list[tuple[str, str, list]]:
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in jupytext.read(source).cells]


def describe(index: int, cell: tuple[str, str, list] | None) -> str:
    if cell is None:
        return f"cell {index}: (missing)"
    kind, source, tags = cell
    first_line = source.splitlines()[0] if source else ""
    return f"cell {index} ({kind}, tags {tags}): {first_line[:80]!r}"


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_py_source_matches_notebook(notebook: Path):
    source = notebook.with_suffix(".py")
    assert source.exists(), f"{notebook.name} has no paired source notebooks/{source.name}: {fix_hint(notebook)}"

    formats = json.loads(notebook.read_text(encoding="utf-8"))["metadata"].get("jupytext", {}).get("formats")
    assert formats == PAIRING, (f"{notebook.name}: metadata jupytext.formats is {formats!r}, expected {PAIRING!r}: "
                                f"run `jupytext --set-formats {PAIRING} notebooks/{notebook.name}`")

    expected, actual = ipynb_cells(notebook), py_cells(source)
    for index in range(max(len(expected), len(actual))):
        in_ipynb = expected[index] if index < len(expected) else None
        in_py = actual[index] if index < len(actual) else None
        if in_ipynb == in_py:
            continue
        detail = ""
        if in_ipynb and in_py and in_ipynb[:1] == in_py[:1] and in_ipynb[1] != in_py[1]:
            a, b = in_ipynb[1].splitlines(), in_py[1].splitlines()
            line = next((i for i in range(max(len(a), len(b))) if a[i:i + 1] != b[i:i + 1]), 0)
            detail = (f"\n  first differing line {line + 1}:\n    .ipynb: {a[line] if line < len(a) else '(none)'!r}"
                      f"\n    .py:    {b[line] if line < len(b) else '(none)'!r}")
        pytest.fail(
            f"{notebook.name} and {source.name} differ ({len(expected)} vs {len(actual)} cells), first at cell {index}:\n"
            f"  .ipynb {describe(index, in_ipynb)}\n  .py    {describe(index, in_py)}{detail}\n"
            f"Fix: edit one of the two, then {fix_hint(notebook)}."
        )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name for n in NOTEBOOKS])
def test_nbval_markers_are_tags_not_comments(notebook: Path):
    """nbval reads cell tags (nbval-check-output, ...); the learner should not see test comments in the code."""
    for index, (kind, source, _) in enumerate(ipynb_cells(notebook)):
        if kind != "code":
            continue
        for line in source.splitlines():
            assert line.strip() not in NBVAL_COMMENTS, (
                f"{notebook.name}, cell {index}: replace the comment {line.strip()!r} by the cell tag "
                f"{line.strip()[2:].lower().replace('_', '-')!r}, then {fix_hint(notebook)}")
