"""Supervised fine-tuning (SFT): next-token prediction on IMDb reviews.

The objective is the language-modelling loss: for a token sequence x_1..x_T,
``L = -(1/T) * sum_t log p_theta(x_t | x_<t)`` (Radford et al. 2019). Perplexity is ``exp(L)`` on
held-out text: the number of tokens the model is "choosing between" on average.

Pipeline: clean reviews → tokenize → join with ``<|endoftext|>`` → cut into blocks of ``block_size`` tokens
("packing": no padding is wasted) → the supervised loop (`rlhf_helpers.core.training.train_loop` on the run engine `core.run`:
AdamW, warmup + cosine decay, gradient clipping, bf16 autocast where the hardware has it, accelerate,
resumable checkpoints). Settings: `rlhf_helpers.config.SFTConfig`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import SFTConfig, data_settings_of
from ..core.precision import autocast
from ..core.files import permissions_from_umask
from ..core.run_card import write_run_card
from ..core.lock import run_lock
from ..core.run import batch_indices, finished_run_card
from ..core.training import train_loop
from ..data.imdb import clean_review


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



@torch.no_grad()
def evaluate_perplexity(model, blocks: torch.Tensor, batch_size: int = 16, autocast_dtype=None) -> float:
    """Perplexity ``exp(mean token loss)`` of `model` on ``[n, T]`` token blocks."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start : start + batch_size].to(device)
        with autocast(device, autocast_dtype):
            loss = model(input_ids=chunk, labels=chunk).loss.float()
        n_predicted = chunk.numel() - chunk.shape[0]  # the first token of each block has no target
        total_loss += loss.item() * n_predicted
        total_tokens += n_predicted
    model.train(was_training)
    return math.exp(total_loss / total_tokens)



def train_sft(model, tokenizer, train_blocks: torch.Tensor, eval_blocks: torch.Tensor, config: SFTConfig,
              output_dir: str | Path, resume: bool = True, progress: bool = True, run_config: dict | None = None,
              stop_after: int | None = None, allow_changed_settings: bool = False) -> dict:
    """Train `model` on packed ``[n, block_size]`` `train_blocks`; save the final model + tokenizer in `output_dir`.

    Checkpoints go to ``output_dir/checkpoint`` (kept, so a finished run can be extended). Returns a dict of
    metrics with ``history`` (held-out perplexity by step) and ``losses`` (the training loss of every step).
    `stop_after`: leave after this many steps *in this call* (checkpointed), as if the run were killed
    there: a later call with the same `output_dir` resumes (used to test and demonstrate resuming).
    SIGINT / SIGTERM stop after the current step the same way (``{"interrupted": True, "signal": "SIGINT", ...}``).
    A finished run run again trains nothing and returns its metrics (``already_finished``, ``message``).
    `allow_changed_settings`: resume even if `config` differs from the checkpoint's (see `train_loop`).
    """

    def loss_fn(model, step, shard, device):
        rows = batch_indices(step, len(train_blocks), config.batch_size, config.seed)  # the global batch
        batch = train_blocks[shard.take(rows)].to(device)  # this process's micro-batch of it
        return model(input_ids=batch, labels=batch).loss, {}

    def evaluate(model):
        return {"eval_ppl": evaluate_perplexity(model, eval_blocks)}

    with run_lock(output_dir):  # held until the final files are written, not only while training
        result = train_loop(model, config, output_dir, loss_fn, evaluate, name="SFT", batch_rows=config.batch_size, resume=resume,
                            progress=progress, stop_after=stop_after, allow_changed_settings=allow_changed_settings,
                            data_settings=data_settings_of(run_config))
        if result.interrupted:
            return result.interrupted_summary()
        metrics = _sft_metrics(result, config)
        up_to_date = result.already_finished and finished_run_card(output_dir, "sft", metrics["steps"]) is not None \
            and (Path(output_dir) / "config.json").exists()
        if result.accelerator.is_main_process and not up_to_date:  # a finished run run again: its files stay
            result.model.save_pretrained(str(output_dir), safe_serialization=True)
            tokenizer.save_pretrained(str(output_dir))
            permissions_from_umask(output_dir)
            write_run_card(output_dir, "sft", {**(run_config or {}), "sft": asdict(config)}, metrics=metrics,
                           timings={"train": metrics["train_seconds"]})
    return metrics


def _sft_metrics(result, config: SFTConfig) -> dict:
    state = result.state
    tokens = state["step"] * config.batch_size * config.block_size
    metrics = {
        "steps": state["step"],
        "tokens_seen": tokens,
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(tokens / max(state["train_seconds"], 1e-9), 1),
        "initial_eval_perplexity": state["history"][0]["eval_ppl"],
        "final_eval_perplexity": state["history"][-1]["eval_ppl"],
        "final_train_loss": state["train_log"][-1]["loss"] if state["train_log"] else None,
        "mixed_precision": result.mixed_precision,
        "already_finished": result.already_finished,
        "history": state["history"],
        "losses": [round(row["loss"], 4) for row in state["train_log"]],
    }
    if result.message:
        metrics["message"] = result.message
    if state.get("settings_changes"):
        metrics["settings_changes"] = state["settings_changes"]
    return metrics
