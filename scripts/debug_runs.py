"""Notebook 07's "Debug this run" capstone: notebook 06's recipe broken in several ways, and once not at all; writes
the run card the notebook plots.

    python scripts/debug_runs.py                 # every run (8 runs x 40 steps: about 5 minutes on 2 idle cores)
    python scripts/debug_runs.py --redo          # run again the runs the card already holds

Each run is the first ``--steps`` steps of notebook 06's recipe (`rlhf_helpers.evaluation.sweep.fast_recipe`, seed 0)
from the shipped SFT policy against the shipped reward model, with one bug of
`rlhf_helpers.evaluation.broken_runs.BUGS` injected (or none: the healthy run), and keeps its per-step statistics.

The card stores every run under a neutral label ("run A", "run B", ...: the bugs shuffled with a fixed seed, the
healthy run among them) and, apart from the runs, the answer key (``answer_key``: label -> bug name) and what each
bug breaks (``bugs``), so the notebook can plot the runs without naming them. Resumable: every run checkpoints
under ``--work`` and a killed script continues where it stopped; a run already in the card is skipped (``--redo``
trains it again from the start). The card goes to ``--out`` after every run; the course ships it in
``rlhf_helpers/assets/tiny/results/run_card_debug.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rlhf_helpers/assets/tiny/results/run_card_debug.json"
LABEL_SEED = 7  # the shuffle of the bugs over the labels: fixed, so the notebook's solution stays right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="PPO steps per run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default: <artifacts>/tiny/debug_runs)")
    parser.add_argument("--redo", action="store_true", help="run again the runs that the run card already holds")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    import torch

    from rlhf_helpers.core.run_card import SweepCard
    from rlhf_helpers.evaluation.broken_runs import BUGS, broken_run, run_labels

    labels = run_labels(BUGS, seed=LABEL_SEED)
    card = SweepCard(args.out)
    if card.data["parts"] and card.data.get("steps") != args.steps and not args.redo:
        parser.error(f"the card at {args.out} holds runs of {card.data.get('steps')} steps, not {args.steps}: "
                     "pass the same --steps, or --redo to run them all again")
    if card.data.get("answer_key", labels) != labels:
        parser.error(f"the card at {args.out} labels the runs differently (another list of bugs?): use --redo")
    todo = card.todo(labels, args.redo)
    print(f"runs to train: {todo or 'none (all in ' + str(args.out) + '; --redo runs them again)'}")
    if not todo:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after the first run
    torch.manual_seed(0)
    from rlhf_helpers.evaluation.sweep import Course

    course = Course()
    work = args.work or course.config.artifacts_dir / "debug_runs"
    header = dict(steps=args.steps, recipe="notebook 06's: fast_recipe(config.ppo, seed=0), the first --steps steps",
                  answer_key=labels, bugs={name: bug.what for name, bug in BUGS.items()})
    for label in todo:
        name = labels[label]
        started = time.perf_counter()
        print(f"== {label}", flush=True)  # not the bug's name: the log of a run should not give the answer either
        if args.redo:
            shutil.rmtree(work / name, ignore_errors=True)  # train again, not resume the finished checkpoint
        result = broken_run(course, name, work / name, steps=args.steps)
        card.add(label, result, time.perf_counter() - started, **header)
        print(f"   {label}: {time.perf_counter() - started:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
