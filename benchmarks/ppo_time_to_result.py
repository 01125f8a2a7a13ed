"""The held-out result of PPO against wall-clock time: how soon does a recipe reach the 5-minute numbers?

    # main's PPO defaults before the tiny profile took the faster recipe (PPOConfig's own defaults)
    python benchmarks/ppo_time_to_result.py run old.json --minutes 5 --every 1 --label "PPOConfig defaults" -- \\
        --ppo.no-fast-path --ppo.ppo-epochs 4 --ppo.learning-rate 5e-5
    # the tiny profile's defaults (fast path, 1 epoch, learning rate 2e-4)
    python benchmarks/ppo_time_to_result.py run new.json --minutes 2.5 --every 0.5 --label "tiny profile defaults"
    python benchmarks/ppo_time_to_result.py plot old.json new.json --out time_to_result.png

`run` trains PPO on the tiny profile (the flags after ``--`` are the command line's ``--ppo.*`` flags), scores the
rollouts as the pipeline does (bf16 on the fast path), keeps a copy of the policy every `--every` minutes of
training time, and afterwards evaluates each copy as ``python -m rlhf_helpers evaluate`` does (256 held-out
prompts, the bag-of-words and VADER judges, KL to the SFT policy). Evaluation time is not training time: the x
axis is the trainer's own clock. `plot` draws the judged positive rate and the KL against minutes for several
runs in one figure, with the first run's last values as dashed lines (the numbers to reach).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.config import finalize
from rlhf_helpers.evaluation import default_judges, evaluate_policy
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.trainer import reward_autocast_dtype
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward import load_reward_model

KEYS = ("reward", "positive_rate/bag_of_words", "positive_rate/vader", "kl", "ref_perplexity")


def ppo_settings(flags: list[str], minutes: float):
    """The tiny profile with the command line's ``--ppo.*`` flags, and the time budget."""
    import tyro

    from rlhf_helpers.config import CourseConfig

    config = finalize(tyro.cli(CourseConfig, args=flags, default=get_config("tiny")))
    config.ppo.max_minutes = minutes
    return config


def run(args) -> None:
    config = ppo_settings(args.flags, args.minutes)
    sft, tokenizer = load_policy(config.name)
    scorer = load_reward_model(config.name, autocast_dtype=reward_autocast_dtype(config.ppo))
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    heldout = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:256]]
    snapshots = [(0.0, 0, copy.deepcopy(sft.state_dict()))]
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(sft)), copy.deepcopy(sft), tokenizer, scorer.score,
                             prompts, config.ppo, out)

        def keep(stats):
            minutes = trainer.state["train_seconds"] / 60
            if minutes >= args.every * len(snapshots) - 1e-9 or trainer.state["step"] >= config.ppo.max_steps:
                lm = trainer.accelerator.unwrap_model(trainer.policy).lm
                snapshots.append((minutes, trainer.state["step"], copy.deepcopy(lm.state_dict())))

        trainer.train(progress=True, callback=keep)
        last_minutes = trainer.state["train_seconds"] / 60
        if snapshots[-1][1] != trainer.state["step"]:  # the time budget ended between two snapshots
            lm = trainer.accelerator.unwrap_model(trainer.policy).lm
            snapshots.append((last_minutes, trainer.state["step"], copy.deepcopy(lm.state_dict())))
    judges = default_judges(config)
    rows = []
    policy = copy.deepcopy(sft)
    for minutes, step, weights in snapshots:
        policy.load_state_dict(weights)
        metrics, _ = evaluate_policy(policy.eval(), sft, tokenizer, heldout, scorer.score, judges, seed=1234,
                                     temperature=config.ppo.temperature, min_tokens=config.ppo.response_min_tokens,
                                     max_tokens=config.ppo.response_max_tokens)
        rows.append({"minutes": round(minutes, 3), "step": step, **{k: metrics[k] for k in KEYS}})
        print(json.dumps(rows[-1]))
    result = {"label": args.label, "flags": args.flags, "minutes": args.minutes, "settings": {
        k: getattr(config.ppo, k) for k in ("fast_path", "ppo_epochs", "learning_rate", "batch_size", "mini_batch_size")},
        "torch_threads": torch.get_num_threads(), "rows": rows}
    Path(args.output).write_text(json.dumps(result, indent=1))


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [("positive_rate/bag_of_words", "positive, bag-of-words judge"), ("positive_rate/vader",
              "positive, VADER judge"), ("kl", "KL to SFT (nats / response)")]
    for i, path in enumerate(args.inputs):
        data = json.loads(Path(path).read_text())
        label = data.get("label") or (" ".join(data["flags"]) if data["flags"] else "the defaults")
        label = f"{label} ({data['rows'][-1]['step']} steps in {data['minutes']:g} min)"
        for ax, (key, title) in zip(axes, panels):
            line, = ax.plot([r["minutes"] for r in data["rows"]], [r[key] for r in data["rows"]], marker="o",
                            label=label)
            if i == 0:  # the numbers to reach
                ax.axhline(data["rows"][-1][key], color=line.get_color(), linestyle="--", linewidth=0.8)
            ax.set(title=title, xlabel="training minutes (2 CPU cores)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    plt.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(args.out)


def main() -> int:
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("output")
    r.add_argument("--minutes", type=float, default=5.0)
    r.add_argument("--every", type=float, default=1.0)
    r.add_argument("--label", default="", help="the run's name in the figure (default: its flags)")
    p = sub.add_parser("plot")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", default="time_to_result.png")
    args = parser.parse_args(argv)
    args.flags = flags
    torch.manual_seed(0)
    (run if args.command == "run" else plot)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
