"""The course's stages as functions: each reads a `CourseConfig`, writes artifacts and a run card.

The command line (``python -m rlhf_helpers``) is a thin layer over these; notebooks call them too.
Stage settings come from the config (``config.sft``, ``config.reward``, ``config.ppo``); where a stage writes
is ``<artifacts>/<profile>/<stage>`` unless an ``output_dir`` is given.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
from transformers import GPT2LMHeadModel

from .config import CourseConfig
from .core.assets import policy_source, reward_source, shipped_reward_model_dir
from .core.run_card import read_run_card, write_run_card
from .data import FILTERED_ROWS, build_dataset, load_imdb, load_imdb_splits
from .data.tokenizer import describe_tokenizer, get_tokenizer, load_tokenizer, tokenizer_dir, train_course_tokenizer
from .evaluation import default_judges, evaluate_policy
from .evaluation.report import format_run_summary, report_figure
from .policy.model import load_policy, new_policy_model
from .policy.sft import pack_texts, train_sft
from .ppo.trainer import PPOTrainer
from .ppo.value_head import PolicyWithValueHead
from .reward.model import load_reward_model
from .reward.training import stage_reward

__all__ = ["stage_tokenizer", "stage_data", "stage_sft", "stage_reward", "stage_ppo", "stage_evaluate",
           "export_policy", "reward_model_available"]


def stage_tokenizer(config: CourseConfig) -> dict:
    """Train (tiny) or fetch (gpt2) the tokenizer and save it under ``<artifacts>/tokenizer``."""
    start = time.perf_counter()
    if config.tokenizer_name_or_path is None:
        tokenizer = train_course_tokenizer(config)
    else:
        tokenizer = load_tokenizer(config.tokenizer_name_or_path)
    seconds = time.perf_counter() - start
    out = tokenizer_dir(config)
    tokenizer.save_pretrained(str(out))
    sample = "The movie was a unique experience because"
    metrics = {**describe_tokenizer(tokenizer), "sample": sample, "sample_tokens": tokenizer.tokenize(sample)}
    write_run_card(out, "tokenizer", config.to_dict(), metrics=metrics, timings={"train": round(seconds, 2)})
    return {"dir": str(out), **metrics}


def stage_data(config: CourseConfig) -> dict:
    """Build the prompt datasets (all / train / eval) and save them under ``<artifacts>/data``."""
    timings = {}
    start = time.perf_counter()
    imdb = load_imdb(config.dataset_source)
    timings["load"] = time.perf_counter() - start
    tokenizer = get_tokenizer(config)
    out = config.artifacts_dir / "data"
    labels, counts = np.unique(np.asarray(imdb["label"]), return_counts=True)
    metrics = {"imdb_rows": len(imdb), "label_counts": {str(k): int(v) for k, v in zip(labels, counts)}}
    for split in ("all", "train", "eval"):
        start = time.perf_counter()
        prompts = build_dataset(tokenizer, config, split=split, dataset=imdb)
        timings[f"build_{split}"] = time.perf_counter() - start
        prompts.save_to_disk(str(out / f"prompts_{split}"))
        metrics[f"prompts_{split}"] = len(prompts)
    if config.dataset_source == "offline" and metrics["prompts_all"] != FILTERED_ROWS:
        raise RuntimeError(f"Expected {FILTERED_ROWS} reviews longer than 200 characters, got {metrics['prompts_all']}.")
    write_run_card(out, "data", config.to_dict(), metrics=metrics, timings={k: round(v, 2) for k, v in timings.items()})
    return {"dir": str(out), **metrics}


def stage_sft(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True) -> dict:
    """Train the SFT policy (tiny: from scratch; gpt2: fine-tune) on the train rows of IMDb (``config.sft``)."""
    settings = config.sft
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "sft_policy"
    splits = load_imdb_splits(config)
    tokenizer = get_tokenizer(config)
    start = time.perf_counter()
    train_blocks = pack_texts(splits["train"]["text"], tokenizer, settings.block_size, max_blocks=settings.max_train_blocks)
    eval_blocks = pack_texts(splits["eval"]["text"], tokenizer, settings.block_size, max_blocks=settings.eval_blocks)
    pack_seconds = time.perf_counter() - start
    if config.model_name_or_path is None:
        model = new_policy_model(config, tokenizer)
    else:
        model = GPT2LMHeadModel.from_pretrained(config.model_name_or_path)
    metrics = train_sft(model, tokenizer, train_blocks, eval_blocks, settings, output_dir, resume=resume,
                        progress=progress, run_config={**config.to_dict(), "train_blocks": len(train_blocks),
                                                       "pack_seconds": round(pack_seconds, 1)})
    return {"dir": str(output_dir), **{k: v for k, v in metrics.items() if k not in ("history", "losses")}}


def reward_model_available(config: CourseConfig) -> bool:
    """Whether a trained reward model exists for this profile (trained under artifacts, or shipped)."""
    return any((d / "model.safetensors").exists()
               for d in (config.artifacts_dir / "reward_model", shipped_reward_model_dir(config.name)))


def stage_ppo(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True) -> dict:
    """PPO (``config.ppo``) from the SFT policy against the reward model, on the train prompts; saves policy + run card."""
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "ppo_policy"
    lm, tokenizer = load_policy(policy_source(config))
    scorer = load_reward_model(reward_source(config))
    scorer.check_same_tokenizer(tokenizer)
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    trainer = PPOTrainer(PolicyWithValueHead(lm), copy.deepcopy(lm), tokenizer, scorer.score, prompts, config.ppo,
                         output_dir, run_config=config.to_dict())
    resumed = resume and trainer.maybe_resume()
    history = trainer.train(progress=progress)
    trainer.save(output_dir)
    last = history[-1] if history else {}
    return {"dir": str(output_dir), "resumed": bool(resumed), "steps": trainer.state["step"],
            "seconds": round(trainer.state["seconds"], 1), "first_score": history[0]["score"] if history else None,
            "last_score": last.get("score"), "last_kl": last.get("kl")}


def stage_evaluate(config: CourseConfig, n_prompts: int = 256, policies: dict | None = None, seed: int = 1234) -> dict:
    """SFT vs PPO policy on held-out prompts: reward, judged positive rates, KL, fluency; run card + samples.

    Responses are sampled as PPO samples them (``config.ppo``'s lengths and temperature). Writes
    ``<artifacts>/evaluation/run_card_evaluate.json`` and ``samples_<policy>.json`` (the first 64 samples).
    """
    policies = policies or {"sft": policy_source(config), "ppo": config.artifacts_dir / "ppo_policy"}
    reference, tokenizer = load_policy(policy_source(config))
    scorer = load_reward_model(reward_source(config))
    judges = default_judges(config)
    prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:n_prompts]]
    out = config.artifacts_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    results, timings, skipped = {}, {}, {}
    for name, source in policies.items():
        if name != "sft" and not (Path(source) / "config.json").exists():
            skipped[name] = f"no trained policy in {source} (run `python -m rlhf_helpers {name}` first)"
            continue
        start = time.perf_counter()
        model, _ = load_policy(source)
        metrics, samples = evaluate_policy(model, reference, tokenizer, prompts, scorer.score, judges, seed=seed,
                                           temperature=config.ppo.temperature, min_tokens=config.ppo.response_min_tokens,
                                           max_tokens=config.ppo.response_max_tokens)
        results[name] = metrics
        timings[name] = round(time.perf_counter() - start, 1)
        (out / f"samples_{name}.json").write_text(json.dumps(samples[:64], indent=1))
    write_run_card(out, "evaluate", config.to_dict(), metrics=results, timings=timings, n_prompts=n_prompts,
                   skipped=skipped)
    return {"dir": str(out), **results, **({"skipped": skipped} if skipped else {})}


def export_policy(source_dir: str | Path, target_dir: str | Path) -> Path:
    """Copy a trained policy (weights, config, tokenizer, run card; no optimiser checkpoint) to `target_dir`."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in source_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, target_dir / item.name)
    return target_dir


def stage_run(config: CourseConfig, train_sft: bool = False, train_reward: bool = False, n_prompts: int = 256) -> str:
    """The main job: tokenizer, data, (SFT), (reward model), PPO, evaluation; returns the summary to print.

    The tiny profile ships its SFT policy and reward model (retrain them with `train_sft` / `train_reward`);
    the gpt2 profile always trains them. Writes ``run_card_run.json`` and ``report.png`` in ``<artifacts>/<profile>``.
    """
    results = {"tokenizer": stage_tokenizer(config), "data": stage_data(config)}
    if train_sft or config.name != "tiny":
        results["sft"] = stage_sft(config)
    if train_reward or config.name != "tiny":
        results["reward"] = stage_reward(config)
    if not reward_model_available(config):
        return ("PPO skipped: no reward model for this profile yet; train one with "
                f"`python -m rlhf_helpers --profile {config.name} reward`, then run again.")
    results["ppo"] = stage_ppo(config)
    results["evaluate"] = stage_evaluate(config, n_prompts=n_prompts)
    run_card = write_run_card(config.artifacts_dir, "run", config.to_dict(), metrics=results)

    evaluation = {k: v for k, v in results["evaluate"].items() if k in ("sft", "ppo")}
    history = read_run_card(results["ppo"]["dir"], "ppo")["metrics"]["history"]
    samples = {name: json.loads((Path(results["evaluate"]["dir"]) / f"samples_{name}.json").read_text())
               for name in evaluation}
    figure = report_figure(history, evaluation, config.artifacts_dir / "report.png",
                           kl_target=config.ppo.kl_target if config.ppo.adaptive_kl else None)
    return format_run_summary(evaluation, samples.get("sft", []), samples.get("ppo", []), results["ppo"], figure,
                              run_card, profile=config.name)
