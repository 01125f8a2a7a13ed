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

from ..config import RewardConfig
from ..core.precision import resolve_mixed_precision
from ..core.files import permissions_from_umask
from ..core.run_card import write_run_card
from ..data.preferences import course_pairs, tokenize_pairs
from ..policy.model import load_policy
from .model import RewardModel, RewardScorer
from .training import evaluate_scorer


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


def trl_reward_args(config: RewardConfig, output_dir: str | Path, evaluate: bool = True, progress: bool = True):
    """TRL's ``RewardConfig`` derived from ours, field by field (nothing retyped).

    Where TRL allows it the run matches our loop: AdamW with our betas and weight decay, warmup then cosine to
    `min_lr_ratio`, the same gradient clipping, bf16 where fast, one batch = our full + snippet pairs. TRL's
    gradient checkpointing is off (TRL turns it on by default; on a small model it only costs time). Batches
    are grouped by length (`group_by_length`), so short snippet pairs are mostly batched together.
    """
    import trl

    with warnings.catch_warnings():
        # transformers 5 renamed gradient_checkpointing (which TRL's config still sets) and warns about it.
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        return trl.RewardConfig(
            output_dir=str(output_dir),
            max_steps=config.max_steps,
            per_device_train_batch_size=config.full_batch_size + config.snippet_batch_size,
            per_device_eval_batch_size=64,
            learning_rate=config.learning_rate,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            adam_beta1=config.betas[0],
            adam_beta2=config.betas[1],
            max_grad_norm=config.max_grad_norm,
            bf16=resolve_mixed_precision(config.mixed_precision) == "bf16",
            fp16=False,
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=False,
            max_length=None,  # pairs are already truncated by tokenize_pairs
            train_sampling_strategy="group_by_length",
            remove_unused_columns=False,  # keep `length` for the sampler; the collator ignores other columns
            logging_steps=config.log_every,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=config.eval_every,
            save_strategy="no",
            report_to="none",
            seed=config.seed,
            data_seed=config.seed,
            disable_tqdm=not progress,
            dataloader_num_workers=0,
        )


def train_reward_trl(classifier: GPT2ForSequenceClassification, tokenizer, train_pairs, eval_pairs: dict | None,
                     output_dir: str | Path, config: RewardConfig, progress: bool = True) -> dict:
    """Train `classifier` with `trl.RewardTrainer` on tokenized pairs, with settings from our `RewardConfig`.

    Returns:
        ``{"trainer": RewardTrainer, "log_history": [...], "train_seconds": float}``.
    """
    from trl import RewardTrainer

    args = trl_reward_args(config, output_dir, evaluate=bool(eval_pairs), progress=progress)
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


def train_reward_twin(config, output_dir: str | Path, policy: str | Path, progress: bool = True) -> dict:
    """The TRL twin of the reward stage (`rlhf_helpers.pipeline.stage_reward`, which runs this under the stage
    contract as `stage_reward_trl`): same pairs, same tokens, same settings (``config.reward``), `RewardTrainer`.

    Trains, evaluates on every held-out pair with our `RewardScorer` (the same evaluation code as the
    from-scratch model), saves the classifier (``save_pretrained``) and a run card ``run_card_reward_trl.json``.
    """
    settings = config.reward
    output_dir = Path(output_dir)
    policy_model, tokenizer = load_policy(policy)
    train_pairs, heldout = course_pairs(config)
    train_tok = tokenize_pairs(train_pairs, tokenizer, settings.max_length, settings.keep)
    heldout_tok = {v: tokenize_pairs(p, tokenizer, settings.max_length, settings.keep) for v, p in heldout.items()}
    eval_subsets = {v: p.select(range(min(settings.eval_pairs, len(p)))) for v, p in heldout_tok.items()}

    classifier = sequence_classifier_from_policy(policy_model, tokenizer, seed=config.seed)
    result = train_reward_trl(classifier, tokenizer, train_tok, eval_subsets, output_dir / "trainer", settings,
                              progress=progress)

    start = time.perf_counter()
    scorer = RewardScorer(RewardModel.from_sequence_classifier(classifier.eval()).eval(), tokenizer,
                          max_length=settings.max_length, keep=settings.keep)
    accuracy = evaluate_scorer(scorer, heldout)
    eval_seconds = time.perf_counter() - start
    classifier.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    permissions_from_umask(output_dir)
    summary = {"dir": str(output_dir), "heldout_accuracy": accuracy, "heldout_pairs": len(heldout["full"]),
               "train_pairs": len(train_pairs), "steps": settings.max_steps}
    timings = {"train": round(result["train_seconds"], 1), "evaluate": round(eval_seconds, 1)}
    trl_settings = {"max_steps": settings.max_steps, "batch_size": settings.full_batch_size + settings.snippet_batch_size,
                    "learning_rate": settings.learning_rate, "warmup_steps": settings.warmup_steps,
                    "min_lr_ratio": settings.min_lr_ratio, "eval_every": settings.eval_every, "seed": settings.seed}
    write_run_card(output_dir, "reward_trl", {**config.to_dict(), "trl": trl_settings},
                   metrics={**summary, "curves": trl_curves(result["log_history"])}, timings=timings)
    return {**summary, "timings_s": timings}
