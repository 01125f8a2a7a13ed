"""Training the reward model: the Bradley–Terry loop, normalisation, and the ``reward`` stage.

The loop is the SFT loop of `rlhf_helpers.sft` with a different loss: AdamW with linear warmup and cosine
decay (`sft.lr_at`), gradient clipping, bf16 autocast where the CPU/GPU has it, `accelerate` for device
placement, resumable checkpoints (``Accelerator.save_state``) and a run card. Each step scores the chosen
and rejected texts of a batch of pairs and minimises ``−log σ(r_c − r_r)`` (`reward_model.bradley_terry_loss`).

After training, the reward is **normalised**: sample responses from the reference (SFT) policy the way
PPO will (2–8-token train prompts, 4–16 new tokens, ``top_k=0, top_p=1``), score ``query + response``,
and store the mean and std in the model (Ziegler et al. 2019; Huang et al. 2023, detail 5).

`stage_reward` runs it all for a profile: pairs → training → normalisation → held-out evaluation → save.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .reward_model import (
    RewardModel, RewardScorer, bradley_terry_loss, evaluate_pairs, pair_rewards, save_reward_model,
)
from .runcard import write_run_card
from .sft import batch_indices, lr_at, make_optimizer, resolve_mixed_precision


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class RewardTrainConfig:
    """Settings of the from-scratch reward-model training. Defaults are the tiny profile's."""

    max_length: int = 256
    """Tokens kept of each text (the tiny model's context)."""

    keep: str = "first"
    """Which tokens of a longer text are kept: "first" or "last" (`preferences.truncate`)."""

    full_batch_size: int = 16
    """Full-review pairs per optimiser step."""

    snippet_batch_size: int = 32
    """Snippet pairs per optimiser step (short: ~10x cheaper per pair than full reviews)."""

    learning_rate: float = 3e-4
    """Peak AdamW learning rate (fine-tuning the SFT backbone: below the SFT's 1e-3). A 200-step probe on a
    validation split carved from the train rows reached 92% (full) / 81% (snippet) pairwise accuracy."""

    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak."""

    warmup_steps: int = 40
    """Linear warmup from 0."""

    max_steps: int = 800
    """Optimiser steps if the time budget does not end training first."""

    max_minutes: float | None = None
    """Wall-clock budget; training stops cleanly (and saves) when it is spent."""

    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""

    betas: tuple[float, float] = (0.9, 0.95)

    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""

    log_every: int = 10
    """Steps between entries of the training-loss curve."""

    eval_every: int = 100
    """Steps between held-out accuracy evaluations (on `eval_pairs` pairs of each view)."""

    eval_pairs: int = 256
    """Held-out pairs per view used for the curve (the final evaluation uses all of them)."""

    checkpoint_every: int = 100
    """Steps between resumable checkpoints."""

    mixed_precision: str = "auto"
    """"bf16", "fp16", "no" or "auto" (bf16 where fast)."""

    seed: int = 0


REWARD_PROFILES = {
    "tiny": {},
    "gpt2": dict(max_length=512, full_batch_size=8, snippet_batch_size=16, learning_rate=1e-5, max_steps=1000),
}


def _views(pairs) -> dict:
    """Tokenized pairs with a ``view`` column as ``{"full": {"chosen_ids": [...], "rejected_ids": [...]}, ...}``."""
    views = {}
    chosen, rejected, kinds = pairs["chosen_ids"], pairs["rejected_ids"], pairs["view"]
    for view in ("full", "snippet"):
        index = [i for i, v in enumerate(kinds) if v == view]
        if index:
            views[view] = {"chosen_ids": [chosen[i] for i in index], "rejected_ids": [rejected[i] for i in index]}
    return views


def train_reward_model(
    model: RewardModel,
    tokenizer,
    train_pairs,
    eval_pairs: dict,
    config: RewardTrainConfig,
    output_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    run_config: dict | None = None,
    stop_after: int | None = None,
) -> dict:
    """Minimise the Bradley–Terry loss on tokenized pairs; save the model (unnormalised) in `output_dir`.

    Every step draws `full_batch_size` full-review pairs and `snippet_batch_size` snippet pairs (two
    forward passes, so short snippets are never padded to full length) and averages the loss over all
    pairs. Batches are a pure function of (seed, step), so a resumed run sees the same data.

    Args:
        train_pairs: `Dataset` with ``chosen_ids``, ``rejected_ids`` and ``view`` ("full"/"snippet").
        eval_pairs: ``{"full": Dataset, "snippet": Dataset}`` of tokenized held-out pairs.
        stop_after: leave after this many steps *in this call* (checkpointed), as if the run were killed
            there; a later call with the same `output_dir` resumes (as in `sft.train_sft`).
    Returns:
        Metrics with ``history`` (held-out accuracy curve) and ``train_log`` (training loss/accuracy curve).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoint"
    mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    set_seed(config.seed)
    pad_id = tokenizer.pad_token_id
    train_views = _views(train_pairs)
    batch_sizes = {"full": config.full_batch_size, "snippet": config.snippet_batch_size}
    batch_sizes = {v: b for v, b in batch_sizes.items() if v in train_views and b > 0}
    if not batch_sizes:
        raise ValueError("No training pairs: train_pairs needs rows with view 'full' and/or 'snippet'.")
    eval_subsets = {v: {k: list(d[k][: config.eval_pairs]) for k in ("chosen_ids", "rejected_ids")}
                    for v, d in eval_pairs.items()}

    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)

    def evaluate(step, extra):
        row = {"step": step, **extra}
        for view, subset in eval_subsets.items():
            result = evaluate_pairs(unwrapped, subset, pad_id, autocast_dtype=autocast_dtype)
            row.update({f"eval_{view}_accuracy": result["accuracy"], f"eval_{view}_loss": result["loss"]})
        return row

    state = {"step": 0, "history": [], "train_log": [], "train_seconds": 0.0}
    if resume and (checkpoint_dir / "trainer_state.json").exists():
        accelerator.load_state(str(checkpoint_dir))
        state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
        accelerator.print(f"Resuming reward-model training from step {state['step']} ({checkpoint_dir})")
    if not state["history"]:
        state["history"].append(evaluate(0, {}))

    def save_checkpoint():
        tmp = checkpoint_dir.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(tmp))
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        tmp.rename(checkpoint_dir)

    started, seconds_before, first_step = time.perf_counter(), state["train_seconds"], state["step"]
    window = []  # (loss, accuracy) of the steps since the last log entry
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="reward model",
               disable=not progress or not accelerator.is_main_process)
    model.train()
    while state["step"] < config.max_steps:
        step = state["step"]
        losses, correct, n_pairs = [], 0, 0
        for view, batch_size in batch_sizes.items():
            data = train_views[view]
            rows = batch_indices(step, len(data["chosen_ids"]), batch_size, config.seed + (0 if view == "full" else 1))
            rows = rows.tolist()
            with accelerator.autocast():
                r_c, r_r = pair_rewards(model, [data["chosen_ids"][i] for i in rows],
                                        [data["rejected_ids"][i] for i in rows], pad_id, accelerator.device)
            # Sum of per-pair losses; divided by the number of pairs below -> the mean over both views.
            losses.append(bradley_terry_loss(r_c, r_r) * len(rows))
            correct += (r_c > r_r).sum().item()
            n_pairs += len(rows)
        loss = torch.stack(losses).sum() / n_pairs
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Reward-model loss is {loss.item()} at step {step}; the last good checkpoint is in {checkpoint_dir}.")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state["step"] = step + 1
        state["train_seconds"] = seconds_before + time.perf_counter() - started
        window.append((loss.item(), correct / n_pairs))
        bar.update(1)
        out_of_time = config.max_minutes is not None and state["train_seconds"] >= 60 * config.max_minutes
        interrupted = stop_after is not None and state["step"] - first_step >= stop_after
        last = state["step"] == config.max_steps or out_of_time or interrupted
        if state["step"] % config.log_every == 0 or last:
            mean_loss = sum(w[0] for w in window) / len(window)
            mean_acc = sum(w[1] for w in window) / len(window)
            state["train_log"].append({"step": state["step"], "loss": mean_loss, "accuracy": mean_acc,
                                       "lr": scheduler.get_last_lr()[0], "seconds": state["train_seconds"]})
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{mean_acc:.2f}")
            window = []
        if state["step"] % config.eval_every == 0 or last:
            row = evaluate(state["step"], {"seconds": state["train_seconds"]})
            state["history"].append(row)
            bar.write("step {}: ".format(state["step"]) + ", ".join(
                f"held-out {v} accuracy {row[f'eval_{v}_accuracy']:.3f}" for v in eval_subsets))
        if state["step"] % config.checkpoint_every == 0 or last:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint()
        if out_of_time or interrupted:
            break
    bar.close()
    if interrupted and state["step"] < config.max_steps:
        return {"steps": state["step"], "interrupted": True}

    metrics = {"steps": state["step"], "train_seconds": round(state["train_seconds"], 1),
               "pairs_seen": state["step"] * sum(batch_sizes.values()), "mixed_precision": mixed_precision,
               "final": state["history"][-1], "history": state["history"], "train_log": state["train_log"]}
    if accelerator.is_main_process:
        save_reward_model(unwrapped, tokenizer, output_dir, extra={"max_length": config.max_length, "keep": config.keep})
        write_run_card(output_dir, "reward", {**(run_config or {}), "reward": asdict(config)}, metrics=metrics,
                       timings={"train": metrics["train_seconds"]})
    return metrics


# ----------------------------------------------------------------------------------------------
# Normalisation on samples of the reference policy
# ----------------------------------------------------------------------------------------------


def sample_reference_texts(policy, tokenizer, config, n_prompts: int = 512, batch_size: int = 32,
                           response_lengths: tuple[int, int] = (4, 16), seed: int = 0) -> list[str]:
    """``query + response`` texts sampled from the reference policy the way PPO samples them.

    Prompts: `n_prompts` train prompts of `build_dataset` (2–8 tokens, seeded choice). Responses:
    ``top_k=0, top_p=1`` (the full distribution), a length limit drawn per batch from
    ``response_lengths`` (both included).
    """
    from .data import LengthSampler, build_dataset
    from .generation import generate

    prompts = build_dataset(tokenizer, config, split="train")
    prompts = prompts.shuffle(seed=seed).select(range(min(n_prompts, len(prompts))))
    lengths = LengthSampler(*response_lengths, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for start in range(0, len(prompts), batch_size):
        queries = list(prompts[start : start + batch_size]["input_ids"])
        out = generate(policy, tokenizer, queries, max_new_tokens=lengths(), top_k=0, top_p=1.0, generator=generator)
        texts += [q + r for q, r in zip(out.prompts, out.texts)]
    return texts


def fit_normalisation(scorer: RewardScorer, texts: list[str]) -> dict:
    """Set the model's mean/std to those of its raw rewards on `texts`; returns the statistics."""
    if len(texts) < 2:
        raise ValueError("Normalisation needs at least 2 texts.")
    raw = scorer.score_raw(texts).double()
    mean, std = raw.mean().item(), raw.std().item()
    scorer.model.set_normalisation(mean, std)
    return {"reward_mean": mean, "reward_std": std, "n_texts": len(texts)}


# ----------------------------------------------------------------------------------------------
# The stage: train, normalise, evaluate, save
# ----------------------------------------------------------------------------------------------


def evaluate_scorer(scorer, heldout: dict) -> dict:
    """Pairwise accuracy of any ``score(list[str])`` on each held-out view ``{"full": pairs, ...}``."""
    from .preferences import pairwise_accuracy

    return {view: pairwise_accuracy(scorer.score(list(p["chosen"])), scorer.score(list(p["rejected"])))
            for view, p in heldout.items()}


def stage_reward(config, output_dir: str | Path | None = None, resume: bool = True, policy: str | Path | None = None,
                 progress: bool = True, **train_overrides) -> dict:
    """Train the reward model from the SFT policy, normalise it, evaluate it on held-out pairs, save it.

    Args:
        config: the `CourseConfig` (profile).
        output_dir: default ``<artifacts>/<profile>/reward_model``.
        resume: continue from ``output_dir/checkpoint`` if present.
        policy: SFT policy directory or profile name for `load_policy` (default: the profile's name).
        **train_overrides: fields of `RewardTrainConfig` (e.g. ``max_steps=200, max_minutes=5``).
    Returns:
        A summary dict: ``dir``, accuracies per view, normalisation, timings.
    """
    from .policy import load_policy
    from .preferences import course_pairs, tokenize_pairs

    timings = {}
    train_config = RewardTrainConfig(**{**REWARD_PROFILES.get(config.name, {}), "seed": config.seed, **train_overrides})
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "reward_model"
    policy_model, tokenizer = load_policy(policy or config.name)

    start = time.perf_counter()
    train_pairs, heldout = course_pairs(config)
    train_tok = tokenize_pairs(train_pairs, tokenizer, train_config.max_length, train_config.keep)
    heldout_tok = {v: tokenize_pairs(p, tokenizer, train_config.max_length, train_config.keep) for v, p in heldout.items()}
    timings["pairs"] = round(time.perf_counter() - start, 1)

    model = RewardModel.from_policy(policy_model, seed=config.seed)
    metrics = train_reward_model(model, tokenizer, train_tok, heldout_tok, train_config, output_dir, resume=resume,
                                 progress=progress, run_config=config.to_dict())
    timings["train"] = metrics["train_seconds"]

    start = time.perf_counter()
    model.eval()
    scorer = RewardScorer(model, tokenizer, max_length=train_config.max_length, keep=train_config.keep)
    texts = sample_reference_texts(policy_model, tokenizer, config, seed=config.seed)
    normalisation = fit_normalisation(scorer, texts)
    timings["normalise"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    accuracy = evaluate_scorer(scorer, heldout)
    timings["evaluate"] = round(time.perf_counter() - start, 1)

    source = (f"query + response samples of the reference policy: {normalisation['n_texts']} train prompts, "
              "4-16 new tokens, top_k=0, top_p=1")
    save_reward_model(model, tokenizer, output_dir, extra={"max_length": train_config.max_length, "keep": train_config.keep,
                                                           "normalised_on": source})
    summary = {"dir": str(output_dir), "heldout_accuracy": accuracy, "heldout_pairs": len(heldout["full"]),
               "train_pairs": len(train_pairs), "normalisation": normalisation, "steps": metrics["steps"],
               "mixed_precision": metrics["mixed_precision"]}
    write_run_card(output_dir, "reward", {**config.to_dict(), "reward": asdict(train_config)},
                   metrics={**summary, "history": metrics["history"], "train_log": metrics["train_log"]},
                   timings=timings)
    return {**summary, "timings_s": timings}
