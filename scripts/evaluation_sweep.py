"""Notebook 07's experiments in full; writes the run card the notebook plots.

    python scripts/evaluation_sweep.py                      # everything (27 minutes on 2 bf16 cores)
    python scripts/evaluation_sweep.py --parts seeds bon    # some of it

Parts (`rlhf_helpers.evaluation.sweep`), all from the shipped SFT policy and reward model, all judged on the same
256 held-out prompts:

* ``seeds``: notebook 06's recipe (150 steps) with seeds 0, 1, 2, evaluated every 25 steps;
* ``early``: the first 30 steps of seed 0 again, evaluated every 3 steps (where the KL grows fastest: PPO at the
  small KLs that best-of-n reaches);
* ``weak_leash``: the same recipe with a weak fixed KL penalty (beta 0.02), 400 steps, evaluated every 20 —
  over-optimisation;
* ``no_leash``: beta 0 (no KL penalty at all), 200 steps, evaluated every 20 — reward hacking;
* ``weak_leash_early`` / ``no_leash_early``: the first 20 steps of those two runs again (same settings, so the
  same trajectory), evaluated every 2 steps: their KL grows by tens of nats in 20 steps;
* ``bon``: best-of-n, n = 1 ... 128;
* ``positive_sft``: the SFT policy fine-tuned further on positive reviews only (120 steps), evaluated every 20.

Resumable: every PPO / SFT run checkpoints under ``--work`` and a killed sweep continues where it stopped; a
part already in the run card is skipped (``--redo`` runs it again). The run card goes to ``--out`` after every
part; the course ships it in ``rlhf_helpers/assets/tiny/results/run_card_evaluation.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PARTS = ("seeds", "early", "weak_leash", "no_leash", "weak_leash_early", "no_leash_early", "bon", "positive_sft")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rlhf_helpers/assets/tiny/results/run_card_evaluation.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default: <artifacts>/tiny/evaluation)")
    parser.add_argument("--redo", action="store_true", help="run parts again that the run card already holds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-max", type=int, default=128, help="largest n of best-of-n (a power of 2)")
    args = parser.parse_args()
    if args.n_max < 1 or args.n_max & (args.n_max - 1):
        parser.error(f"--n-max must be a power of 2, got {args.n_max}")
    if len(set(args.seeds)) < len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")

    import torch

    from rlhf_helpers.core.run_card import SweepCard
    from rlhf_helpers.evaluation.sweep import GOLD, Course, best_of_n_run, fast_recipe, positive_sft_run, ppo_run

    card = SweepCard(args.out)
    todo = card.todo(args.parts, args.redo)
    print(f"parts to run: {todo or 'none (all in ' + str(args.out) + '; --redo runs them again)'}")
    if not todo:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after 25 minutes
    torch.manual_seed(0)
    course = Course()
    work = args.work or course.config.artifacts_dir / "evaluation"
    ppo = course.config.ppo

    for part in todo:
        started = time.perf_counter()
        print(f"== {part}", flush=True)
        if part == "seeds":
            result = {str(seed): ppo_run(course, fast_recipe(ppo, seed=seed), work / f"seed_{seed}", steps=150,
                                         every=25) for seed in args.seeds}
        elif part == "early":
            result = ppo_run(course, fast_recipe(ppo, seed=0), work / "early_seed_0", steps=30, every=3)
        elif part in ("weak_leash", "weak_leash_early"):
            early = part.endswith("_early")
            result = ppo_run(course, fast_recipe(ppo, init_kl_coef=0.02, adaptive_kl=False, max_steps=400),
                             work / part, steps=20 if early else 400, every=2 if early else 20)
        elif part in ("no_leash", "no_leash_early"):
            early = part.endswith("_early")
            result = ppo_run(course, fast_recipe(ppo, init_kl_coef=0.0, adaptive_kl=False), work / part,
                             steps=20 if early else 200, every=2 if early else 20)
        elif part == "bon":
            result = best_of_n_run(course, n_max=args.n_max)
        else:
            # about the compute of one `seeds` run: 120 steps of 16 x 256 tokens take about as long as 150 PPO steps
            result = positive_sft_run(course, work / "positive_sft", steps=120, every=20)
        card.add(part, result, time.perf_counter() - started, eval_prompts=len(course.eval_prompts), gold=GOLD)
        print(f"   {part}: {time.perf_counter() - started:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
