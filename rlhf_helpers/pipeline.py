"""The course's stages as functions: each reads a `CourseConfig`, writes artifacts and a run card.

The command line (``python -m rlhf_helpers``) is a thin layer over these; notebooks call them too.
Stage settings come from the config (``config.sft``, ``config.reward``, ``config.ppo``); where a stage writes
is ``<artifacts>/<profile>/<stage>`` unless an ``output_dir`` is given.

Before any work, each stage checks its config (`CourseConfig.validate`), that the places it writes can be written
(`check_writable_dir`, else `OutputLocationError`) and, for the gpt2 profile, that the hub can be used
(`require_hub`, else `HubUnavailableError` naming the offline profile).
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from huggingface_hub import constants, try_to_load_from_cache
from transformers import GPT2LMHeadModel

from .config import CourseConfig, check_n_prompts
from .core.assets import policy_source, reward_source, shipped_reward_model_dir
from .core.checkpoint import complete_checkpoint
from .core.files import OutputLocationError, check_writable_dir
from .core.distributed import is_main_process, process_state, wait_for_everyone
from .core.run_card import read_run_card, write_run_card
from .data import FILTERED_ROWS, build_dataset, load_imdb, load_imdb_splits
from .data.imdb import HUB_DATASET_ID, hub_is_offline
from .data.tokenizer import describe_tokenizer, get_tokenizer, load_tokenizer, tokenizer_dir, train_course_tokenizer
from .evaluation import default_judges, evaluate_policy
from .evaluation.report import format_run_summary, report_figure
from .policy.model import load_policy, new_policy_model
from .policy.sft import pack_texts, train_sft
from .ppo.trainer import PPOTrainer, reward_autocast_dtype
from .ppo.value_head import PolicyWithValueHead
from .reward.model import load_reward_model
from .reward.training import stage_reward

__all__ = ["stage_tokenizer", "stage_data", "stage_sft", "stage_reward", "stage_ppo", "stage_evaluate",
           "export_policy", "reward_model_available", "check_writable_dir", "OutputLocationError", "require_hub",
           "HubUnavailableError", "check_n_prompts"]


# ----------------------------------------------------------------------------------------------
# Checks made before a stage does any work
# ----------------------------------------------------------------------------------------------


class HubUnavailableError(RuntimeError):
    """A stage needs the Hugging Face hub, which is switched off or cannot be reached; the message names the
    offline profile."""


def _output_dir(config: CourseConfig, output_dir: str | Path | None, default: str) -> Path:
    """The stage's output directory (given, else ``<artifacts>/<profile>/<default>``), checked writable."""
    if output_dir:
        return check_writable_dir(output_dir, "Choose another --output-dir (a directory you can write).")
    return check_writable_dir(config.artifacts_dir / default)


# What each stage fetches from the hub: the IMDb rows, the tokenizer, the pretrained model.
_HUB_NEEDS = {"tokenizer": ("dataset", "tokenizer"), "data": ("dataset", "tokenizer"),
              "sft": ("dataset", "tokenizer", "model"), "reward": ("dataset",), "reward_trl": ("dataset",),
              "ppo": ("dataset",), "evaluate": ("dataset",), "run": ("dataset", "tokenizer", "model")}


def hub_references(config: CourseConfig, stage: str) -> dict[str, str]:
    """What `stage` would fetch from the hub with this config: ``{"dataset": "stanfordnlp/imdb", "model": "gpt2"}``
    (local directories are not hub references)."""
    refs = {}
    if config.dataset_source == "hub" and not (stage == "tokenizer" and config.tokenizer_name_or_path is not None):
        refs["dataset"] = HUB_DATASET_ID
    for kind, name in (("tokenizer", config.tokenizer_name_or_path), ("model", config.model_name_or_path)):
        if name is not None and not Path(name).expanduser().exists():
            refs[kind] = str(name)
    needs = _HUB_NEEDS.get(stage, ("dataset", "tokenizer", "model"))
    return {kind: ref for kind, ref in refs.items() if kind in needs}


def _in_hub_cache(kind: str, repo_id: str) -> bool:
    """Whether a model / tokenizer is in the local hub cache (usable offline). Datasets are not looked up:
    `load_imdb` asks the hub for them."""
    if kind == "dataset":
        return False
    files = ("config.json",) if kind == "model" else ("tokenizer.json", "vocab.json")
    try:
        return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)
    except Exception:  # a name that is no valid repo id: not cached
        return False


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub's endpoint answers within `timeout` seconds (any HTTP answer counts; proxies are honoured)."""
    answer = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
            answer.append(True)
        except urllib.error.HTTPError:  # an answer, even 4xx/5xx: the hub is there
            answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a thread: a name lookup can hang past `timeout`
    thread.start()
    thread.join(timeout + 1)
    return bool(answer and answer[0])


def require_hub(config: CourseConfig, stage: str) -> None:
    """Fail fast, before any work, when `stage` needs the hub (the gpt2 profile) and the hub is switched off
    (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or cannot be reached, naming the offline profile.

    Models and tokenizers already in the local hub cache need no network.
    """
    refs = hub_references(config, stage)
    missing = {kind: ref for kind, ref in refs.items() if not _in_hub_cache(kind, ref)}
    if not missing:
        return
    if hub_is_offline():
        reason = "the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    elif not hub_reachable():
        reason = f"the hub ({constants.ENDPOINT}) cannot be reached"
    else:
        return
    names = ", ".join(dict.fromkeys(missing.values()))
    raise HubUnavailableError(
        f"The {config.name!r} profile's {stage} stage needs {names} from the Hugging Face hub, but {reason}. "
        "Use the offline profile: --profile tiny (get_config('tiny')), which needs no network."
    )


def stage_tokenizer(config: CourseConfig) -> dict:
    """Train (tiny) or fetch (gpt2) the tokenizer and save it under ``<artifacts>/tokenizer``."""
    config.validate()
    out = check_writable_dir(tokenizer_dir(config))
    require_hub(config, "tokenizer")
    start = time.perf_counter()
    if config.tokenizer_name_or_path is None:
        tokenizer = train_course_tokenizer(config)
    else:
        tokenizer = load_tokenizer(config.tokenizer_name_or_path)
    seconds = time.perf_counter() - start
    if is_main_process():  # under `accelerate launch`: one process writes, the others wait for the files
        tokenizer.save_pretrained(str(out))
    wait_for_everyone()
    sample = "The movie was a unique experience because"
    metrics = {**describe_tokenizer(tokenizer), "sample": sample, "sample_tokens": tokenizer.tokenize(sample)}
    write_run_card(out, "tokenizer", config.to_dict(), metrics=metrics, timings={"train": round(seconds, 2)})
    return {"dir": str(out), **metrics}


def stage_data(config: CourseConfig) -> dict:
    """Build the prompt datasets (all / train / eval) and save them under ``<artifacts>/data``."""
    config.validate()
    out = check_writable_dir(config.artifacts_dir / "data")
    require_hub(config, "data")
    timings = {}
    start = time.perf_counter()
    imdb = load_imdb(config.dataset_source)
    timings["load"] = time.perf_counter() - start
    tokenizer = get_tokenizer(config)
    labels, counts = np.unique(np.asarray(imdb["label"]), return_counts=True)
    metrics = {"imdb_rows": len(imdb), "label_counts": {str(k): int(v) for k, v in zip(labels, counts)}}
    for split in ("all", "train", "eval"):
        start = time.perf_counter()
        prompts = build_dataset(tokenizer, config, split=split, dataset=imdb)
        timings[f"build_{split}"] = time.perf_counter() - start
        if is_main_process():
            prompts.save_to_disk(str(out / f"prompts_{split}"))
        metrics[f"prompts_{split}"] = len(prompts)
    if config.dataset_source == "offline" and metrics["prompts_all"] != FILTERED_ROWS:
        raise RuntimeError(f"Expected {FILTERED_ROWS} reviews longer than 200 characters, got {metrics['prompts_all']}.")
    write_run_card(out, "data", config.to_dict(), metrics=metrics, timings={k: round(v, 2) for k, v in timings.items()})
    wait_for_everyone()
    return {"dir": str(out), **metrics}


def stage_sft(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True, allow_changed_settings: bool = False) -> dict:
    """Train the SFT policy (tiny: from scratch; gpt2: fine-tune) on the train rows of IMDb (``config.sft``).

    ``allow_changed_settings``: resume even if the checkpoint was written with other settings.
    """
    config.validate()
    settings = config.sft
    output_dir = _output_dir(config, output_dir, "sft_policy")
    require_hub(config, "sft")
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
                        progress=progress, allow_changed_settings=allow_changed_settings,
                        run_config={**config.to_dict(), "train_blocks": len(train_blocks),
                                    "pack_seconds": round(pack_seconds, 1)})
    wait_for_everyone()  # the main process has written the model the next stage reads
    return {"dir": str(output_dir), **{k: v for k, v in metrics.items() if k not in ("history", "losses")}}


def reward_model_available(config: CourseConfig) -> bool:
    """Whether a trained reward model exists for this profile (trained under artifacts, or shipped)."""
    return any((d / "model.safetensors").exists()
               for d in (config.artifacts_dir / "reward_model", shipped_reward_model_dir(config.name)))


def stage_ppo(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True, allow_changed_settings: bool = False) -> dict:
    """PPO (``config.ppo``) from the SFT policy against the reward model, on the train prompts; saves policy + run card.

    ``allow_changed_settings``: resume even if the checkpoint was written with other settings.
    """
    config.validate()
    output_dir = _output_dir(config, output_dir, "ppo_policy")
    require_hub(config, "ppo")
    lm, tokenizer = load_policy(policy_source(config))
    scorer = load_reward_model(reward_source(config), device=process_state().device,  # beside the policy
                               autocast_dtype=reward_autocast_dtype(config.ppo))
    scorer.check_same_tokenizer(tokenizer)
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    trainer = PPOTrainer(PolicyWithValueHead(lm), copy.deepcopy(lm), tokenizer, scorer.score, prompts, config.ppo,
                         output_dir, run_config=config.to_dict())
    resumed = resume and trainer.maybe_resume(allow_changed_settings=allow_changed_settings)
    history = trainer.train(progress=progress)
    summary = {"dir": str(output_dir), "resumed": bool(resumed), "steps": trainer.state["step"],
               "seconds": round(trainer.state["seconds"], 1)}
    if trainer.interrupted:  # only the checkpoint: a final policy here would be evaluated as if PPO had finished
        return {**summary, "interrupted": True, "signal": trainer.signal, "message": trainer.message}
    trainer.save(output_dir)
    wait_for_everyone()  # the main process has written the policy
    last = history[-1] if history else {}
    return {**summary, "first_score": history[0]["score"] if history else None, "last_score": last.get("score"),
            "last_kl": last.get("kl"), **({"message": trainer.message} if trainer.already_finished else {})}


def stage_evaluate(config: CourseConfig, n_prompts: int = 256, policies: dict | None = None, seed: int = 1234) -> dict:
    """SFT vs PPO policy on held-out prompts: reward, judged positive rates, KL, fluency; run card + samples.

    Responses are sampled as PPO samples them (``config.ppo``'s lengths and temperature). Writes
    ``<artifacts>/evaluation/run_card_evaluate.json`` and ``samples_<policy>.json`` (the first 64 samples).
    """
    config.validate()
    check_n_prompts(n_prompts)
    out = check_writable_dir(config.artifacts_dir / "evaluation")
    require_hub(config, "evaluate")
    if not is_main_process():  # under `accelerate launch`: evaluated once, by the main process
        return {"dir": str(out), "note": "evaluated by the main process"}
    policies = policies or {"sft": policy_source(config), "ppo": config.artifacts_dir / "ppo_policy"}
    reference, tokenizer = load_policy(policy_source(config))
    scorer = load_reward_model(reward_source(config))
    judges = default_judges(config)
    heldout = build_dataset(tokenizer, config, split="eval")["input_ids"]
    if n_prompts > len(heldout):
        print(f"note: n_prompts={n_prompts} exceeds the {len(heldout):,} held-out prompts: evaluating all "
              f"{len(heldout):,}.", file=sys.stderr)
    prompts = [ids.tolist() for ids in heldout[:n_prompts]]
    n_prompts = len(prompts)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {name: why for name, source in policies.items() if name != "sft" and (why := _not_trained(name, source))}
    for name, why in skipped.items():  # said before the long work, not only in the run card
        print(f"note: {name} skipped: {why}", file=sys.stderr)
    results, timings = {}, {}
    for name, source in policies.items():
        if name in skipped:
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


def _not_trained(name: str, source: str | Path) -> str | None:
    """Why the policy `name` in `source` cannot be evaluated yet (None: it can)."""
    source = Path(source)
    if (source / "config.json").exists():
        return None
    if complete_checkpoint(source / "checkpoint") is not None:
        return (f"{source} holds only a training checkpoint: its run stopped before it saved the final policy. Run "
                f"`python -m rlhf_helpers {name}` again to resume and finish it, then evaluate.")
    return f"no trained policy in {source}: run `python -m rlhf_helpers {name}` first, then evaluate."


def export_policy(source_dir: str | Path, target_dir: str | Path) -> Path:
    """Copy a trained policy (weights, config, tokenizer, run card; no optimiser checkpoint) to `target_dir`."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    if not is_main_process():
        return target_dir
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
    config.validate()
    check_n_prompts(n_prompts)
    trains_sft, trains_reward = train_sft or config.name != "tiny", train_reward or config.name != "tiny"
    # every place the run writes, and the hub, checked before its first stage starts
    writes = ["tokenizer", "data"] + ["sft_policy"] * trains_sft + ["reward_model"] * trains_reward
    for name in ["", *writes, "ppo_policy", "evaluation"]:  # "": the run card and the report figure
        check_writable_dir(config.artifacts_dir / name)
    require_hub(config, "run")
    results = {"tokenizer": stage_tokenizer(config), "data": stage_data(config)}
    training = [("sft", stage_sft)] * trains_sft + [("reward", stage_reward)] * trains_reward + [("ppo", stage_ppo)]
    for name, stage in training:
        if name == "ppo" and not reward_model_available(config):
            return ("PPO skipped: no reward model for this profile yet; train one with "
                    f"`python -m rlhf_helpers --profile {config.name} reward`, then run again.")
        results[name] = stage(config)
        if results[name].get("interrupted"):  # Ctrl-C / SIGTERM: the stage saved a checkpoint, stop here
            return "Run stopped: " + (results[name].get("message") or f"{name} was interrupted; run the same "
                                      "command again to resume.")
    if not is_main_process():
        return ""
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
