"""Training the reward model: the Bradley–Terry loop and normalisation.

Training runs the supervised loop (`rlhf_helpers.core.training.train_loop`, on the run engine `core.run`) with
the Bradley–Terry loss: each step scores the chosen and rejected texts of a batch of pairs and minimises ``−log σ(r_c − r_r)``
(`rlhf_helpers.reward.model.bradley_terry_loss`). Settings: `rlhf_helpers.config.RewardConfig`.

After training, the reward is **normalised**: sample responses from the reference (SFT) policy the way
PPO will (`rlhf_helpers.policy.generation.sample_responses`: train prompts, PPO's response lengths and sampling),
score ``query + response``, and store the mean and std in the model (Ziegler et al. 2019; Huang et al. 2023,
"The N Implementation Details of RLHF with PPO", section "Reward model": reward normalisation).

`rlhf_helpers.pipeline.stage_reward` runs it all for a profile: pairs → training → normalisation → held-out
evaluation → save.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..config import RewardConfig, data_settings_of
from ..core.lock import run_lock
from ..core.run_card import write_run_card
from ..core.run import batch_indices, finished_run_card
from ..core.training import train_loop
from ..data import build_dataset
from ..data.preferences import pairwise_accuracy
from ..policy.generation import sample_responses
from .model import (
    WEIGHTS_NAME, RewardModel, RewardScorer, bradley_terry_loss, evaluate_pairs, pair_rewards, save_reward_model,
)

VIEWS = ("full", "snippet")


def _views(pairs) -> dict:
    """Tokenized pairs with a ``view`` column as ``{"full": {"chosen_ids": [...], "rejected_ids": [...]}, ...}``."""
    views = {}
    chosen, rejected, kinds = pairs["chosen_ids"], pairs["rejected_ids"], pairs["view"]
    for view in VIEWS:
        index = [i for i, v in enumerate(kinds) if v == view]
        if index:
            views[view] = {"chosen_ids": [chosen[i] for i in index], "rejected_ids": [rejected[i] for i in index]}
    return views


def train_reward_model(model: RewardModel, tokenizer, train_pairs, eval_pairs: dict, config: RewardConfig,
                       output_dir: str | Path, resume: bool = True, progress: bool = True,
                       run_config: dict | None = None, stop_after: int | None = None,
                       allow_changed_settings: bool = False) -> dict:
    """Minimise the Bradley–Terry loss on tokenized pairs; save the model (unnormalised) in `output_dir`.

    Every step draws `full_batch_size` full-review pairs and `snippet_batch_size` snippet pairs (two
    forward passes, so short snippets are never padded to full length) and averages the loss over all
    pairs. Batches are a pure function of (seed, step), so a resumed run sees the same data.

    Args:
        train_pairs: `Dataset` with ``chosen_ids``, ``rejected_ids`` and ``view`` ("full"/"snippet").
        eval_pairs: ``{"full": Dataset, "snippet": Dataset}`` of tokenized held-out pairs.
        stop_after: leave after this many steps *in this call* (checkpointed), as if the run were killed
            there; a later call with the same `output_dir` resumes. SIGINT / SIGTERM stop the same way.
        allow_changed_settings: resume even if `config` differs from the checkpoint's (see `train_loop`).
    A finished run run again trains nothing, and leaves the saved model alone when it is this run's (it may
    have been normalised since; the checkpoint is not).
    Returns:
        Metrics with ``history`` (held-out accuracy curve) and ``train_log`` (training loss/accuracy curve).
    """
    pad_id = tokenizer.pad_token_id
    train_views = _views(train_pairs)
    batch_sizes = {"full": config.full_batch_size, "snippet": config.snippet_batch_size}
    batch_sizes = {v: b for v, b in batch_sizes.items() if v in train_views and b > 0}
    if not batch_sizes:
        raise ValueError("No training pairs: train_pairs needs rows with view 'full' and/or 'snippet'.")
    eval_subsets = {v: {k: list(d[k][: config.eval_pairs]) for k in ("chosen_ids", "rejected_ids")}
                    for v, d in eval_pairs.items()}

    def loss_fn(model, step, shard, device):
        losses, correct, n_pairs = [], 0, 0
        for view, batch_size in batch_sizes.items():
            data = train_views[view]
            seed = config.seed + VIEWS.index(view)  # each view its own batch order
            rows = batch_indices(step, len(data["chosen_ids"]), batch_size, seed).tolist()
            rows = shard.take(rows, f"reward.{view}_batch_size")  # this micro-batch: the same share of each view
            r_c, r_r = pair_rewards(model, [data["chosen_ids"][i] for i in rows],
                                    [data["rejected_ids"][i] for i in rows], pad_id, device)
            # Sum of per-pair losses; divided by the number of pairs below -> the mean over both views.
            losses.append(bradley_terry_loss(r_c, r_r) * len(rows))
            correct += (r_c > r_r).sum().item()
            n_pairs += len(rows)
        return torch.stack(losses).sum() / n_pairs, {"accuracy": correct / n_pairs}

    def evaluate(model):
        row = {}
        for view, subset in eval_subsets.items():
            result = evaluate_pairs(model, subset, pad_id)
            row.update({f"eval_{view}_accuracy": result["accuracy"], f"eval_{view}_loss": result["loss"]})
        return row

    with run_lock(output_dir):  # held until the final files are written, not only while training
        result = train_loop(model, config, output_dir, loss_fn, evaluate, name="reward model",
                            batch_rows=sum(batch_sizes.values()), resume=resume,
                            progress=progress, stop_after=stop_after, allow_changed_settings=allow_changed_settings,
                            data_settings=data_settings_of(run_config))
        state = result.state
        if result.interrupted:
            return result.interrupted_summary()
        metrics = {"steps": state["step"], "train_seconds": round(state["train_seconds"], 1),
                   "pairs_seen": state["step"] * sum(batch_sizes.values()), "mixed_precision": result.mixed_precision,
                   "already_finished": result.already_finished, "final": state["history"][-1],
                   "history": state["history"], "train_log": state["train_log"]}
        metrics.update({k: v for k, v in (("message", result.message),
                                          ("settings_changes", state.get("settings_changes"))) if v})
        up_to_date = result.already_finished and finished_run_card(output_dir, "reward", state["step"]) is not None \
            and (Path(output_dir) / WEIGHTS_NAME).exists()
        if result.accelerator.is_main_process and not up_to_date:
            save_reward_model(result.model, tokenizer, output_dir,
                              extra={"max_length": config.max_length, "keep": config.keep})
            write_run_card(output_dir, "reward", {**(run_config or {}), "reward": asdict(config)}, metrics=metrics,
                           timings={"train": metrics["train_seconds"]})
    return metrics


# ----------------------------------------------------------------------------------------------
# Normalisation on samples of the reference policy
# ----------------------------------------------------------------------------------------------


def sample_reference_texts(policy, tokenizer, config, n_prompts: int = 512, batch_size: int = 32,
                           seed: int = 0) -> list[str]:
    """``query + response`` texts sampled from the reference policy the way PPO samples them.

    Prompts: `n_prompts` train prompts of `build_dataset` (2–8 tokens, seeded choice). Responses:
    `sample_responses` with ``config.ppo``'s lengths (one per response), temperature, top-k/top-p and EOS rule.
    """
    ppo = config.ppo
    prompts = build_dataset(tokenizer, config, split="train")
    prompts = prompts.shuffle(seed=seed).select(range(min(n_prompts, len(prompts))))
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for start in range(0, len(prompts), batch_size):
        queries = list(prompts[start : start + batch_size]["input_ids"])
        out = sample_responses(policy, tokenizer, queries, ppo.response_min_tokens, ppo.response_max_tokens,
                               length_seed=seed + start, temperature=ppo.temperature, top_k=ppo.top_k, top_p=ppo.top_p,
                               stop_at_eos=ppo.stop_at_eos, generator=generator)
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
    return {view: pairwise_accuracy(scorer.score(list(p["chosen"])), scorer.score(list(p["rejected"])))
            for view, p in heldout.items()}
