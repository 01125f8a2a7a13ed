"""The same reward model trained with TRL: `trl.RewardTrainer` on a ``GPT2ForSequenceClassification``.

What TRL 1.16 does (read it with ``inspect.getsource(trl.RewardTrainer.compute_loss)``):

* The model is a sequence classifier with ``num_labels=1``: GPT-2's transformer + ``score``, a
  ``Linear(n_embd, 1, bias=False)`` read at the last token that is **not the pad token** (found from
  token ids, so ``config.pad_token_id`` must be set and must not be a token that appears in the text:
  the course's tokenizer has a separate ``<|pad|>``; hub GPT-2 pads with EOS).
* A batch holds the B chosen sequences and then the B rejected ones, right-padded; one forward pass;
  ``loss = −logsigmoid(r_c − r_r).mean()`` (+ an optional margin and reward-centring term, off here).
* Given text columns ``chosen`` / ``rejected``, it appends EOS and *drops* pairs longer than
  ``max_length``. We hand it the already tokenized ``chosen_ids`` / ``rejected_ids`` of
  `preferences.tokenize_pairs` instead, so it trains on exactly the tokens our own loop sees.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from .sft import resolve_mixed_precision


def sequence_classifier_from_policy(policy, tokenizer, seed: int = 0) -> GPT2ForSequenceClassification:
    """A ``GPT2ForSequenceClassification(num_labels=1)`` whose transformer is a copy of the policy's.

    The ``score`` head keeps transformers' default initialisation (normal, std = initializer_range).
    """
    settings = {k: v for k, v in policy.config.to_dict().items() if k not in ("id2label", "label2id")}
    config = GPT2Config.from_dict({**settings, "num_labels": 1, "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(seed)
    classifier = GPT2ForSequenceClassification(config)
    classifier.transformer.load_state_dict(policy.transformer.state_dict())
    return classifier


def with_length_column(pairs):
    """Add ``length`` = the longer side of each tokenized pair, for ``group_by_length`` batching."""
    return pairs.map(lambda row: {"length": max(len(row["chosen_ids"]), len(row["rejected_ids"]))})


def train_reward_trl(
    classifier: GPT2ForSequenceClassification,
    tokenizer,
    train_pairs,
    eval_pairs: dict | None,
    output_dir: str | Path,
    max_steps: int = 600,
    batch_size: int = 48,
    learning_rate: float = 1e-4,
    warmup_steps: int = 30,
    min_lr_ratio: float = 0.1,
    eval_every: int = 100,
    logging_steps: int = 10,
    seed: int = 0,
    mixed_precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Train `classifier` with `trl.RewardTrainer` on tokenized pairs; return the trainer's log and time.

    Settings mirror our loop where TRL allows: AdamW (beta2 0.95), warmup then cosine to `min_lr_ratio`,
    gradient clipping at 1, bf16 where fast, no gradient checkpointing (TRL turns it on by default; on a
    small model it only costs time). Batches are grouped by length (`group_by_length`), so short snippet
    pairs are mostly batched together instead of being padded to full-review length.

    Returns:
        ``{"trainer": RewardTrainer, "log_history": [...], "train_seconds": float}``.
    """
    from trl import RewardConfig, RewardTrainer

    use_bf16 = resolve_mixed_precision(mixed_precision) == "bf16"
    with warnings.catch_warnings():
        # transformers 5 renamed gradient_checkpointing (which TRL's config still sets) and warns about it.
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = RewardConfig(
            output_dir=str(output_dir),
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=64,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": min_lr_ratio},
            warmup_steps=warmup_steps,
            weight_decay=0.01,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            bf16=use_bf16,
            fp16=False,
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=False,
            max_length=None,  # pairs are already truncated by tokenize_pairs
            train_sampling_strategy="group_by_length",
            remove_unused_columns=False,  # keep `length` for the sampler; the collator ignores other columns
            logging_steps=logging_steps,
            eval_strategy="steps" if eval_pairs else "no",
            eval_steps=eval_every,
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            disable_tqdm=not progress,
            dataloader_num_workers=0,
        )
    keep = ["chosen_ids", "rejected_ids"]
    train = with_length_column(train_pairs.select_columns(keep))
    evals = {view: with_length_column(pairs.select_columns(keep)) for view, pairs in (eval_pairs or {}).items()} or None
    trainer = RewardTrainer(model=classifier, args=args, train_dataset=train, eval_dataset=evals,
                            processing_class=tokenizer)
    if not progress:  # without progress bars, Trainer prints every log dict instead: keep quiet
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"trainer": trainer, "log_history": trainer.state.log_history, "train_seconds": seconds}


def trl_curves(log_history: list[dict]) -> dict:
    """Split TRL's log into a training curve and held-out accuracy curves per view.

    TRL logs ``eval_accuracy`` under the same key for every eval dataset; the dataset's name is in the
    loss key (``eval_full_loss``), so the view is read from there.
    """
    train = [{"step": h["step"], "loss": h["loss"], "accuracy": h["accuracy"]} for h in log_history
             if "loss" in h and "accuracy" in h]
    evals: dict[str, list] = {}
    for h in log_history:
        for key in h:
            if key.startswith("eval_") and key.endswith("_loss") and "accuracy" not in key:
                view = key[len("eval_") : -len("_loss")]
                evals.setdefault(view, []).append({"step": h["step"], "accuracy": h["eval_accuracy"], "loss": h[key]})
    return {"train": train, "eval": evals}


def stage_reward_trl(config, output_dir: str | Path | None = None, policy: str | Path | None = None,
                     progress: bool = True, **overrides) -> dict:
    """The TRL twin of `reward_training.stage_reward`: same pairs, same tokens, `RewardTrainer`.

    Trains, evaluates on every held-out pair with our `RewardScorer` (the same evaluation code as the
    from-scratch model), saves the classifier (``save_pretrained``) and a run card ``run_card_reward_trl.json``.
    `overrides`: keyword arguments of `train_reward_trl` (max_steps, batch_size, learning_rate, ...).
    """
    from .policy import load_policy
    from .preferences import course_pairs, tokenize_pairs
    from .reward_model import RewardModel, RewardScorer
    from .reward_training import REWARD_PROFILES, RewardTrainConfig, evaluate_scorer
    from .runcard import write_run_card

    defaults = RewardTrainConfig(**REWARD_PROFILES.get(config.name, {}))
    output_dir = Path(output_dir) if output_dir else config.artifacts_dir / "reward_model_trl"
    policy_model, tokenizer = load_policy(policy or config.name)
    train_pairs, heldout = course_pairs(config)
    train_tok = tokenize_pairs(train_pairs, tokenizer, defaults.max_length, defaults.keep)
    heldout_tok = {v: tokenize_pairs(p, tokenizer, defaults.max_length, defaults.keep) for v, p in heldout.items()}
    eval_subsets = {v: p.select(range(min(defaults.eval_pairs, len(p)))) for v, p in heldout_tok.items()}

    settings = dict(max_steps=defaults.max_steps, batch_size=defaults.full_batch_size + defaults.snippet_batch_size,
                    learning_rate=defaults.learning_rate, warmup_steps=defaults.warmup_steps,
                    min_lr_ratio=defaults.min_lr_ratio, eval_every=defaults.eval_every, seed=config.seed)
    settings.update(overrides)
    classifier = sequence_classifier_from_policy(policy_model, tokenizer, seed=config.seed)
    result = train_reward_trl(classifier, tokenizer, train_tok, eval_subsets, output_dir / "trainer",
                              progress=progress, **settings)

    start = time.perf_counter()
    scorer = RewardScorer(RewardModel.from_sequence_classifier(classifier.eval()).eval(), tokenizer,
                          max_length=defaults.max_length, keep=defaults.keep)
    accuracy = evaluate_scorer(scorer, heldout)
    eval_seconds = time.perf_counter() - start
    classifier.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    summary = {"dir": str(output_dir), "heldout_accuracy": accuracy, "heldout_pairs": len(heldout["full"]),
               "train_pairs": len(train_pairs), "steps": settings["max_steps"]}
    write_run_card(output_dir, "reward_trl", {**config.to_dict(), "trl": {k: v for k, v in settings.items()}},
                   metrics={**summary, "curves": trl_curves(result["log_history"])},
                   timings={"train": round(result["train_seconds"], 1), "evaluate": round(eval_seconds, 1)})
    return {**summary, "timings_s": {"train": round(result["train_seconds"], 1), "evaluate": round(eval_seconds, 1)}}
