"""Evaluate a policy again and again along a training run: the raw material of over-optimisation curves.

`HeldOutEvaluator` fixes everything but the policy — the held-out prompts, the sampling seed, the frozen
reference, the reward model (the *proxy*, what training optimises) and the independent judges (the *gold*) — so
two evaluations differ only because the policy did. `ppo_with_evaluations` and `sft_with_evaluations` train with
the package's loops and evaluate every few steps; both resume an interrupted run from its checkpoint and keep the
evaluations already made (``evaluations.json`` beside the checkpoint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..config import EvaluationConfig
from ..core.files import write_json_whole
from .metrics import evaluate_policy

__all__ = ["HeldOutEvaluator", "ppo_with_evaluations", "train_loop_with_evaluations", "sft_with_evaluations", "GOLD"]

GOLD = "p_positive/bag_of_words"
"""The course's gold reward: the bag-of-words judge's mean p(positive) on query + response (a probability, so
a continuous score like Gao et al.'s gold reward model; its 0/1 verdict is ``positive_rate/bag_of_words``)."""


class HeldOutEvaluator:
    """``evaluator(policy_lm) -> metrics`` on fixed held-out prompts (`evaluate_policy`'s metrics plus the gold).

    Args:
        reference_lm: the frozen SFT policy (KL and perplexity are measured against it).
        tokenizer, prompts: the held-out prompts (token-id lists), e.g. the first 256 of the eval split.
        reward_fn: the proxy reward (``RewardScorer.score``).
        judges: ``{"vader": ..., "bag_of_words": ...}`` (`default_judges`); a judge with a ``probability``
            method adds ``p_positive/<name>``.
        seed, min_tokens, max_tokens, temperature: how responses are sampled (as PPO samples them).
    """

    def __init__(self, reference_lm, tokenizer, prompts, reward_fn, judges: dict, seed: int = EvaluationConfig.seed,
                 min_tokens: int = 4, max_tokens: int = 16, temperature: float = 1.0):
        self.reference_lm, self.tokenizer, self.prompts = reference_lm, tokenizer, list(prompts)
        self.reward_fn, self.judges = reward_fn, judges
        self.kwargs = dict(seed=seed, min_tokens=min_tokens, max_tokens=max_tokens, temperature=temperature)
        self.last_samples: list[dict] = []

    def __call__(self, policy_lm) -> dict:
        was_training = policy_lm.training
        policy_lm.eval()
        device = next(policy_lm.parameters()).device
        # Always in float32, also when called from inside a bf16 training loop: every evaluation of every run
        # (PPO, SFT, best-of-n) must differ only because the policy did, not because of the precision.
        with torch.autocast(device_type=device.type, enabled=False):
            metrics, samples = evaluate_policy(policy_lm, self.reference_lm, self.tokenizer, self.prompts,
                                               self.reward_fn, self.judges, **self.kwargs)
        policy_lm.train(was_training)
        texts = [s["query"] + s["response"] for s in samples]
        for name, judge in self.judges.items():
            if callable(getattr(judge, "probability", None)):
                p = np.asarray(judge.probability(texts), dtype=float)
                metrics[f"p_positive/{name}"] = float(p.mean())
                for sample, value in zip(samples, p.tolist()):
                    sample[f"p_positive/{name}"] = value
        self.last_samples = samples
        return metrics


def _load_rows(path: Path, up_to_step: int) -> list[dict]:
    """Evaluations saved by an earlier call, without those of steps after the checkpoint it resumes from."""
    if not path.exists():
        return []
    return [row for row in json.loads(path.read_text()) if row["step"] <= up_to_step]


def ppo_with_evaluations(trainer, evaluator: HeldOutEvaluator, every: int, progress: bool = True,
                         keep_samples: int = 0, until_step: int | None = None) -> list[dict]:
    """Train `trainer` (a `PPOTrainer`) to its budget, or to `until_step` if given (the learning rate still anneals
    over ``max_steps``, as in notebook 06), evaluating the policy at step 0, every `every` steps and at the end.

    Rows: ``{"step", "train_seconds", **metrics}``, and with `keep_samples` > 0 the first `keep_samples` held-out
    samples (query, response, reward, judges) under ``"samples"``. Written to ``<output_dir>/evaluations.json``
    after every evaluation; a run resumed from its checkpoint keeps the rows up to that checkpoint's step (choose
    `every` as a multiple of the config's ``checkpoint_every`` so none is lost).
    """
    path = Path(trainer.output_dir) / "evaluations.json"
    trainer.maybe_resume()
    rows = _load_rows(path, trainer.state["step"])

    def evaluate_now() -> None:
        policy = trainer.accelerator.unwrap_model(trainer.policy)
        started = time.perf_counter()
        metrics = evaluator(policy.lm)
        row = {"step": trainer.state["step"], "train_seconds": round(trainer.state["train_seconds"], 1), **metrics,
               "eval_seconds": round(time.perf_counter() - started, 1)}
        if keep_samples:
            row["samples"] = evaluator.last_samples[:keep_samples]
        rows.append(row)
        write_json_whole(path, rows)  # a run killed mid-write keeps the previous rows whole

    if not rows:
        evaluate_now()

    last = trainer.config.max_steps if until_step is None else min(until_step, trainer.config.max_steps)

    def callback(stats: dict) -> None:
        if stats["step"] % every == 0 or stats["step"] == last:
            if not rows or rows[-1]["step"] != stats["step"]:
                evaluate_now()

    if trainer.state["step"] < last:
        trainer.train(progress=progress, callback=callback, stop_after=last - trainer.state["step"])
    return rows


def train_loop_with_evaluations(model, config, output_dir, loss_fn, evaluator: HeldOutEvaluator, name: str,
                                batch_rows: int, progress: bool = True) -> dict:
    """`core.training.train_loop` of `model` with `loss_fn`, evaluated by `evaluator` at step 0, every
    ``config.eval_every`` steps and at the end; resumable. Returns ``{"history": [{"step", "seconds", **metrics}, ...],
    "train_log"`` (the training loss and `loss_fn`'s logs, averaged every ``config.log_every`` steps)``, "steps",
    "train_seconds", "model"}`` (the trained model, unwrapped)."""
    from ..core.training import train_loop

    def evaluate(model):
        # accelerate patches the forward of the model it prepared with its autocast; a plain copy of the weights
        # is evaluated in float32, like every other policy in `HeldOutEvaluator`'s rows
        from ..core.precision import plain_copy

        return evaluator(plain_copy(model))

    result = train_loop(model, config, output_dir, loss_fn, evaluate, name=name, batch_rows=batch_rows,
                        progress=progress)
    trained = result.accelerator.unwrap_model(result.model)
    return {"history": result.state["history"], "train_log": result.state["train_log"], "steps": result.state["step"],
            "train_seconds": round(result.state["train_seconds"], 1), "model": trained}


def sft_with_evaluations(model, tokenizer, train_blocks: torch.Tensor, config, output_dir, evaluator: HeldOutEvaluator,
                         progress: bool = True) -> dict:
    """Supervised fine-tuning of `model` on packed ``[n, block_size]`` `train_blocks` (the SFT objective),
    evaluated along the way (`train_loop_with_evaluations`, whose dict it returns)."""
    from ..core.run import batch_indices

    def loss_fn(model, step, shard, device):
        rows = batch_indices(step, len(train_blocks), config.batch_size, config.seed)
        batch = train_blocks[shard.take(rows)].to(device)
        return model(input_ids=batch, labels=batch).loss, {}

    return train_loop_with_evaluations(model, config, output_dir, loss_fn, evaluator, "SFT", config.batch_size,
                                       progress)
