"""Predict, then run: the learner commits to an answer before an experiment, and the experiment grades it.

Writing a guess down before seeing the result is what turns a demo into a lesson: a wrong guess that you made
yourself is remembered; a result you only read is not. A prediction cell looks like this:

    guess = predict("After 20 steps with β = 0, how far (KL, nats) is the policy from the SFT policy?",
                    number="nats")          # a number; or choices={"a": "...", "b": "..."}
    guess.answer = None                     # ← your answer (or use the box/buttons shown above)

and after the experiment:

    guess.reveal(kl_after_20_steps)         # or reveal("b", why="...") for a choice

In a live kernel `predict` shows a box (numbers) or buttons (choices) bound to ``guess.answer``; without widgets
the line ``guess.answer = ...`` does the same. `reveal` prints the truth beside the answer and how far apart they
are. A run with no answer (the tests, or a learner who skips) still shows the truth, and says it was not predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Prediction", "predict"]


@dataclass
class Prediction:
    """One question, the learner's answer (`answer`, None until given) and, after `reveal`, the truth.

    `choices`: ``{key: description}`` for a multiple-choice question, or None for a number; `unit` names the
    number's unit; `tolerance` is how close (relative) a number must be to count as right (default 30%).
    """

    question: str
    choices: dict[str, str] | None = None
    unit: str = ""
    tolerance: float = 0.3
    answer: object = None
    truth: object = field(default=None, init=False)

    def _check_answer(self) -> None:
        if self.answer is None:
            return
        if self.choices is not None and str(self.answer).strip().lower() not in self.choices:
            raise ValueError(f"your answer {self.answer!r} is not one of the choices {sorted(self.choices)}: set "
                             f"`.answer` to one of them (e.g. {next(iter(self.choices))!r}).")
        if self.choices is None and not isinstance(self.answer, (int, float)):
            raise ValueError(f"your answer {self.answer!r} is not a number: set `.answer` to a number"
                             + (f" (in {self.unit})." if self.unit else "."))

    def reveal(self, truth, why: str = "") -> bool | None:
        """Print the truth beside the answer; return whether the answer was right (None when there was none).

        `truth`: the key of the right choice, or the measured number. `why`: one line on why it is so.
        """
        self._check_answer()
        self.truth = truth
        lines = [f"Q: {self.question}"]
        if self.choices is not None:
            key = str(truth).strip().lower()
            if key not in self.choices:
                raise ValueError(f"the truth {truth!r} is not one of the choices {sorted(self.choices)}")
            lines.append(f"the run says: {key}) {self.choices[key]}")
            right = None if self.answer is None else str(self.answer).strip().lower() == key
            if self.answer is not None:
                mine = str(self.answer).strip().lower()
                lines.append(f"you said:     {mine}) {self.choices[mine]}  ->  {'right' if right else 'not this time'}")
        else:
            unit = f" {self.unit}" if self.unit else ""
            lines.append(f"the run says: {truth:.4g}{unit}")
            right = None
            if self.answer is not None:
                answer = float(self.answer)
                right = math.isclose(answer, float(truth), rel_tol=self.tolerance, abs_tol=1e-9)
                off = (f"{answer / truth:.2g}× the truth" if truth not in (0, 0.0) and answer != 0
                       else f"off by {abs(answer - truth):.3g}{unit}")
                lines.append(f"you said:     {answer:.4g}{unit}  ->  "
                             + (f"within {self.tolerance:.0%}" if right else off))
        if self.answer is None:
            lines.append("you said:     (no prediction; set `.answer` before the experiment next time)")
        if why:
            lines.append(f"why: {why}")
        print("\n".join(lines))
        return right

    def _widget(self):
        """A box (numbers) or buttons (choices) that write `answer`; None when ipywidgets is missing."""
        try:
            import ipywidgets as widgets
        except ImportError:  # pragma: no cover - ipywidgets is pinned in requirements.txt
            return None
        if self.choices is None:
            # a text box, empty until typed in: a number box would show 0 and look like an answer already given
            box = widgets.Text(description=f"answer{' (' + self.unit + ')' if self.unit else ''}:",
                               placeholder="type a number", style={"description_width": "initial"})

            def record(change):
                self.answer = number_or_none(change["new"])
        else:
            box = widgets.ToggleButtons(options=[(f"{k}) {v}", k) for k, v in self.choices.items()], value=None,
                                        style={"button_width": "auto"})

            def record(change):
                self.answer = change["new"]

        box.observe(record, names="value")
        return box


def number_or_none(text: str) -> float | None:
    """What a number box holds: ``"1.5"``, ``" 2e3 "``, ``"40%"`` (as 0.4) → a float; empty, not a number (``"0,5"``,
    ``"abc"``) or not finite → None."""
    text = text.strip()
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1], 0.01
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def predict(question: str, choices: dict[str, str] | None = None, number: str | None = None,
            tolerance: float = 0.3) -> Prediction:
    """Ask `question` before an experiment; returns the `Prediction` whose ``.answer`` the learner sets.

    Give `choices` (``{"a": "...", "b": "..."}``) for a multiple-choice question, or `number` (its unit, e.g.
    ``"nats"``; ``""`` for a plain number) for a numeric one. Prints the question and the choices (so the tests'
    record of the notebook shows them) and, in a live kernel, shows a widget bound to the answer.
    """
    if (choices is None) == (number is None):
        raise ValueError("give either choices={...} (a multiple-choice question) or number='unit' (a numeric one)")
    if choices is not None and not choices:
        raise ValueError("choices is empty: give at least two")
    prediction = Prediction(question, choices={str(k).lower(): v for k, v in choices.items()} if choices else None,
                            unit=number or "", tolerance=tolerance)
    print(f"Predict: {question}")
    for key, text in (choices or {}).items():
        print(f"  {key}) {text}")
    from ..course import in_ci

    if not in_ci():
        widget = prediction._widget()
        if widget is not None:
            from IPython.display import display

            display(widget)
    return prediction
