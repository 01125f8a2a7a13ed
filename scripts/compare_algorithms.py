"""PPO (ours) vs TRL's GRPO and RLOO on the tiny profile, at equal wall time; writes a run card.

    python scripts/compare_algorithms.py --minutes 5

Each algorithm starts from the shipped SFT policy, trains against the shipped reward model on the same train
prompts for the same wall-clock budget (model loading excluded), and is then evaluated exactly like notebook 06:
256 held-out prompts, one sampled response each (4-16 tokens, full distribution, seed 1234), scored by the
reward model, two independent judges (VADER, bag of words), KL to the SFT policy and perplexity under it.

Output: ``<artifacts>/<profile>/compare/run_card_compare.json`` (histories, evaluations, settings, timings) and the
trained policies in ``<artifacts>/<profile>/compare/<algorithm>/``. The run card that notebook 04 plots ships in
``rlhf_helpers/assets/<profile>/results/`` (`rlhf_helpers.core.assets`): copy a new one there on purpose to ship it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def compare_config(minutes: float):
    """The comparison's settings: the tiny profile with `PPOConfig`'s own defaults, notebook 05's recipe (4 epochs
    per batch, learning rate 5e-5, the plain path, at most 200 steps), and a `minutes` budget. GRPO and RLOO mirror
    them (`rlhf_helpers.beyond_ppo.grpo_rloo.trl_config`). These are the settings the shipped run card records.

    Not the tiny profile's faster recipe: it ends at its 200 steps in under 2 minutes, so at 5 minutes PPO would
    stop long before the others and the comparison would no longer be at equal wall time."""
    from rlhf_helpers import get_config
    from rlhf_helpers.config import PPOConfig

    return get_config("tiny", ppo=PPOConfig(max_minutes=minutes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per algorithm")
    parser.add_argument("--algorithms", nargs="+", default=["ppo", "grpo", "rloo"])
    parser.add_argument("--n-prompts", type=int, default=256, help="held-out prompts for the evaluation")
    parser.add_argument("--out", default=None, help="default: <artifacts>/<profile>/compare/")
    args = parser.parse_args()

    import dataclasses
    import json

    from rlhf_helpers import build_dataset
    from rlhf_helpers.beyond_ppo.grpo_rloo import train_trl
    from rlhf_helpers.core.precision import resolve_mixed_precision
    from rlhf_helpers.core.run_card import write_run_card
    from rlhf_helpers.evaluation import default_judges, evaluate_policy
    from rlhf_helpers.pipeline import stage_ppo
    from rlhf_helpers.policy import load_policy
    from rlhf_helpers.reward import load_reward_model

    config = compare_config(args.minutes)
    work = config.artifacts_dir / "compare"
    out_dir = Path(args.out) if args.out else work
    runs = {}
    for algorithm in args.algorithms:
        started = time.perf_counter()
        if algorithm == "ppo":
            summary = stage_ppo(config, output_dir=work / "ppo", resume=False, progress=False)
            card = json.loads((work / "ppo" / "run_card_ppo.json").read_text())
            history = [{"step": h["step"], "seconds": sum(x["seconds"] for x in card["metrics"]["history"][: i + 1]),
                        "episodes": h["step"] * card["config"]["ppo"]["batch_size"], "score": h["score"], "kl": h["kl"],
                        "response_length": h["response_length"], "entropy": h.get("entropy")}
                       for i, h in enumerate(card["metrics"]["history"])]
            runs["ppo"] = {"steps": summary["steps"], "train_seconds": summary["seconds"], "history": history,
                           "settings": card["config"]["ppo"], "dir": str(work / "ppo")}
        else:
            # the precision our PPO gets from PPOConfig.mixed_precision "auto" (bf16 only where the CPU has bf16
            # instructions: forced bf16 is emulated, and ~10x slower, elsewhere), so the budget buys the same compute
            bf16 = resolve_mixed_precision(config.ppo.mixed_precision) == "bf16"
            result = train_trl(algorithm, work / algorithm, dataclasses.replace(config.ppo), bf16=bf16)
            history = [{**h, "kl": h["kl_per_response"]} for h in result["history"]]
            runs[algorithm] = {"steps": result["steps"], "train_seconds": round(result["train_seconds"], 1),
                               "history": history, "settings": {k: str(v) for k, v in result["settings"].items()},
                               "dir": str(work / algorithm)}
        runs[algorithm]["wall_seconds_incl_loading"] = round(time.perf_counter() - started, 1)
        print(f"{algorithm}: {runs[algorithm]['steps']} steps in {runs[algorithm]['train_seconds']} s", flush=True)

    reference, tokenizer = load_policy("tiny")
    scorer = load_reward_model("tiny")
    judges = default_judges(config)
    prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][: args.n_prompts]]
    evaluations = {}
    for name in ["sft", *runs]:
        model = reference if name == "sft" else load_policy(runs[name]["dir"])[0]
        metrics, samples = evaluate_policy(model, reference, tokenizer, prompts, scorer.score, judges, seed=1234)
        evaluations[name] = {"metrics": metrics, "samples": samples[:12]}
        print(name, {k: round(v, 3) for k, v in metrics.items()}, flush=True)
    path = write_run_card(out_dir, "compare", {**config.to_dict(), "minutes": args.minutes, "n_prompts": args.n_prompts},
                          metrics={"runs": runs, "evaluations": evaluations},
                          timings={name: run["train_seconds"] for name, run in runs.items()})
    print("wrote", path)


if __name__ == "__main__":
    main()
