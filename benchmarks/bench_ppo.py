"""PPO speed on the tiny profile, plain path vs fast path side by side: seconds per step by phase, and the ratio.

    python benchmarks/bench_ppo.py              # 6 steps of each path, default tiny configuration
    python benchmarks/bench_ppo.py --quick      # 2 small steps of each (smoke test)
    python benchmarks/bench_ppo.py --paths plain
    python benchmarks/bench_ppo.py --profile 25  # also the 25 costliest operators of each path (torch.profiler)

A full run (not --quick, not --profile, both paths) writes its figures and every step's timings to
benchmarks/results/bench_ppo.json, so the ratio quoted in a note can be looked up with the run it came from.

"plain" is ``PPOConfig(fast_path=False)``, "fast" is ``fast_path=True`` (see its docstring in
`rlhf_helpers.config.PPOConfig`), with the rollouts scored in bf16 as the pipeline does on the fast path
(`rlhf_helpers.ppo.trainer.reward_autocast_dtype`). Both run in this process, step by step in turn, from the same
weights, at the same settings (the PPOConfig defaults: batch 64, mini-batch 16, 4 epochs, bf16 where the CPU has
it). Uses the shipped SFT policy and reward model. The first step of each path is left out of the means (one-off
costs, e.g. oneDNN building its kernels for new matrix shapes).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import tempfile
import time

import numpy as np
import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.trainer import reward_autocast_dtype
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward import load_reward_model

PHASES = ["generate", "score", "forward", "update"]


def new_trainer(lm, tokenizer, scorer, prompts, settings: PPOConfig, out: str):
    return PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), copy.deepcopy(lm), tokenizer, scorer.score, prompts,
                      settings, out)


def scored_step(trainer, scorer) -> dict:
    """One step, its rollouts scored at the precision its path scores in."""
    scorer.autocast_dtype = reward_autocast_dtype(trainer.config)
    return trainer.step()


def run_paths(lm, tokenizer, scorer, prompts, settings: dict[str, PPOConfig], steps: int,
              profile_rows: int = 0) -> dict[str, list[dict]]:
    """`steps` steps of each path. Interleaved (plain, fast, plain, ...), so that a change in the machine's speed
    during the run (other load, clock) reaches both paths alike; with `profile_rows`, one path after the other,
    each profiled after its first step."""
    rows = {path: [] for path in settings}
    with tempfile.TemporaryDirectory() as out:
        trainers = {path: new_trainer(lm, tokenizer, scorer, prompts, s, f"{out}/{path}") for path, s in settings.items()}
        if not profile_rows:
            for _ in range(steps):
                for path, trainer in trainers.items():
                    rows[path].append(scored_step(trainer, scorer))
            return rows
        for path, trainer in trainers.items():
            rows[path].append(scored_step(trainer, scorer))
            with torch.profiler.profile() as profiler:
                rows[path] += [scored_step(trainer, scorer) for _ in range(steps - 1)]
            print(f"\n{path}: the {profile_rows} operators with the most self CPU time, steps 2-{steps}")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile_rows))
    return rows


def steady_medians(rows: list[dict]) -> dict[str, float]:
    """Median seconds per step and per phase over steps 2+ (medians: this machine's speed jumps now and then)."""
    steady = rows[1:] or rows
    keys = ["seconds"] + [f"time_{p}" for p in PHASES]
    return {k: float(np.median([r[k] for r in steady])) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--paths", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N operators with the most self CPU time of each path (steps 2+, profiled)")
    args = parser.parse_args()

    config = get_config("tiny")
    lm, tokenizer = load_policy("tiny")
    scorer = load_reward_model("tiny")
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"][:2048]
    # PPOConfig's own defaults (4 epochs), not the tiny profile's faster recipe: the steps are compared at the
    # settings the plain path was measured at
    base = PPOConfig(seed=config.seed, max_minutes=None, max_steps=1000)
    if args.quick:
        base, args.steps = dataclasses.replace(base, batch_size=16, mini_batch_size=8), 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | batch {base.batch_size}, mini-batch "
          f"{base.mini_batch_size}, {base.ppo_epochs} epochs, responses {base.response_min_tokens}-"
          f"{base.response_max_tokens} tokens, mixed precision {base.mixed_precision}")
    settings = {path: dataclasses.replace(base, fast_path=path == "fast") for path in args.paths}
    results, all_rows = {}, run_paths(lm, tokenizer, scorer, prompts, settings, args.steps, args.profile)
    for path, rows in all_rows.items():
        results[path] = steady_medians(rows)
        print(f"{path}: " + ", ".join(f"step {r['step']} {r['seconds']:.2f} s" for r in rows))
    print(f"\n{'median seconds per step (steps 2+)':<36}" + "".join(f"{p:>10}" for p in ["total"] + PHASES))
    for path, means in results.items():
        print(f"{path:<36}" + "".join(f"{means[k]:10.3f}" for k in ["seconds"] + [f"time_{p}" for p in PHASES]))
    if len(results) == 2:
        plain, fast = results["plain"], results["fast"]
        print(f"{'speed-up (plain / fast)':<36}" + "".join(
            f"{plain[k] / max(fast[k], 1e-9):9.2f}x" for k in ["seconds"] + [f"time_{p}" for p in PHASES]))
        # the steps ran in turn, so each plain step has a fast neighbour that saw the same machine
        pairs = [a["seconds"] / b["seconds"] for a, b in zip(all_rows["plain"][1:], all_rows["fast"][1:])]
        print(f"\nsteps per second: plain {1 / plain['seconds']:.3f}, fast {1 / fast['seconds']:.3f} "
              f"({plain['seconds'] / fast['seconds']:.2f}x; step by step: median {np.median(pairs):.2f}x, "
              f"range {min(pairs):.2f}-{max(pairs):.2f}x)")
        if not (args.quick or args.profile):
            save(results, all_rows, pairs, base)


def save(results: dict, all_rows: dict[str, list[dict]], pairs: list[float], base: PPOConfig) -> None:
    """The figures and every step's timings, to benchmarks/results/bench_ppo.json."""
    keys = ["seconds"] + [f"time_{p}" for p in PHASES]
    record = {"written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "settings": dataclasses.asdict(base),
              "median_seconds": results, "speed_up": results["plain"]["seconds"] / results["fast"]["seconds"],
              "step_by_step": {"median": float(np.median(pairs)), "min": min(pairs), "max": max(pairs)},
              "steps": {path: [{k: row[k] for k in ["step", *keys]} for row in rows] for path, rows in all_rows.items()}}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_ppo.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
