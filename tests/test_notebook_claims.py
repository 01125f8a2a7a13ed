"""Numbers the notebooks' text states are the numbers their outputs (or the package) show.

Each `Claim` ties a number written in a notebook's markdown (a pattern with one group per number) to where it
comes from: a committed cell output, or a value of the package (an exercise's time budget, a config default).
The test fails when the text and its source disagree, and when the text no longer holds the claim at all (so a
reworded sentence is looked at again, not silently dropped). A notebook re-executed with other results fails here
until its text says the new numbers.

To add a claim: write the sentence, then add its pattern and its source below.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Claim:
    notebook: str
    text: str
    """Regex over the notebook's markdown (and code comments, for ``in_code``); each group is a stated number."""
    source: str | Callable[[], tuple[str, ...]]
    """Regex over the cell outputs with the same groups, or a function giving the true values as strings."""
    in_code: bool = False
    flags: int = 0
    """Regex flags for `source` (``re.S`` when it spans cells)."""

    def __str__(self) -> str:
        return f"{self.notebook}: {self.text}"


def _exercise_minutes(notebook: str) -> Callable[[], tuple[str, ...]]:
    def minutes() -> tuple[str, ...]:
        from rlhf_helpers.exercises import EXERCISES

        return tuple(str(e.minutes) for e in EXERCISES.values() if e.notebook == notebook)
    return minutes


def _learning_rates() -> tuple[str, ...]:
    from rlhf_helpers.config import PPOConfig, get_config

    return f"{PPOConfig().learning_rate:g}", f"{get_config('tiny').ppo.learning_rate:g}"


CLAIMS = [
    Claim("02_sft_policy", r"on a busy machine — (\d+) s in the run recorded here", r"steps in (\d+) s;"),
    Claim("02_sft_policy", r"recorded here took (\d+) s", r"steps in (\d+) s;"),
    Claim("03_reward_model", r"(\d+) s in the run recorded here\. \(The tests", r"reviews in (\d+) s;"),
    Claim("03_reward_model", r"— (\d+) s in the run recorded here —", r"pairs in (\d+) s, mixed precision"),
    Claim("03_reward_model", r"sections 4 and 5: (\d+) s and (\d+) s here",
          r"pairs in (\d+) s, mixed precision.*?TRL steps in (\d+) s;", flags=re.S),
    Claim("03_reward_model", r"\(([\d,]+) in section 6's fit\)", r"; ([\d,]+) features"),
    Claim("03_reward_model", r"\(([+−-]\d\.\d\d) at k = 4, ([+−-]\d\.\d\d) at k = 64\)",
          r"midpoint per k: 4: ([+-]\d\.\d\d),[^\n]* 64: ([+-]\d\.\d\d)"),
    Claim("03_reward_model", r"([+−-]\d\.\d\d) at 96 words and ([+−-]\d\.\d\d) at 128",
          r" 96: ([+-]\d\.\d\d), 128: ([+-]\d\.\d\d)"),
    Claim("06_rlhf_training_loop", r"(\d\.\d{3}), (\d\.\d{3}) and (\d\.\d{3}) at the three",
          r"\n1 [^\n]* (\d\.\d{3})\n\d+ [^\n]* (\d\.\d{3})\n\d+ [^\n]* (\d\.\d{3})\n"),
    Claim("06_rlhf_training_loop", r"the two exercises are budgeted at (\d+) and (\d+) minutes",
          _exercise_minutes("06")),
    Claim("05_ppo_from_scratch", r"class default learning rate, (\S+) \(the tiny profile's recipe trains with (\S+)\)",
          _learning_rates, in_code=True),
]


def cells(notebook: dict, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == kind]


def outputs(notebook: dict) -> str:
    parts = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text", out.get("data", {}).get("text/plain", ""))
            parts.append("".join(text))
    return "\n".join(parts)


def disagreement(claim: Claim, notebook: dict) -> str | None:
    """Why `claim` does not hold in `notebook` (None: it holds)."""
    text = "\n".join(cells(notebook, "markdown") + (cells(notebook, "code") if claim.in_code else []))
    text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)  # a sentence may wrap across lines
    stated = re.search(claim.text, text)
    if stated is None:
        return f"the text no longer states this claim ({claim.text!r}): update the claim with the sentence"
    said = tuple(s.replace("−", "-") for s in stated.groups())
    if callable(claim.source):
        true = claim.source()
    else:
        found = re.search(claim.source, outputs(notebook), flags=claim.flags)
        if found is None:
            return f"no output matches {claim.source!r}: re-execute the notebook or update the claim"
        true = found.groups()
    if tuple(map(_value, said)) != tuple(map(_value, true)):
        return f"the text says {said}, the {'outputs' if isinstance(claim.source, str) else 'package'} {true}"
    return None


def _value(number: str) -> float | str:
    """A stated number as a value: "402,245" == "402245", "5e-5" == "5e-05", "+0.09" == "0.09"."""
    try:
        return float(number.replace(",", ""))
    except ValueError:
        return number


def load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


@pytest.mark.parametrize("claim", CLAIMS, ids=str)
def test_the_text_states_what_the_run_shows(claim):
    problem = disagreement(claim, load(claim.notebook))
    assert problem is None, f"{claim.notebook}: {problem}"


@pytest.mark.parametrize("claim", [c for c in CLAIMS if isinstance(c.source, str)], ids=str)
def test_a_planted_mismatch_is_caught(claim):
    """Change one stated number in a copy of the notebook: the claim must fail."""
    notebook = copy.deepcopy(load(claim.notebook))
    for cell in notebook["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        joined = re.sub(r"\s*\n\s*", " ", source)
        found = re.search(claim.text, joined)
        if found:
            number = found.group(1)
            planted = number[:-1] + ("1" if number[-1] != "1" else "2")
            cell["source"] = [source.replace(number, planted, 1)]
            break
    assert disagreement(claim, notebook) is not None
