"""Command line: ``python -m rlhf_helpers <stage> [--profile tiny|gpt2] ...``.

Stages: ``tokenizer``, ``data``, ``sft``, and ``run`` (every stage built so far, in order).
Each writes its artifacts and a JSON run card under ``<artifacts root>/<profile>/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .config import PROFILES, get_config


def _print(result: dict) -> None:
    print(json.dumps(result, indent=2, default=str))


def _train_and_export(stage, config, args) -> None:
    """Run a resumable training stage (sft, reward) with its step/time budget; copy the result if asked."""
    from . import pipeline

    budget = {k: v for k, v in {"max_steps": args.max_steps, "max_minutes": args.max_minutes}.items() if v is not None}
    result = stage(config, output_dir=args.output_dir, resume=not args.no_resume, **budget)
    if args.export_to:
        result["exported_to"] = str(pipeline.export_policy(result["dir"], args.export_to))
    _print(result)


def main(argv: list[str] | None = None) -> int:
    # --profile / --seed are accepted before or after the stage name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default=argparse.SUPPRESS, help=f"one of {sorted(PROFILES)} (default: $RLHF_PROFILE or 'tiny')")
    common.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="override the profile's seed")
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers", description="RLHF from scratch: the course's stages.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("tokenizer", parents=[common], help="train (tiny) or fetch (gpt2) the tokenizer")
    sub.add_parser("data", parents=[common], help="build the prompt datasets (all / train / eval)")
    sft = sub.add_parser("sft", parents=[common], help="train the supervised policy on IMDb")
    sft.add_argument("--max-steps", type=int, default=None)
    sft.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops cleanly and saves")
    sft.add_argument("--output-dir", default=None, help="default: <artifacts>/<profile>/sft_policy")
    sft.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    sft.add_argument("--export-to", default=None, help="also copy the final policy (no optimiser state) here")
    reward = sub.add_parser("reward", parents=[common], help="train, normalise and evaluate the reward model")
    reward.add_argument("--max-steps", type=int, default=None)
    reward.add_argument("--max-minutes", type=float, default=None)
    reward.add_argument("--output-dir", default=None, help="default: <artifacts>/<profile>/reward_model")
    reward.add_argument("--no-resume", action="store_true")
    reward.add_argument("--export-to", default=None, help="also copy the final reward model here "
                        "(with --trl: only its run card, run_card_reward_trl.json)")
    reward.add_argument("--trl", action="store_true",
                        help="train with trl.RewardTrainer on the same pairs (default dir: <artifacts>/<profile>/reward_model_trl)")
    ppo = sub.add_parser("ppo", parents=[common], help="align the SFT policy with PPO against the reward model")
    ppo.add_argument("--steps", type=int, default=None)
    ppo.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget (tiny default: 5)")
    ppo.add_argument("--output-dir", default=None, help="default: <artifacts>/<profile>/ppo_policy")
    ppo.add_argument("--no-resume", action="store_true")
    evaluate = sub.add_parser("evaluate", parents=[common], help="SFT vs PPO on held-out prompts, independent judges")
    evaluate.add_argument("--n-prompts", type=int, default=256)
    run = sub.add_parser("run", parents=[common],
                         help="the whole pipeline: tokenizer, data, (sft), (reward), ppo, evaluate")
    run.add_argument("--train-sft", action="store_true", help="train the SFT policy (tiny default: use the shipped one)")
    run.add_argument("--train-reward", action="store_true", help="train the reward model (tiny default: shipped one)")
    run.add_argument("--ppo-minutes", type=float, default=None, help="PPO budget (tiny default: 5)")
    args = parser.parse_args(argv)

    overrides = {"seed": args.seed} if getattr(args, "seed", None) is not None else {}
    try:
        config = get_config(getattr(args, "profile", None), **overrides)
    except (ValueError, TypeError) as err:
        parser.error(str(err))

    from . import pipeline

    if args.stage == "tokenizer":
        _print(pipeline.stage_tokenizer(config))
    elif args.stage == "data":
        _print(pipeline.stage_data(config))
    elif args.stage == "sft":
        _train_and_export(pipeline.stage_sft, config, args)
    elif args.stage == "reward":
        if args.trl:
            if args.max_minutes is not None:
                parser.error("--max-minutes is not supported with --trl (TRL's Trainer counts steps): use --max-steps")
            from .reward_trl import stage_reward_trl

            result = stage_reward_trl(config, output_dir=args.output_dir,
                                      **({"max_steps": args.max_steps} if args.max_steps is not None else {}))
            if args.export_to:  # the TRL model's weights are not shipped: its run card is the record
                Path(args.export_to).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(result["dir"]) / "run_card_reward_trl.json", args.export_to)
                result["exported_to"] = args.export_to
            _print(result)
            return 0
        _train_and_export(pipeline.stage_reward, config, args)
    elif args.stage == "ppo":
        overrides = {k: v for k, v in {"steps": args.steps, "max_minutes": args.max_minutes}.items() if v is not None}
        _print(pipeline.stage_ppo(config, output_dir=args.output_dir, resume=not args.no_resume, **overrides))
    elif args.stage == "evaluate":
        _print(pipeline.stage_evaluate(config, n_prompts=args.n_prompts))
    elif args.stage == "run":
        results = {"tokenizer": pipeline.stage_tokenizer(config), "data": pipeline.stage_data(config)}
        # The tiny profile ships its SFT policy and reward model; the gpt2 profile must train them.
        if args.train_sft or config.name != "tiny":
            results["sft"] = pipeline.stage_sft(config)
        if args.train_reward or config.name != "tiny":
            results["reward"] = pipeline.stage_reward(config)
        if pipeline.reward_model_available(config):
            ppo_overrides = {} if args.ppo_minutes is None else {"max_minutes": args.ppo_minutes}
            results["ppo"] = pipeline.stage_ppo(config, **ppo_overrides)
            results["evaluate"] = pipeline.stage_evaluate(config)
        else:
            results["ppo"] = ("skipped: no reward model for this profile yet; train one with "
                              "`python -m rlhf_helpers reward`, then run again")
        _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
