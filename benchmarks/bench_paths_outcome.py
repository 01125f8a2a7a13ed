"""Does PPO's fast path reach the same result as the plain path? Judged outcome over seeds, not speed.

    python benchmarks/bench_paths_outcome.py run benchmarks/results/paths_outcome.json     # resumable
    python benchmarks/bench_paths_outcome.py run benchmarks/results/paths_outcome.json --settings tiny   # one setting
    python benchmarks/bench_paths_outcome.py report benchmarks/results/paths_outcome.json --out paths_outcome.png
    python benchmarks/bench_paths_outcome.py run OUT.json --settings tiny --paths fast-fp32-scores fast-fp32
                                                          # variants of the fast path: where a difference comes from

The fast path (`PPOConfig.fast_path`: bf16 autocast, the response passes on real tokens only, sampling with a KV
cache, float32 attention, rollouts scored in bf16) and the plain path (float32, padded batches, full forward
passes) compute the same PPO step up to rounding; over a run the rounding can steer sampling elsewhere. This
benchmark trains both from the shipped SFT policy at two settings — the tiny profile's recipe (1 epoch, learning
rate 2e-4, 150 steps: notebook 06's run) and `PPOConfig`'s 4-epoch recipe (learning rate 5e-5, 100 steps) — with
seeds 0, 1, 2 each (``--seeds`` for more: the committed results have 0–5), then evaluates every policy as ``python -m rlhf_helpers evaluate`` does (256 held-out prompts,
the bag-of-words and VADER judges, KL per response to the SFT policy, one sampling seed for all).

Every finished run is written to the output file at once, so a stopped benchmark resumes where it was. `report`
prints, per setting, each path's mean and range over the seeds beside the plain path's, the difference in standard
errors, and whether the two agree: the difference of their means within the larger of their two seed ranges; and
draws judged positive rate against KL, one point per run. Two variants of the fast path (``--paths``) look for the
cause of a difference: ``fast-fp32-scores`` scores the rollouts in float32, ``fast-fp32`` runs the fast path in
float32 throughout, leaving only its structure (packing, the KV-cache sampler's random stream, fused Adam).

The outcome does not depend on the machine's load — the threads follow the free cores and compute what all the
cores would (`rlhf_helpers.core.thread_invariance`) — so this benchmark may share the machine, even with a second
copy of itself; its timings are only reported.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.core.thread_invariance import numerics_threads
from rlhf_helpers.evaluation import default_judges, evaluate_policy
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.trainer import reward_autocast_dtype
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward import load_reward_model

SETTINGS = {  # name: (PPOConfig changes from the tiny profile's, steps)
    "tiny recipe (1 epoch, lr 2e-4)": ({}, 150),
    "4-epoch recipe (lr 5e-5)": ({"ppo_epochs": 4, "learning_rate": 5e-5}, 100),
}
# name: (PPOConfig changes, rollouts scored in float32 even on the fast path). The two paths, and two variants of
# the fast path that look for the cause of a difference (``--paths``): its reward scores in float32, and the fast
# path in float32 throughout (no bf16 anywhere: what is left is packing, the KV-cache sampler, fused Adam)
PATHS = {"fast": ({"fast_path": True}, False), "plain": ({"fast_path": False}, False),
         "fast-fp32-scores": ({"fast_path": True}, True),
         "fast-fp32": ({"fast_path": True, "mixed_precision": "no"}, True)}
DEFAULT_PATHS = ("fast", "plain")
SEEDS = (0, 1, 2)
KEYS = ("positive_rate/bag_of_words", "positive_rate/vader", "reward", "kl", "ref_perplexity", "distinct_2")


def key_of(setting: str, path: str, seed: int) -> str:
    return f"{setting} | {path} | seed {seed}"


def train_and_evaluate(setting: str, path: str, seed: int) -> dict:
    changes, steps = SETTINGS[setting]
    config = get_config("tiny")
    path_changes, float32_scores = PATHS[path]
    ppo = dataclasses.replace(config.ppo, **changes, **path_changes, seed=seed, max_steps=steps,
                              max_minutes=None, threads=None)
    sft, tokenizer = load_policy(config.name)
    scorer = load_reward_model(config.name, autocast_dtype=None if float32_scores else reward_autocast_dtype(ppo))
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    heldout = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:256]]
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(sft)), copy.deepcopy(sft), tokenizer, scorer.score,
                             prompts, ppo, out)
        trainer.train(progress=False)
        if trainer.state["step"] != steps:  # stopped (Ctrl-C, SIGTERM): not a result; the next run starts it again
            raise SystemExit(f"{key_of(setting, path, seed)} stopped at step {trainer.state['step']} of {steps}")
        policy = trainer.accelerator.unwrap_model(trainer.policy).lm.eval()
        train_seconds = trainer.state["train_seconds"]
    # the same judge for every run: the reward model scored in float32, one sampling seed
    judge_scorer = load_reward_model(config.name)
    metrics, _ = evaluate_policy(policy, sft, tokenizer, heldout, judge_scorer.score, default_judges(config),
                                 seed=1234, temperature=ppo.temperature, min_tokens=ppo.response_min_tokens,
                                 max_tokens=ppo.response_max_tokens)
    return {"setting": setting, "path": path, "seed": seed, "steps": steps, "train_seconds": round(train_seconds, 1),
            **{k: metrics[k] for k in KEYS}}


def run(args) -> None:
    out = Path(args.output)
    done = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    # threads from the free cores, with the numbers of all of them (`core.threads`): load changes no result
    os.environ["RLHF_ADAPT_THREADS"] = "1"
    os.environ.pop("OMP_NUM_THREADS", None)
    settings = [name for name in SETTINGS if args.settings is None or any(word in name for word in args.settings)]
    todo = [(s, p, seed) for s in settings for seed in args.seeds for p in args.paths
            if key_of(s, p, seed) not in done["runs"]]
    print(f"{len(todo)} runs to do ({len(done['runs'])} in {out})")
    for setting, path, seed in todo:
        start = time.perf_counter()
        result = train_and_evaluate(setting, path, seed)
        done["runs"][key_of(setting, path, seed)] = result
        done.update(torch=torch.__version__, threads=numerics_threads())
        out.write_text(json.dumps(done, indent=1))
        print(f"{key_of(setting, path, seed)}: bag of words {result['positive_rate/bag_of_words']:.3f}, "
              f"KL {result['kl']:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)


def summarise(runs: dict) -> list[dict]:
    """Per setting, metric and path other than plain: its mean and range over the seeds beside the plain path's,
    the difference in standard errors (``t``), and whether they agree as the issue asks: the difference of the means
    within the larger of the two seed ranges."""
    rows = []
    for setting in SETTINGS:
        for path in [p for p in PATHS if p != "plain"]:
            for key in ("positive_rate/bag_of_words", "positive_rate/vader", "kl"):
                values = {p: np.array([r[key] for r in runs.values() if r["setting"] == setting and r["path"] == p])
                          for p in (path, "plain")}
                if any(len(v) == 0 for v in values.values()):
                    continue
                spread = max(np.ptp(v) for v in values.values())
                difference = values[path].mean() - values["plain"].mean()
                # the difference in standard errors of a difference of two means (Welch): |t| < 2 is what seed
                # noise alone gives about 19 times in 20
                se = np.sqrt(sum(v.var(ddof=1) / len(v) for v in values.values())) if all(
                    len(v) > 1 for v in values.values()) else float("nan")
                rows.append({"setting": setting, "path": path, "metric": key,
                             "seeds": min(len(v) for v in values.values()),
                             "mean": values[path].mean(), "plain mean": values["plain"].mean(),
                             "range": f"{values[path].min():.3f}–{values[path].max():.3f}",
                             "plain range": f"{values['plain'].min():.3f}–{values['plain'].max():.3f}",
                             "− plain": difference, "t": difference / se if se > 0 else float("nan"),
                             "agree": bool(abs(difference) <= spread)})
    return rows


def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    runs = json.loads(Path(args.input).read_text())["runs"]
    print(pd.DataFrame(summarise(runs)).round(3).to_string(index=False))
    seconds = pd.DataFrame(runs.values()).groupby(["setting", "path"])["train_seconds"].mean()
    print("\nmean training seconds per run (the machine may have been shared):\n" + seconds.round(0).to_string())
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(6 * len(SETTINGS), 4.2), sharey=True)
    for ax, setting in zip(np.atleast_1d(axes), SETTINGS):
        for path, marker in zip(PATHS, "os^D"):
            points = [r for r in runs.values() if r["setting"] == setting and r["path"] == path]
            if not points:
                continue
            ax.scatter([r["kl"] for r in points], [r["positive_rate/bag_of_words"] for r in points], marker=marker,
                       s=60, label=f"{path} path")
            for r in points:
                ax.annotate(str(r["seed"]), (r["kl"], r["positive_rate/bag_of_words"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        ax.set(title=setting, xlabel="KL to the SFT policy (nats / response, held out)")
        ax.legend()
    np.atleast_1d(axes)[0].set_ylabel("positive, bag-of-words judge (held out)")
    plt.suptitle("PPO's fast and plain paths and two variants of the fast path, one point per seed (the number)")
    plt.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("output")
    r.add_argument("--settings", nargs="+", default=None,
                   help="run only the settings whose names contain one of these words (e.g. tiny, 4-epoch)")
    r.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=list(PATHS),
                   help="the paths (and variants of the fast path) to run; default: fast and plain")
    r.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p = sub.add_parser("report")
    p.add_argument("input")
    p.add_argument("--out", default="paths_outcome.png")
    args = parser.parse_args()
    {"run": run, "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
