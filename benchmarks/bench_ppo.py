"""PPO speed on the tiny profile, plain path vs fast path side by side: seconds per step by phase, and the ratio.

    python benchmarks/bench_ppo.py              # 6 steps of each path, default tiny configuration
    python benchmarks/bench_ppo.py --quick      # 2 small steps of each (smoke test)
    python benchmarks/bench_ppo.py --paths plain

"plain" is ``PPOConfig(fast_path=False)`` (the default), "fast" is ``fast_path=True`` (see its docstring in
`rlhf_helpers.config.PPOConfig`). Both run in this process, one after the other, from the same weights. Uses
the shipped SFT policy and reward model. The first step of each path is left out of the means (one-off costs).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile

import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward import load_reward_model

PHASES = ["generate", "score", "forward", "update"]


def run_path(lm, tokenizer, scorer, prompts, settings: PPOConfig, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), copy.deepcopy(lm), tokenizer, scorer.score,
                             prompts, settings, out)
        return [trainer.step() for _ in range(steps)]


def steady_means(rows: list[dict]) -> dict[str, float]:
    steady = rows[1:] or rows
    keys = ["seconds"] + [f"time_{p}" for p in PHASES]
    return {k: sum(r[k] for r in steady) / len(steady) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--paths", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    args = parser.parse_args()

    config = get_config("tiny")
    lm, tokenizer = load_policy("tiny")
    scorer = load_reward_model("tiny")
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"][:2048]
    base = dataclasses.replace(config.ppo, max_minutes=None, max_steps=1000)
    if args.quick:
        base, args.steps = dataclasses.replace(base, batch_size=16, mini_batch_size=8), 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | batch {base.batch_size}, mini-batch "
          f"{base.mini_batch_size}, {base.ppo_epochs} epochs, responses {base.response_min_tokens}-"
          f"{base.response_max_tokens} tokens, mixed precision {base.mixed_precision}")
    results = {}
    for path in args.paths:
        rows = run_path(lm, tokenizer, scorer, prompts, dataclasses.replace(base, fast_path=path == "fast"),
                        args.steps)
        results[path] = steady_means(rows)
        print(f"{path}: " + ", ".join(f"step {r['step']} {r['seconds']:.2f} s" for r in rows))
    print(f"\nseconds per step (steps 2+) {'':>4}" + "".join(f"{p:>10}" for p in ["total"] + PHASES))
    for path, means in results.items():
        print(f"{path:<32}" + "".join(f"{means[k]:10.3f}" for k in ["seconds"] + [f"time_{p}" for p in PHASES]))
    if len(results) == 2:
        plain, fast = results["plain"], results["fast"]
        print(f"{'speed-up (plain / fast)':<32}" + "".join(
            f"{plain[k] / max(fast[k], 1e-9):9.2f}x" for k in ["seconds"] + [f"time_{p}" for p in PHASES]))
        print(f"\nsteps per second: plain {1 / plain['seconds']:.3f}, fast {1 / fast['seconds']:.3f} "
              f"({plain['seconds'] / fast['seconds']:.2f}x)")


if __name__ == "__main__":
    main()
