"""Supervised fine-tuning (SFT): next-token prediction on IMDb reviews.

The objective is the language-modelling loss: for a token sequence x_1..x_T,
``L = -(1/T) * sum_t log p_theta(x_t | x_<t)`` (Radford et al. 2019). Perplexity is ``exp(L)`` on
held-out text: the number of tokens the model is "choosing between" on average.

Pipeline: clean reviews → tokenize → join with ``<|endoftext|>`` → cut into blocks of
``block_size`` tokens ("packing": no padding is wasted) → AdamW with linear warmup and cosine decay,
gradient clipping, bf16 autocast where the hardware has it. Device placement, mixed precision and
multi-GPU go through `accelerate`, so ``accelerate launch -m rlhf_helpers sft`` scales the same loop out.

Resumable: every ``checkpoint_every`` steps the full training state (model, optimiser, scheduler, RNG,
step) is saved with ``Accelerator.save_state``; a new run with the same output directory continues
from it. Batches are a pure function of (seed, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import clean_review
from .runcard import write_run_card


@dataclass
class SFTConfig:
    """Training settings. Defaults are the tiny profile's; `SFT_PROFILES` holds the others."""

    block_size: int = 256
    """Tokens per training sequence (= the tiny model's context; GPT-2 used 1024)."""

    batch_size: int = 16
    """Sequences per optimiser step (16 x 256 = 4,096 tokens a step)."""

    learning_rate: float = 1e-3
    """Peak AdamW learning rate: high for a small model from scratch (nanoGPT's tiny presets use 1e-3)."""

    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak (Chinchilla / nanoGPT: 10%)."""

    warmup_steps: int = 100
    """Linear warmup from 0, so Adam's moment estimates settle before large steps."""

    max_steps: int = 3000
    """Optimiser steps if the time budget does not end training first."""

    max_minutes: float | None = None
    """Wall-clock budget; training stops cleanly (and saves) when it is spent. None: no budget."""

    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on biases / LayerNorm), as in GPT-2 / nanoGPT."""

    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas; 0.95 (not 0.999) is the usual choice for transformer LMs."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""

    eval_every: int = 250
    """Steps between held-out perplexity evaluations."""

    eval_blocks: int = 64
    """Held-out blocks used for perplexity (64 x 256 = 16k tokens)."""

    checkpoint_every: int = 250
    """Steps between resumable checkpoints."""

    mixed_precision: str = "auto"
    """"bf16", "fp16", "no" or "auto" (bf16 when the CPU/GPU supports it: ~3x faster on AVX512-BF16)."""

    max_train_blocks: int | None = None
    """Use only the first N packed training blocks (None: all of IMDb train; small values for demos/tests)."""

    seed: int = 0
    """Seed of weight init and of the batch order."""


SFT_PROFILES = {
    "tiny": {},
    # Fine-tuning a pretrained 124M GPT-2: a small learning rate, a short run.
    "gpt2": dict(block_size=512, batch_size=16, learning_rate=5e-5, warmup_steps=50, max_steps=2000, eval_blocks=32),
}


# ----------------------------------------------------------------------------------------------
# Data: packing
# ----------------------------------------------------------------------------------------------


def pack_texts(texts, tokenizer, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """Tokenize `texts`, join them with EOS, cut into ``[n_blocks, block_size]`` (the tail is dropped).

    Each review ends with ``<|endoftext|>`` so the model learns where a review stops.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    stream: list[int] = []
    needed = None if max_blocks is None else max_blocks * block_size
    batch = []
    for text in texts:
        batch.append(clean_review(text))
        if len(batch) == 512:
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                stream.extend(ids + [tokenizer.eos_token_id])
            batch = []
            if needed is not None and len(stream) >= needed:
                break
    if batch and (needed is None or len(stream) < needed):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids + [tokenizer.eos_token_id])
    n_blocks = len(stream) // block_size
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    if n_blocks == 0:
        raise ValueError(f"Not enough text for one block of {block_size} tokens ({len(stream)} tokens).")
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the blocks in the batch of `step`: a fresh seeded permutation every epoch.

    A pure function of its arguments, so a resumed run draws exactly the batches it would have.
    """
    steps_per_epoch = n_blocks // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {n_blocks} training blocks.")
    epoch, position = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    permutation = torch.randperm(n_blocks, generator=generator)
    return permutation[position * batch_size : (position + 1) * batch_size]


# ----------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------


def lr_at(step: int, config: SFTConfig) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: SFTConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights only (biases and LayerNorm gains are not decayed)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas)


def resolve_mixed_precision(setting: str) -> str:
    """Turn "auto" into "bf16" where bf16 matrix multiplies are fast, else "no"."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpu_flags = ""
    return "bf16" if ("avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags) else "no"


@torch.no_grad()
def evaluate_perplexity(model, blocks: torch.Tensor, batch_size: int = 16, autocast_dtype=None) -> float:
    """Perplexity ``exp(mean token loss)`` of `model` on ``[n, T]`` token blocks."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            loss = model(input_ids=chunk, labels=chunk).loss.float()
        n_predicted = chunk.numel() - chunk.shape[0]  # the first token of each block has no target
        total_loss += loss.item() * n_predicted
        total_tokens += n_predicted
    model.train(was_training)
    return math.exp(total_loss / total_tokens)


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def train_sft(
    model,
    tokenizer,
    train_blocks: torch.Tensor,
    eval_blocks: torch.Tensor,
    config: SFTConfig,
    output_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    run_config: dict | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train `model` on packed `train_blocks`; save the final model + tokenizer in `output_dir`.

    Checkpoints go to ``output_dir/checkpoint`` (kept, so a finished run can be extended). Returns a dict of
    metrics and the history of (step, train loss, eval perplexity, learning rate, tokens seen).
    `stop_after`: leave after this many steps *in this call* (checkpointed), as if the run were killed
    there: a later call with the same `output_dir` resumes (used to test and demonstrate resuming).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoint"
    mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision)
    set_seed(config.seed)

    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = {"step": 0, "history": [], "train_seconds": 0.0, "losses": []}
    if resume and (checkpoint_dir / "trainer_state.json").exists():
        accelerator.load_state(str(checkpoint_dir))
        state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
        state.setdefault("losses", [])
        accelerator.print(f"Resuming SFT from step {state['step']} ({checkpoint_dir})")

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    unwrapped = accelerator.unwrap_model(model)
    if not state["history"]:
        state["history"].append(
            {"step": 0, "eval_ppl": evaluate_perplexity(unwrapped, eval_blocks, autocast_dtype=autocast_dtype)}
        )

    def save_checkpoint():
        # Write to a temporary directory, then swap: a run killed mid-save keeps the previous one.
        tmp = checkpoint_dir.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(tmp))
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        tmp.rename(checkpoint_dir)

    rows_per_process = config.batch_size // accelerator.num_processes
    started = time.perf_counter()
    seconds_before = state["train_seconds"]
    running_loss = None
    first_step = state["step"]
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="SFT", disable=not progress or not accelerator.is_main_process)
    model.train()
    while state["step"] < config.max_steps:
        step = state["step"]
        rows = batch_indices(step, len(train_blocks), config.batch_size, config.seed)
        rows = rows[accelerator.process_index * rows_per_process : (accelerator.process_index + 1) * rows_per_process]
        batch = train_blocks[rows].to(accelerator.device)
        with accelerator.autocast():
            loss = model(input_ids=batch, labels=batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SFT loss is {loss.item()} at step {step}; the last good checkpoint is in {checkpoint_dir}.")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state["step"] = step + 1
        state["train_seconds"] = seconds_before + time.perf_counter() - started
        running_loss = loss.item() if running_loss is None else 0.95 * running_loss + 0.05 * loss.item()
        state["losses"].append(round(loss.item(), 4))
        bar.update(1)
        bar.set_postfix(loss=f"{running_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        out_of_time = config.max_minutes is not None and state["train_seconds"] >= 60 * config.max_minutes
        interrupted = stop_after is not None and state["step"] - first_step >= stop_after
        last = state["step"] == config.max_steps or out_of_time or interrupted
        if state["step"] % config.eval_every == 0 or last:
            ppl = evaluate_perplexity(unwrapped, eval_blocks, autocast_dtype=autocast_dtype)
            state["history"].append(
                {"step": state["step"], "train_loss": running_loss, "eval_ppl": ppl,
                 "lr": scheduler.get_last_lr()[0], "tokens": state["step"] * config.batch_size * config.block_size,
                 "seconds": state["train_seconds"]}
            )
            bar.write(f"step {state['step']}: train loss {running_loss:.3f}, held-out perplexity {ppl:.1f}")
        if state["step"] % config.checkpoint_every == 0 or last:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint()
        if out_of_time or interrupted:
            break
    bar.close()
    if interrupted and state["step"] < config.max_steps:
        return {"steps": state["step"], "interrupted": True}

    final_ppl = evaluate_perplexity(unwrapped, eval_blocks, autocast_dtype=autocast_dtype)
    tokens = state["step"] * config.batch_size * config.block_size
    metrics = {
        "steps": state["step"],
        "tokens_seen": tokens,
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(tokens / max(state["train_seconds"], 1e-9), 1),
        "initial_eval_perplexity": state["history"][0]["eval_ppl"],
        "final_eval_perplexity": final_ppl,
        "final_train_loss": running_loss,
        "mixed_precision": mixed_precision,
        "history": state["history"],
        "losses": state["losses"],
    }
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(output_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir))
        write_run_card(output_dir, "sft", {**(run_config or {}), "sft": asdict(config)}, metrics=metrics,
                       timings={"train": metrics["train_seconds"]})
    return metrics
