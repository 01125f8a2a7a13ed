"""PPO speed on the tiny profile: seconds per step, split into phases, and episodes per second.

    python benchmarks/bench_ppo.py            # 6 steps of the default tiny configuration
    python benchmarks/bench_ppo.py --quick    # 2 small steps (smoke test)

Uses the shipped SFT policy and reward model (falls back to random weights if they are missing). The
first step is reported separately: it includes one-off costs (allocation, warm-up).
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward import load_reward_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    config = get_config("tiny")
    lm, tokenizer = load_policy("tiny")
    scorer = load_reward_model("tiny")
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"][:2048]
    settings = PPOConfig(max_minutes=None, max_steps=1000)
    if args.quick:
        settings.batch_size, settings.mini_batch_size, args.steps = 16, 8, 2
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(lm), copy.deepcopy(lm), tokenizer, scorer.score, prompts, settings, out)
        rows = [trainer.step() for _ in range(args.steps)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | batch {settings.batch_size}, "
          f"mini-batch {settings.mini_batch_size}, {settings.ppo_epochs} epochs, responses "
          f"{settings.response_min_tokens}-{settings.response_max_tokens} tokens")
    phases = ["time_generate", "time_score", "time_forward", "time_update"]
    print(f"{'step':>5} {'seconds':>8} " + " ".join(f"{p[5:]:>9}" for p in phases) + f" {'episodes/s':>11}")
    for row in rows:
        print(f"{row['step']:5d} {row['seconds']:8.2f} " + " ".join(f"{row[p]:9.2f}" for p in phases)
              + f" {row['episodes_per_second']:11.1f}")
    steady = rows[1:] or rows
    mean = lambda key: sum(r[key] for r in steady) / len(steady)
    print(f"steady state (steps 2+): {mean('seconds'):.2f} s/step, {mean('episodes_per_second'):.1f} episodes/s; "
          + ", ".join(f"{p[5:]} {100 * mean(p) / mean('seconds'):.0f}%" for p in phases))


if __name__ == "__main__":
    main()
