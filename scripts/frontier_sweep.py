"""Notebook 08's reward–KL frontier: several methods and settings, each evaluated along its run; writes a run card.

    python scripts/frontier_sweep.py                         # every part not yet in the run card
    python scripts/frontier_sweep.py --parts dpo_b0.1 ppo_kl3

The frontier of Rafailov et al. 2023 ("Direct Preference Optimization", Figure 2 left) on the tiny profile:
x = sequence KL(pi || pi_SFT) on the 256 held-out prompts, y = the gold judge (bag-of-words p(positive)) and
VADER; every run starts from the shipped SFT policy and is evaluated at checkpoints along the way by notebook 07's
`HeldOutEvaluator`. Parts:

* ``ppo_kl3`` / ``ppo_kl9`` / ``ppo_kl12``: notebook 06's recipe with another adaptive KL target (the target 6 is
  notebook 07's seed runs, in its run card); 150 steps, evaluated every 25.
* ``ppo_b0.05`` / ``ppo_b0.5``: the same recipe with a fixed beta (no adaptive controller): within 150 steps the
  adaptive controller (horizon 10,000 episodes) moves beta by a few per cent only, so KL targets alone hardly
  separate the runs; a fixed beta does.
* ``ppo_gold``: the same recipe (target 6) against the gold judge itself (its log-odds as the reward): PPO with the
  ground-truth reward, as in the paper.
* ``dpo_b<beta>`` for beta in 0.05, 0.1, 0.5, 1: DPO on preference pairs from the SFT policy (1,024 train prompts,
  4 completions each, all 6 pairs labelled by the reward model: the signal PPO gets), 200 steps, every 25.
* ``preferred_ft``: supervised fine-tuning on the chosen completions of the same pairs, 200 steps, every 25.

Resumable: runs checkpoint under ``--work``; parts already in the card are skipped (``--redo`` reruns them). Not yet
here: TRL's GRPO and RLOO (`beyond_ppo.grpo_rloo`, evaluated along the run) and best-of-n (in notebook 07's card).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

DPO_BETAS = (0.05, 0.1, 0.5, 1.0)
PPO_BETAS = (0.05, 0.5)
PARTS = ("ppo_kl3", "ppo_kl9", "ppo_kl12", *[f"ppo_b{b:g}" for b in PPO_BETAS], "ppo_gold",
         *[f"dpo_b{b:g}" for b in DPO_BETAS], "preferred_ft")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rlhf_helpers/assets/tiny/results/run_card_frontier.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default: <artifacts>/tiny/frontier)")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import torch

    from rlhf_helpers.beyond_ppo.dpo_training import (DPOTrainConfig, PreferredFTConfig, pair_statistics,
                                                      sample_preference_pairs, train_dpo, train_preferred_ft)
    from rlhf_helpers.core.run_card import SweepCard
    from rlhf_helpers.evaluation.sweep import GOLD, Course, fast_recipe, ppo_run

    card = SweepCard(args.out)
    todo = card.todo(args.parts, args.redo)
    print(f"parts to run: {todo or 'none'}")
    if not todo:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    course = Course()
    work = args.work or course.config.artifacts_dir / "frontier"
    ppo = course.config.ppo
    pairs = None

    def preference_pairs():
        nonlocal pairs
        if pairs is None:
            started = time.perf_counter()
            order = np.random.default_rng(0).permutation(len(course.train_prompts))[:1024]
            prompts = [list(map(int, course.train_prompts[int(i)])) for i in order]
            pairs = sample_preference_pairs(course.sft, course.tokenizer, prompts, course.scorer.score, k=4)
            card.data["pairs"] = {**pair_statistics(pairs), "prompts": len(prompts), "k": 4,
                                  "labelled_by": "reward model", "seconds": round(time.perf_counter() - started, 1)}
        return pairs

    gold_judge = course.judges["bag_of_words"]
    for part in todo:
        started = time.perf_counter()
        print(f"== {part}", flush=True)
        if part.startswith("ppo_kl"):
            result = ppo_run(course, fast_recipe(ppo, kl_target=float(part[6:])), work / part, steps=150, every=25)
        elif part.startswith("ppo_b"):
            result = ppo_run(course, fast_recipe(ppo, init_kl_coef=float(part[5:]), adaptive_kl=False), work / part,
                             steps=150, every=25)
        elif part == "ppo_gold":
            gold = lambda texts: torch.as_tensor(gold_judge.log_odds(texts), dtype=torch.float32)  # noqa: E731
            result = ppo_run(course, fast_recipe(ppo), work / part, steps=150, every=25, reward_fn=gold)
        elif part.startswith("dpo_b"):
            config = DPOTrainConfig(beta=float(part[5:]), max_steps=200, eval_every=25, checkpoint_every=25)
            result = train_dpo(copy.deepcopy(course.sft).requires_grad_(True), course.sft, preference_pairs(), config,
                               work / part, course.evaluator)
            result = {k: v for k, v in result.items() if k != "model"} | {"settings": vars(config)}
        else:
            config = PreferredFTConfig()
            result = train_preferred_ft(copy.deepcopy(course.sft).requires_grad_(True), preference_pairs(), config,
                                        work / part, course.evaluator)
            result = {k: v for k, v in result.items() if k != "model"} | {"settings": vars(config)}
        if "history" in result:
            result["rows"] = result.pop("history")
        card.add(part, result, time.perf_counter() - started, eval_prompts=len(course.eval_prompts), gold=GOLD)
        print(f"   {part}: {time.perf_counter() - started:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
