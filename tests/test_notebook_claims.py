"""Numbers the notebooks' text states are the numbers their outputs (or the package) show.

Each `Claim` ties a number written in a notebook's markdown (a pattern with one group per number) to where it
comes from: a committed cell output, a table a cell printed, a shipped run card (the sweeps' results that 07 and 08
quote), another notebook's text (a number one notebook retells from another), or a value of the package (an
exercise's time budget, a config default). A stated number must equal its source at the precision it is stated
("3.9" for 3.860, "62" percent for 0.617).
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


def _output_table(notebook: str, column_marker: str, picks: list[tuple[str, int, str]]) -> Callable[[], tuple[str, ...]]:
    """Numbers read from a table a cell printed (pandas' text): the printout that holds `column_marker`; each pick is
    (row label, column index, format) — so a stated "62%" can be checked against a printed 0.617."""
    def read() -> tuple[str, ...]:
        printed = next(text for text in outputs(load(notebook)).split("\n\n") if column_marker in text
                       and any(label in text for label, _, _ in picks))
        rows = {}
        for line in printed.splitlines():
            for label, _, _ in picks:
                if line.startswith(label + " "):
                    rows[label] = [float(v) for v in line[len(label):].split()]
        return tuple(fmt.format(rows[label][column]).rstrip("%") for label, column, fmt in picks)
    return read


def _length_probe() -> tuple[str, ...]:
    """07 §7's length probe: the correlations printed for the SFT and the no-leash policy's samples, and the no-leash
    table's mean reward and gold at 16 and at 4 tokens, in the order the text states them."""
    text = outputs(load("07_evaluation"))
    sft = re.search(r"SFT policy, correlation with the response length: \{'reward': (\S+), 'p_positive/bag_of_words': "
                    r"(\S+)\}", text)
    hacked = re.search(r"no-leash policy, correlation with the response length: \{'reward': (\S+), "
                       r"'p_positive/bag_of_words': (\S+)\}", text)
    table = text[hacked.end():]
    by_length = {int(m[1]): (m[2], m[3]) for m in re.finditer(r"\n(\d+)\s+\S+\s+(\S+)\s+(\S+)", table)}
    return (sft[1], sft[2], hacked[1], by_length[16][0], by_length[4][0], by_length[4][1], by_length[16][1],
            hacked[2])


def _card(name: str, values: Callable[[dict], list], key: str | None = "parts") -> Callable[[], tuple[str, ...]]:
    """Numbers a notebook's text quotes from a shipped run card (a sweep's results), formatted as the text states
    them: `values` maps the card's `key` (its parts; None: the whole card) to the list of stated strings."""
    def read() -> tuple[str, ...]:
        from rlhf_helpers.core.assets import shipped_results_dir
        from rlhf_helpers.core.run_card import read_run_card

        card = read_run_card(shipped_results_dir("tiny"), name)
        return tuple(values(card if key is None else card[key]))
    return read


GOLD = "p_positive/bag_of_words"


def _rows(parts: dict, name: str) -> list[dict]:
    return parts[name]["result"]["rows"]


def _no_leash(parts: dict) -> list[str]:
    rows = _rows(parts, "no_leash")
    peak = max(rows, key=lambda r: r[GOLD])
    return [f"{peak[GOLD]:.3f}", f"{peak['kl']:.0f}", str(peak["step"]), f"{rows[-1][GOLD]:.3f}"]


def _weak_leash(parts: dict) -> list[str]:
    rows = _rows(parts, "weak_leash")
    peak = max(rows, key=lambda r: r[GOLD])
    after = rows[rows.index(peak) + 1:]
    return [f"{peak[GOLD]:.3f}", str(peak["step"]), f"{peak['kl']:.0f}", f"{min(r[GOLD] for r in after):.3f}",
            f"{max(r[GOLD] for r in after):.3f}", str(rows[-1]["step"]), f"{min(r['kl'] for r in after):.0f}",
            f"{max(r['kl'] for r in after):.0f}"]


def _hacking(parts: dict) -> list[str]:
    rows = {r["step"]: r for r in _rows(parts, "no_leash")}
    weak = {r["step"]: r for r in _rows(parts, "weak_leash")}
    return [f"{rows[20]['kl']:.0f}", f"{rows[0]['distinct_2']:.3f}", f"{rows[20]['distinct_2']:.3f}",
            f"{rows[80]['distinct_2']:.3f}", f"{rows[200]['reward']:.2f}", f"{weak[20]['kl']:.0f}"]


def _seeds_max_kl(parts: dict) -> list[str]:
    return [f"{max(r['kl'] for run in parts['seeds']['result'].values() for r in run['rows']):.1f}"]


def _frontier_runs() -> dict[str, list[tuple[str, dict]]]:
    """Notebook 08's frontier: every checkpoint of every run, by method (PPO with 07's three seeds, best-of-n from
    07's card), each as (run name, row)."""
    from rlhf_helpers.core.assets import shipped_results_dir
    from rlhf_helpers.core.run_card import read_run_card

    frontier = read_run_card(shipped_results_dir("tiny"), "frontier")["parts"]
    evaluation = read_run_card(shipped_results_dir("tiny"), "evaluation")["parts"]
    runs: dict[str, list[tuple[str, dict]]] = {}
    for name, part in frontier.items():
        method = ("PPO gold" if name == "ppo_gold" else "Preferred-FT" if name == "preferred_ft" else "DPO TRL"
                  if name.startswith("trl_dpo") else "DPO gold" if name.startswith("dpo_gold") else name.split("_")[0])
        runs.setdefault(method, []).extend((name, row) for row in part["result"]["rows"])
    for seed, run in evaluation["seeds"]["result"].items():
        runs["ppo"].extend((f"ppo_kl6_seed{seed}", row) for row in run["rows"])
    runs["bon"] = [("bon", row) for row in evaluation["bon"]["result"]["rows"]]
    return runs


def _best_within(runs, method: str, kl: float, kl_format: str = ".1f") -> list[str]:
    """The best gold of `method` at checkpoints with KL <= `kl` (08's table), and its KL."""
    best = max((row for _, row in runs[method] if row["kl"] <= kl), key=lambda row: row[GOLD])
    return [f"{best[GOLD]:.3f}", format(best["kl"], kl_format)]


def _last(runs, name: str, kl_format: str = ".1f") -> list[str]:
    row = [row for run, row in runs[next(m for m, rows in runs.items() if any(r == name for r, _ in rows))]
           if run == name][-1]
    return [f"{row[GOLD]:.3f}", format(row["kl"], kl_format)]


def _frontier(values: Callable[[dict], list[str]]) -> Callable[[], tuple[str, ...]]:
    return lambda: tuple(values(_frontier_runs()))


def _weak_leash_ends(runs) -> list[str]:
    ends = [[row for run, row in rows if run == name][-1]
            for name, rows in ((n, runs[n.split("_")[0]]) for n in ("ppo_b0.05", "grpo_b0.05", "rloo_b0.05"))]
    golds, kls, vader = ([row[key] for row in ends] for key in (GOLD, "kl", "positive_rate/vader"))
    return [f"{min(golds):.3f}", f"{max(golds):.3f}", f"{min(kls):.0f}", f"{max(kls):.0f}",
            f"{100 * min(vader):.0f}", f"{100 * max(vader):.0f}"]


def _ppo_gap(runs) -> list[str]:
    kls = sorted(row["kl"] for _, row in runs["ppo"])
    gaps = [(b - a, a, b) for a, b in zip(kls, kls[1:]) if a <= 15]
    _, low, high = max(gaps)
    return [f"{low:.1f}", f"{high:.1f}", f"{high:.1f}"]


def _trl_gap(runs) -> list[str]:
    """The widest stretch of KL below 15 without a GRPO or RLOO checkpoint, and the two β = 0.05 runs' gold at the
    first checkpoint past it (round 20)."""
    kls = sorted(row["kl"] for method in ("grpo", "rloo") for _, row in runs[method])
    _, low, high = max((b - a, a, b) for a, b in zip(kls, kls[1:]) if a <= 15)
    first = [next(row for run, row in runs[m] if run == f"{m}_b0.05" and row["step"] == 20) for m in ("grpo", "rloo")]
    return [f"{low:.1f}", f"{high:.1f}", *[f"{row[GOLD]:.3f}" for row in first]]


def _seed_spread(parts) -> list[str]:
    last = [run["rows"][-1] for run in parts["seeds"]["result"].values()]
    golds, kls = [r[GOLD] for r in last], [r["kl"] for r in last]
    return [f"{max(golds) - min(golds):.3f}", f"{min(kls):.1f}", f"{max(kls):.1f}"]


def _flipped_sign_row_of_06() -> tuple[str, ...]:
    """Notebook 06's table row of the run with the KL penalty's sign flipped, which 07 retells: KL, perplexity, the
    bag-of-words and VADER rates."""
    text = "\n".join(cells(load("06_rlhf_training_loop"), "markdown"))
    row = re.search(r"\| the KL penalty's sign flipped \(a bug\) \| (\d+)% \| (\d+)% \| (\d+) \|.*perplexity ([\d,]+) \|",
                    text)
    assert row, "notebook 06 no longer has the flipped-sign row that notebook 07 quotes"
    return row[3], row[4], row[1], row[2]


CLAIMS = [
    Claim("08_beyond_ppo", r"ended exactly on the sweep's checkpoints at round 20 \(gold (\d\.\d{3}) at KL (\d+\.\d\d), "
          r"(\d\.\d{3}) at KL (\d+\.\d\d)\)", r"grpo: 20 rounds .*? gold 0\.\d+ -> (\d\.\d{3}), KL (\S+)\n.*?"
          r"rloo: 20 rounds .*? gold 0\.\d+ -> (\d\.\d{3}), KL (\S+)\n", flags=re.S),
    Claim("08_beyond_ppo", r"ended exactly on the sweep's checkpoints at round 20 \(gold (\d\.\d{3}) at KL (\d+\.\d\d), "
          r"(\d\.\d{3}) at KL (\d+\.\d\d)\)", r"the sweep's grpo run at round 20: gold (\S+), KL (\S+)\n.*?"
          r"the sweep's rloo run at round 20: gold (\S+), KL (\S+)\n", flags=re.S),
    Claim("07_evaluation", r"at KL (\d\.\d) \(n = 128\) the gold is (\d\.\d{3}) against (\d\.\d{3}) for PPO at the same KL",
          r"\n128\s+(\d\.\d+)\s+(\d\.\d{3})\s+(\d\.\d{3})"),
    Claim("07_evaluation", r"In about the same wall time \((\d\.\d) minutes against (\d\.\d) for a PPO seed\)",
          r"120 steps in (\d\.\d) min \(PPO seeds: (\d\.\d) min each\)"),
    Claim("07_evaluation", r"moves the gold from (\d\.\d{3}) to (\d\.\d{3}) and the bag-of-words rate from (\d+)% to (\d+)%; "
          r"PPO reaches (\d\.\d{3}) and (\d+)%\. The fine-tuned policy stays close to the SFT model \(KL (\d\.\d\d)\) "
          r"and keeps its diversity \(distinct-2 (\d\.\d{3})\)",
          _output_table("07_evaluation", "fine-tuned on positive reviews", [
              ("gold: bag-of-words p(positive)", 0, "{:.3f}"), ("gold: bag-of-words p(positive)", 1, "{:.3f}"),
              ("positive, bag of words", 0, "{:.0%}"), ("positive, bag of words", 1, "{:.0%}"),
              ("gold: bag-of-words p(positive)", 2, "{:.3f}"), ("positive, bag of words", 2, "{:.0%}"),
              ("KL to SFT (nats)", 1, "{:.2f}"), ("distinct-2", 1, "{:.3f}")])),
    Claim("07_evaluation", r"no length bias \(correlation ([−-]?\d\.\d\d) with the response length; the gold ([−-]?\d\.\d\d)\)\. "
          r"On the hacked policy's samples it shows a strong one: correlation (\d\.\d\d) — a 16-token run of "
          r"\"outstanding\" scores (\d\.\d\d) on average, a 4-token run (\d\.\d\d) — while the gold hardly moves "
          r"\((\d\.\d{3}) at 4 tokens, (\d\.\d{3}) at 16; correlation (\d\.\d\d)\)",
          _length_probe),
    Claim("07_evaluation", r"fine-tuning on positive reviews; (\d+) minutes on 2 cores in the recorded run",
          r"\(total (\d+) min\)"),
    Claim("03_reward_model", r"computing the features once \((\d+) s in the run recorded here\)",
          r"10 resamples per row with ±; (\d+) s"),
    Claim("03_reward_model", r"the (\w+) exercises \((\d+) minutes\)", lambda: (
        {3: "three", 4: "four", 5: "five"}.get(len(_exercise_minutes("03")()), "?"),
        str(sum(map(int, _exercise_minutes("03")()))))),
    Claim("07_evaluation", r"at KL (\d+) and a perplexity of ([\d,]+) — while the judges called (\d+)% \(bag of words\) "
          r"and (\d+)% \(VADER\) of it positive \(notebook 06's table\)", _flipped_sign_row_of_06),
    Claim("08_beyond_ppo", r"\(18 runs; (\d+) minutes on 2 cores in the recorded run", r"sweep wall time: (\d+) min in all"),
    Claim("08_beyond_ppo", r"DPO at β = 0.5–1 gets more gold for the same KL \((\d\.\d{3}) at KL (\d\.\d), against PPO's "
          r"(\d\.\d{3}) at (\d\.\d) and GRPO's (\d\.\d{3}) at (\d\.\d)\)",
          _frontier(lambda r: [*_best_within(r, "dpo", 2), *_best_within(r, "ppo", 2), *_best_within(r, "grpo", 2)])),
    Claim("08_beyond_ppo", r"Best-of-n is the one to beat: (\d\.\d{3}) at KL (\d\.\d\d) \(n = 128\), above every trained "
          r"method using the reward model's signal \(PPO (\d\.\d{3}) at KL (\d\.\d), DPO (\d\.\d{3}), GRPO (\d\.\d{3}), "
          r"RLOO (\d\.\d{3})\)\. Only DPO on \*\*gold-labelled\*\* pairs does better, (\d\.\d{3}) at KL (\d\.\d)",
          _frontier(lambda r: [*_best_within(r, "bon", 5, ".2f"), *_best_within(r, "ppo", 5),
                               *[_best_within(r, m, 5)[0] for m in ("dpo", "grpo", "rloo")],
                               *_best_within(r, "DPO gold", 5)])),
    Claim("08_beyond_ppo", r"PPO (\d\.\d{3}) at KL (\d\.\d) \(KL target 9\), DPO (\d\.\d{3}) at KL (\d\.\d) \(β = 0.05\)",
          _frontier(lambda r: [*_best_within(r, "ppo", 10), *_best_within(r, "dpo", 10)])),
    Claim("08_beyond_ppo", r"\*\*KL ≤ 15\.\*\* DPO \((\d\.\d{3}) at KL (\d+\.\d)\) and PPO \((\d\.\d{3}) at (\d+\.\d)\) lead",
          _frontier(lambda r: [*_best_within(r, "dpo", 15), *_best_within(r, "ppo", 15)])),
    Claim("08_beyond_ppo", r"GRPO and RLOO have no checkpoint between KL (\d\.\d) and (\d+\.\d) \(their β = 0.05 runs were "
          r"past KL 15 at round 20, with gold (\d\.\d{3}) and (\d\.\d{3}) there\)", _frontier(_trl_gap)),
    Claim("08_beyond_ppo", r"no PPO checkpoint lies between KL (\d+\.\d) and (\d+\.\d) \(its β = 0.05 run was at (\d+\.\d) ",
          _frontier(_ppo_gap)),
    Claim("08_beyond_ppo", r"end at (\d\.\d{3})–(\d\.\d{3}) gold at KL (\d+)–(\d+), and VADER calls (\d+)–(\d+)% of",
          _frontier(_weak_leash_ends)),
    Claim("08_beyond_ppo", r"PPO on the gold reward is the ceiling: (\d\.\d{3}) at KL (\d+\.\d), (\d\.\d{3}) at (\d+\.\d)\.",
          _frontier(lambda r: [*_best_within(r, "PPO gold", 15), *_best_within(r, "PPO gold", 1e9)])),
    Claim("08_beyond_ppo", r"nearly the same path \((\d\.\d{3}) vs (\d\.\d{3}) gold at KL (\d\.\d) vs (\d\.\d) after",
          _frontier(lambda r: [a for pair in zip(_last(r, "dpo_b0.1"), _last(r, "trl_dpo_b0.1")) for a in pair])),
    Claim("08_beyond_ppo", r"\*\*Preferred-FT\*\* hardly moves \((\d\.\d{3}) at KL (\d\.\d\d)\)",
          _frontier(lambda r: _last(r, "preferred_ft", ".2f"))),
    Claim("08_beyond_ppo", r"it leads at KL ≤ 5 \((\d\.\d{3}) vs PPO's (\d\.\d{3})\)",
          _frontier(lambda r: [_best_within(r, "DPO gold", 5)[0], _best_within(r, "ppo", 5)[0]])),
    Claim("08_beyond_ppo", r"separates the two completions of a gold-labelled pair by (\d\.\d\d) on average",
          _card("frontier", lambda card: [f"{card['pairs_gold']['mean_score_gap']:.2f}"], key=None)),
    Claim("08_beyond_ppo", r"three PPO seeds end (\d\.\d{3}) gold apart, at KL (\d\.\d)–(\d\.\d)\)",
          _card("evaluation", _seed_spread)),
    Claim("07_evaluation", r"Without a leash the gold rises to (\d\.\d{3}) at KL (\d+) \(step (\d+)\) and then falls "
          r"to (\d\.\d{3})", _card("evaluation", _no_leash)),
    Claim("07_evaluation", r"With β = 0.02 it reaches (\d\.\d{3}) by step (\d+) \(KL (\d+)\) and then wanders between "
          r"(\d\.\d{3}) and (\d\.\d{3}) to step (\d+), at KL (\d+)–(\d+)", _card("evaluation", _weak_leash)),
    Claim("07_evaluation", r"the KL is (\d+) nats after 20 steps and distinct-2 has fallen from (\d\.\d{3}) to "
          r"(\d\.\d{3}); by step 80 it is (\d\.\d{3}) .* The reward model scores that (\d\.\d\d),.*"
          r"\(KL (\d+) after 20 steps\)", _card("evaluation", _hacking)),
    Claim("07_evaluation", r"its three seeds stay at KL ≤ (\d\.\d), where", _card("evaluation", _seeds_max_kl)),
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
    Claim("06_rlhf_training_loop", r"\(150 steps in (\d\.\d) min in the run recorded",
          r"done: 150 steps in (\d\.\d) min"),
    Claim("06_rlhf_training_loop", r"the two exercises are budgeted at (\d+) and (\d+) minutes",
          _exercise_minutes("06")),
    Claim("08_beyond_ppo", r"`PPOConfig`'s defaults \((\d) passes over each round, learning rate (\S+), β = (\d\.\d);",
          _card("compare", lambda metrics: [str(metrics["runs"]["ppo"]["settings"][k])
                                            for k in ("ppo_epochs", "learning_rate", "init_kl_coef")], key="metrics")),
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
    if len(said) != len(true) or not all(map(_same, said, true)):
        return f"the text says {said}, the {'outputs' if isinstance(claim.source, str) else 'package'} {true}"
    return None


def _same(said: str, true: str) -> bool:
    """A stated number equals its source's at the precision stated: "3.9" states 3.860, "62" states 62.0."""
    stated, value = _value(said), _value(true)
    if isinstance(stated, str) or isinstance(value, str) or "e" in said.lower():
        return stated == value
    decimals = len(said.split(".")[1]) if "." in said else 0
    return round(value, decimals) == stated


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


def test_the_compare_script_trains_with_the_settings_of_its_shipped_card():
    """scripts/compare_algorithms.py, run today, trains with the settings the run card notebook 08 plots records: our
    PPO's (fields renamed since: ``cliprange``, ``steps``; added since: ``fast_path``, off, the path the card ran)
    and the GRPO and RLOO configs TRL gets. So the card can be reproduced and the text's settings hold for a new run.
    """
    import dataclasses
    import importlib.util

    from rlhf_helpers.beyond_ppo.grpo_rloo import trl_config
    from rlhf_helpers.core.assets import shipped_results_dir
    from rlhf_helpers.core.run_card import read_run_card

    spec = importlib.util.spec_from_file_location("compare_algorithms", NOTEBOOKS.parent / "scripts" / "compare_algorithms.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    card = read_run_card(shipped_results_dir("tiny"), "compare")
    config = script.compare_config(card["config"]["minutes"])
    ppo = dataclasses.asdict(config.ppo)
    renamed = {"cliprange": "clip_range", "cliprange_value": "clip_range_value", "steps": "max_steps"}
    recorded = {renamed.get(k, k): v for k, v in card["metrics"]["runs"]["ppo"]["settings"].items()}
    assert {k: ppo[k] for k in recorded} == recorded
    assert set(ppo) - set(recorded) == {"fast_path", "micro_batch_size", "threads"} and not ppo["fast_path"]
    for algorithm in ("grpo", "rloo"):
        recorded = card["metrics"]["runs"][algorithm]["settings"]
        trl = trl_config(algorithm, "unused", config.ppo, bf16=recorded["bf16"] == "True")
        assert {k: str(getattr(getattr(trl, k), "value", getattr(trl, k))) for k in recorded} == recorded, algorithm
