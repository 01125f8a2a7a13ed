"""TRL's `DPOTrainer` on the course's task: the same pairs, the same settings as our `train_dpo`, evaluated alike.

Our DPO (`dpo_training.train_dpo`) and TRL 1.16's compute the same loss on the same batch (tests/test_dpo.py);
this module trains the shipped SFT policy with TRL's trainer so that notebook 08 can put both runs on the frontier.

What carries over from `DPOTrainConfig` (and how TRL names it):

* ``beta`` -> ``beta``; the sigmoid loss (TRL's default ``loss_type``), no label smoothing;
* ``learning_rate``, ``warmup_steps``, ``max_steps``, ``weight_decay``, ``max_grad_norm`` -> the same names;
  ``betas`` -> ``adam_beta1`` / ``adam_beta2``; warm-up then cosine decay to ``min_lr_ratio`` of the peak ->
  ``lr_scheduler_type="cosine_with_min_lr"`` with ``min_lr_rate``;
* ``batch_size`` pairs per step -> ``per_device_train_batch_size`` (TRL counts pairs too);
* ``seed`` -> ``seed``; TRL shuffles the pairs with its own sampler, so the batches are not ours.

What differs: TRL takes text — a ``prompt``, ``chosen`` and ``rejected`` column — and tokenizes it itself (prompt
and completion apart), where our loop uses the sampled token ids; for the course's byte-level BPE the two agree
except where a prompt ends inside a multi-byte character (`grpo_rloo.trl_prompt_dataset` measures that). TRL
also computes the reference's log-probabilities on the fly, where ours computes them once.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from datasets import Dataset

from ..sources import resolve_source
from ..core.precision import resolve_mixed_precision
from ..data.tokenizer import load_tokenizer
from .dpo_training import DPOTrainConfig, PreferencePairs
from .trl_evaluation import HeldOutCallback

__all__ = ["pairs_as_text", "train_trl_dpo"]


def pairs_as_text(pairs: PreferencePairs) -> Dataset:
    """TRL's preference format: columns ``prompt``, ``chosen``, ``rejected`` (plain text, completions without the
    prompt)."""
    prompts, chosen, rejected = zip(*pairs.texts, strict=True)
    return Dataset.from_dict({"prompt": list(prompts), "chosen": list(chosen), "rejected": list(rejected)})


def train_trl_dpo(pairs: PreferencePairs, config: DPOTrainConfig, output_dir, evaluator=None,
                  policy: str | Path | None = None, progress: bool = False) -> dict:
    """Train `policy` (a profile name or directory, `rlhf_helpers.sources.resolve_source`; None: the current
    profile's SFT policy, the shipped one for tiny; also the frozen reference) with `trl.DPOTrainer` on
    `pairs` with the settings of `config`, evaluated by `evaluator` every ``config.eval_every`` steps.

    Returns ``{"steps", "train_seconds", "history"`` (the evaluations: step, train_seconds, metrics),
    ``"log_history"`` (TRL's loss, reward accuracy and margin per logged step), ``"settings"``}``.
    """
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    config.validate()
    policy_dir = resolve_source("policy", policy)
    tokenizer = load_tokenizer(policy_dir)
    bf16 = resolve_mixed_precision(config.mixed_precision) == "bf16"
    settings = dict(
        output_dir=str(output_dir), beta=config.beta, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=1, max_steps=config.max_steps,
        warmup_steps=config.warmup_steps, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio}, weight_decay=config.weight_decay,
        adam_beta1=config.betas[0], adam_beta2=config.betas[1], max_grad_norm=config.max_grad_norm,
        seed=config.seed, use_cpu=True, bf16=bf16, logging_steps=config.eval_every, save_strategy="no",
        report_to="none", disable_tqdm=not progress, max_length=128,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advisory warnings about GPU-only options
        args = DPOConfig(**settings)
    callbacks = [HeldOutCallback(evaluator, config.eval_every, output_dir)] if evaluator is not None else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(model=str(policy_dir), args=args, train_dataset=pairs_as_text(pairs),
                             processing_class=tokenizer, callbacks=callbacks)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        trainer.train()
    train_seconds = time.perf_counter() - started - (callbacks[0].eval_seconds if callbacks else 0.0)
    trainer.save_model(str(output_dir))
    return {"steps": trainer.state.global_step, "train_seconds": round(train_seconds, 1),
            "history": callbacks[0].rows if callbacks else [], "log_history": list(trainer.state.log_history),
            "settings": {k: v for k, v in settings.items() if k != "output_dir"}}
