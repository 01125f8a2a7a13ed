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
* ``dpo_gold_b<beta>`` for beta in 0.1, 0.5: DPO on pairs of the same completions labelled by the gold judge
  instead (the paper's setting: its pairs were labelled by the ground-truth classifier), 200 steps, every 25.
* ``trl_dpo_b0.1``: TRL's `DPOTrainer` on the reward-model pairs with `dpo_b0.1`'s settings (`beyond_ppo.trl_dpo`).
* ``grpo_b<beta>`` / ``rloo_b<beta>`` for beta in 0.05, 0.5: TRL's GRPO and RLOO (`beyond_ppo.grpo_rloo`) with the
  PPO recipe's settings (one pass over each round of 64 completions = 16 prompts x 4, learning rate 2e-4 decaying
  over 200 rounds), stopped after 100 rounds (a TRL round costs ~2.3 s here, a PPO step ~0.8 s), every 20.

Resumable at two levels: our loops checkpoint under ``--work`` and resume; a TRL part restarts from its beginning.
Parts already in the card are skipped (``--redo`` reruns them). Best-of-n is in notebook 07's card.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

DPO_BETAS = (0.05, 0.1, 0.5, 1.0)
DPO_GOLD_BETAS = (0.1, 0.5)
PPO_BETAS = (0.05, 0.5)
TRL_BETAS = (0.05, 0.5)
TRL_ROUNDS, TRL_EVERY = 100, 20
PARTS = ("ppo_kl3", "ppo_kl9", "ppo_kl12", *[f"ppo_b{b:g}" for b in PPO_BETAS], "ppo_gold",
         *[f"dpo_b{b:g}" for b in DPO_BETAS], "preferred_ft", *[f"dpo_gold_b{b:g}" for b in DPO_GOLD_BETAS],
         "trl_dpo_b0.1", *[f"{a}_b{b:g}" for a in ("grpo", "rloo") for b in TRL_BETAS])
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

    from rlhf_helpers.beyond_ppo.dpo_training import (DPOTrainConfig, PreferredFTConfig, gold_scorer,
                                                      pair_statistics, sample_preference_pairs, train_dpo,
                                                      train_preferred_ft)
    from rlhf_helpers.beyond_ppo.grpo_rloo import train_trl, trl_prompt_dataset
    from rlhf_helpers.beyond_ppo.trl_dpo import train_trl_dpo
    from rlhf_helpers.core.precision import resolve_mixed_precision
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
    gold_judge = course.judges["bag_of_words"]
    pairs = {}

    def preference_pairs(labelled_by: str = "reward model"):
        """The same 4 completions of the same 1,024 train prompts (same seed), labelled by `labelled_by`."""
        if labelled_by not in pairs:
            started = time.perf_counter()
            order = np.random.default_rng(0).permutation(len(course.train_prompts))[:1024]
            prompts = [list(map(int, course.train_prompts[int(i)])) for i in order]
            scorer = course.scorer.score if labelled_by == "reward model" else gold_scorer(gold_judge)
            pairs[labelled_by] = sample_preference_pairs(course.sft, course.tokenizer, prompts, scorer, k=4)
            key = "pairs" if labelled_by == "reward model" else "pairs_gold"
            card.data[key] = {**pair_statistics(pairs[labelled_by]), "prompts": len(prompts), "k": 4,
                              "labelled_by": labelled_by, "seconds": round(time.perf_counter() - started, 1)}
        return pairs[labelled_by]

    trl_prompts = None
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
        elif part.startswith(("dpo_b", "dpo_gold_b")):
            config = DPOTrainConfig(beta=float(part.rsplit("_b", 1)[1]), max_steps=200, eval_every=25,
                                    checkpoint_every=25)
            labelled_by = "gold judge" if part.startswith("dpo_gold") else "reward model"
            result = train_dpo(copy.deepcopy(course.sft).requires_grad_(True), course.sft,
                               preference_pairs(labelled_by), config, work / part, course.evaluator)
            result = {k: v for k, v in result.items() if k != "model"} | {"settings": vars(config),
                                                                           "labelled_by": labelled_by}
        elif part.startswith("trl_dpo_b"):
            config = DPOTrainConfig(beta=float(part[9:]), max_steps=200, eval_every=25)
            result = train_trl_dpo(preference_pairs(), config, work / part, course.evaluator)
            result["settings"] = {**result["settings"], "beta": config.beta}
        elif part.startswith(("grpo_b", "rloo_b")):
            algorithm, beta = part.split("_b")
            if trl_prompts is None:
                trl_prompts = trl_prompt_dataset(course.tokenizer, course.config, split="train")
            recipe = fast_recipe(ppo, init_kl_coef=float(beta), adaptive_kl=False)
            result = train_trl(algorithm, work / part, recipe, prompts=trl_prompts, evaluator=course.evaluator,
                               eval_every=TRL_EVERY, until_step=TRL_ROUNDS, keep_samples=8,
                               bf16=resolve_mixed_precision(recipe.mixed_precision) == "bf16")
            result = {"steps": result["steps"], "train_seconds": result["train_seconds"],
                      "history": result["evaluations"], "training": result["history"],
                      "settings": result["settings"]}
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
