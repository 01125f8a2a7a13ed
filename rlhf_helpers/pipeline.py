"""The course's stages as functions: each reads a `CourseConfig`, writes artifacts and a run card.

The command line (``python -m rlhf_helpers``) is a thin layer over these; notebooks call them too.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from .config import CourseConfig
from .data import FILTERED_ROWS, build_dataset, clean_review, load_imdb, load_imdb_splits
from .runcard import write_run_card
from .tokenizer import describe_tokenizer, load_tokenizer, train_bpe_tokenizer


def tokenizer_dir(config: CourseConfig) -> Path:
    return config.artifacts_dir / "tokenizer"


def train_course_tokenizer(config: CourseConfig, splits=None):
    """The tiny profile's tokenizer: byte-level BPE of `config.vocab_size` on the *train* rows only."""
    splits = splits or load_imdb_splits(config)
    return train_bpe_tokenizer((clean_review(t) for t in splits["train"]["text"]), vocab_size=config.vocab_size)


def get_tokenizer(config: CourseConfig):
    """The profile's tokenizer: a hub id / directory if configured, else the saved or shipped IMDb BPE."""
    if config.tokenizer_name_or_path is not None:
        return load_tokenizer(config.tokenizer_name_or_path)
    if (tokenizer_dir(config) / "tokenizer.json").exists():
        return load_tokenizer(tokenizer_dir(config))
    from .policy import shipped_tokenizer_dir

    if (shipped_tokenizer_dir(config.name) / "tokenizer.json").exists():
        return load_tokenizer(shipped_tokenizer_dir(config.name))
    return train_course_tokenizer(config)


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
    metrics = {"imdb_rows": len(imdb), "label_counts": {str(k): int(v) for k, v in zip(*_counts(imdb["label"]))}}
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


def stage_sft(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True, **sft_overrides) -> dict:
    """Train the SFT policy (tiny: from scratch; gpt2: fine-tune) on the train rows of IMDb."""
    from .policy import new_policy_model
    from .sft import SFT_PROFILES, SFTConfig, pack_texts, train_sft
    from transformers import GPT2LMHeadModel

    sft_config = SFTConfig(**{**SFT_PROFILES.get(config.name, {}), "seed": config.seed, **sft_overrides})
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "sft_policy"
    splits = load_imdb_splits(config)
    tokenizer = get_tokenizer(config)
    start = time.perf_counter()
    train_blocks = pack_texts(splits["train"]["text"], tokenizer, sft_config.block_size, max_blocks=sft_config.max_train_blocks)
    eval_blocks = pack_texts(splits["eval"]["text"], tokenizer, sft_config.block_size, max_blocks=sft_config.eval_blocks)
    pack_seconds = time.perf_counter() - start
    if config.model_name_or_path is None:
        model = new_policy_model(config, tokenizer)
    else:
        model = GPT2LMHeadModel.from_pretrained(config.model_name_or_path)
    metrics = train_sft(model, tokenizer, train_blocks, eval_blocks, sft_config, output_dir, resume=resume,
                        run_config={**config.to_dict(), "train_blocks": len(train_blocks), "pack_seconds": round(pack_seconds, 1)})
    return {"dir": str(output_dir), **{k: v for k, v in metrics.items() if k not in ("history", "losses")}}


def stage_reward(config: CourseConfig, **kwargs) -> dict:
    """Train, normalise and evaluate the reward model (see `rlhf_helpers.reward_model.stage_reward`)."""
    from .reward_training import stage_reward as _stage_reward

    return _stage_reward(config, **kwargs)


def _policy_source(config: CourseConfig, which: str) -> str | Path:
    """"sft": the trained SFT policy of this profile (shipped for tiny); "ppo": the PPO output."""
    if which == "sft":
        trained = config.artifacts_dir / "sft_policy"
        return trained if (config.name != "tiny" and trained.exists()) else config.name
    if which == "ppo":
        return config.artifacts_dir / "ppo_policy"
    return which


def reward_model_available(config: CourseConfig) -> bool:
    """Whether a trained reward model exists for this profile (trained under artifacts, or shipped)."""
    from .reward_model import shipped_reward_model_dir

    return any((d / "model.safetensors").exists()
               for d in (config.artifacts_dir / "reward_model", shipped_reward_model_dir(config.name)))


def _reward_source(config: CourseConfig) -> str | Path:
    """The profile's reward model: ``artifacts/<profile>/reward_model`` if trained there, else the shipped one."""
    trained = config.artifacts_dir / "reward_model"
    return trained if (trained / "model.safetensors").exists() else config.name


def stage_ppo(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True, **ppo_overrides) -> dict:
    """PPO from the SFT policy against the reward model, on the train prompts; saves policy + run card."""
    import copy

    from .policy import load_policy
    from .ppo import PPO_PROFILES, PPOConfig, PPOTrainer
    from .reward_model import load_reward_model
    from .value_head import PolicyWithValueHead

    ppo_config = PPOConfig(**{**PPO_PROFILES.get(config.name, {}), "seed": config.seed, **ppo_overrides})
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "ppo_policy"
    lm, tokenizer = load_policy(_policy_source(config, "sft"))
    scorer = load_reward_model(_reward_source(config))
    scorer.check_same_tokenizer(tokenizer)
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    trainer = PPOTrainer(PolicyWithValueHead(lm), copy.deepcopy(lm), tokenizer, scorer.score, prompts, ppo_config,
                         output_dir, run_config=config.to_dict())
    resumed = resume and trainer.maybe_resume()
    history = trainer.train(progress=progress)
    trainer.save(output_dir)
    last = history[-1] if history else {}
    return {"dir": str(output_dir), "resumed": bool(resumed), "steps": trainer.state["step"],
            "seconds": round(trainer.state["seconds"], 1), "first_score": history[0]["score"] if history else None,
            "last_score": last.get("score"), "last_kl": last.get("kl")}


def stage_evaluate(config: CourseConfig, n_prompts: int = 256, policies: dict | None = None, seed: int = 1234) -> dict:
    """SFT vs PPO policy on held-out prompts: reward, judged positive rates, KL, fluency; run card + samples."""
    import json

    from .evaluation import evaluate_policy
    from .judges import default_judges
    from .policy import load_policy
    from .reward_model import load_reward_model

    policies = policies or {"sft": _policy_source(config, "sft"), "ppo": _policy_source(config, "ppo")}
    reference, tokenizer = load_policy(_policy_source(config, "sft"))
    scorer = load_reward_model(_reward_source(config))
    judges = default_judges(config)
    prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:n_prompts]]
    out = config.artifacts_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    results, timings = {}, {}
    for name, source in policies.items():
        if name != "sft" and not Path(source).exists():
            continue  # e.g. no PPO run yet
        start = time.perf_counter()
        model, _ = load_policy(source)
        metrics, samples = evaluate_policy(model, reference, tokenizer, prompts, scorer.score, judges, seed=seed)
        results[name] = metrics
        timings[name] = round(time.perf_counter() - start, 1)
        (out / f"samples_{name}.json").write_text(json.dumps(samples[:64], indent=1))
    write_run_card(out, "evaluate", config.to_dict(), metrics=results, timings=timings, n_prompts=n_prompts)
    return {"dir": str(out), **results}


def export_policy(source_dir: str | Path, target_dir: str | Path) -> Path:
    """Copy a trained policy (weights, config, tokenizer, run card; no optimiser checkpoint) to `target_dir`."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in source_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, target_dir / item.name)
    return target_dir


def _counts(values):
    import numpy as np

    unique, counts = np.unique(np.asarray(values), return_counts=True)
    return unique.tolist(), counts.tolist()


def config_summary(config: CourseConfig) -> dict:
    return dataclasses.asdict(config)
