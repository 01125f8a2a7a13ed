"""TRL's GRPO and RLOO on the course's task: the same policy, prompts and reward model as our PPO.

TRL 1.16 (pinned) has no PPO trainer any more, but it ships two value-free relatives of it:

* ``GRPOTrainer``: group-normalised advantages ``(r_i - mean) / std`` over k completions of a prompt, PPO's
  clipped ratio per token, and a per-token k3 KL term *in the loss* (Shao et al. 2024, *DeepSeekMath*, 4.1).
* ``RLOOTrainer``: leave-one-out baseline ``r_i - mean(r_j, j != i)``, a ratio per *completion*, and the KL
  (k1, summed over tokens) *in the reward* (Kool et al. 2019; Ahmadian et al. 2024, *Back to Basics*).

Notebook 04 and ``tests/test_trl_parity.py`` check their formulas against ours. This module makes them run on
our task, with three adapters and one fix:

1. `reward_function` wraps our `RewardScorer` in TRL's reward signature ``f(prompts, completions, **kw)``;
   it scores ``prompt + completion``, the same text our PPO scores (query text + response text).
2. `trl_prompt_dataset` turns our PPO prompts into TRL's ``prompt`` text column and checks that TRL's own
   re-tokenization gives back our token ids (it does for all but 4 of 22,406 train prompts, see there).
3. `CourseGRPOTrainer` / `CourseRLOOTrainer` pass position ids built from the attention mask to the forward
   pass that scores completions. TRL 1.16 passes none, and GPT-2 (learned absolute positions) then counts left
   padding as positions, so the log-probs of every padded row are not those of the sampling distribution.
4. `train_trl` runs either trainer with settings that mirror our PPO where TRL allows, under a wall-clock
   budget (`WallClockBudget`), saves the policy and returns the per-step history.

One "step" in the history here is one PPO step's worth of work: ``batch_size`` (64) fresh completions, then
``(batch_size / mini_batch_size) * ppo_epochs`` Adam steps on them, as in our PPO (the tiny profile's recipe:
4 mini-batches x 1 epoch = 4; `PPOConfig`'s own defaults: 4 x 4 = 16). TRL itself counts
Adam steps (``trainer.state.global_step``); `train_trl` converts.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

from datasets import Dataset
from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from ..config import CourseConfig, PPOConfig, get_config
from ..sources import resolve_source
from ..core.run_card import write_run_card
from ..core.tensors import position_ids_from_mask
from ..data import build_dataset
from ..data.tokenizer import load_tokenizer
from ..policy.model import check_tokenizer_matches
from ..reward.model import load_reward_model

# ----------------------------------------------------------------------------------------------
# 1. The reward: our reward model in TRL's reward-function format
# ----------------------------------------------------------------------------------------------


def reward_function(scorer=None, name: str = "reward_model") -> Callable:
    """Our reward model as a TRL reward function ``fn(prompts, completions, **kwargs) -> list[float]``.

    Args:
        scorer: anything with ``score(list[str]) -> FloatTensor[N]``; default the current profile's reward model
            (``load_reward_model()``: the shipped one for tiny), whose scores are normalised (mean 0, std 1 on samples
            of the SFT policy).
        name: the function's ``__name__``; TRL logs its mean score as ``rewards/<name>/mean``.

    TRL calls it with the prompt texts of the dataset's ``prompt`` column, the decoded completions (special
    tokens skipped, so no EOS text), their token ids and every other dataset column as keyword arguments. We score
    ``prompt + completion``, exactly what our PPO scores (``collect_rollout``: query text + response text).
    """
    if scorer is None:
        scorer = load_reward_model(None)

    def reward(prompts, completions, **kwargs):
        if prompts and not isinstance(prompts[0], str):
            raise TypeError("reward_function expects plain-text prompts (a `prompt` column of strings), "
                            f"got {type(prompts[0]).__name__}: conversational prompts are not used in this course.")
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        return [float(s) for s in scorer.score(texts)]

    reward.__name__ = name
    reward.scorer = scorer
    return reward


# ----------------------------------------------------------------------------------------------
# 2. The prompts: our PPO prompts as TRL's `prompt` text column
# ----------------------------------------------------------------------------------------------


def retokenization_mismatches(tokenizer, input_ids, queries) -> list[int]:
    """Rows where tokenizing ``queries[i]`` the way TRL 1.16 does (``processing_class(text=prompts)``, in
    ``_tokenize_prompts``) does not give back ``input_ids[i]``."""
    again = tokenizer(text=list(queries))["input_ids"]
    return [i for i, (ids, new) in enumerate(zip(input_ids, again, strict=True)) if [int(t) for t in ids] != new]


def trl_prompt_dataset(tokenizer, config: CourseConfig | None = None, split: str = "train",
                       dataset: Dataset | None = None, drop_mismatched: bool = True) -> Dataset:
    """Our PPO prompts (`build_dataset`: the first 2-8 tokens of an IMDb review) as TRL wants them.

    TRL takes text in a ``prompt`` column and tokenizes it itself; our PPO feeds the token ids ``input_ids`` and
    scores the decoded text ``query``. The two agree when tokenizing ``query`` gives ``input_ids`` back. For the
    course's byte-level BPE they agree on 22,402 of the 22,406 train prompts. The other 4 are cut inside a
    multi-byte UTF-8 character (e.g. ``'Shintar'`` + the first byte of an accented letter): decoding turns the
    lone byte into U+FFFD, which re-encodes as three other byte tokens. The tokenizer adds no BOS/EOS, so nothing
    else differs.

    Args:
        tokenizer: the policy's tokenizer.
        config, split, dataset: as in `build_dataset` (PPO trains on ``split="train"``).
        drop_mismatched: drop the rows whose token ids TRL would not reproduce (default), so that every prompt
            TRL samples from is token for token one our PPO uses; False keeps all rows.
    Returns:
        A `Dataset` with columns ``prompt`` (str, our ``query``) and ``label`` (the review's sentiment; TRL
        passes it to reward functions, ours ignores it).
    """
    prompts = build_dataset(tokenizer, config or get_config(), split=split, dataset=dataset)
    ids = [row.tolist() for row in prompts["input_ids"]]
    queries, labels = list(prompts["query"]), [int(x) for x in prompts["label"]]
    bad = set(retokenization_mismatches(tokenizer, ids, queries)) if drop_mismatched else set()
    keep = [i for i in range(len(ids)) if i not in bad]
    return Dataset.from_dict({"prompt": [queries[i] for i in keep], "label": [labels[i] for i in keep]})


# ----------------------------------------------------------------------------------------------
# 3. The fix: position ids from the attention mask in TRL's scoring pass
# ----------------------------------------------------------------------------------------------


class _WithMaskPositionIds:
    """Calls ``model`` with ``position_ids = position_ids_from_mask(attention_mask)`` when none are given."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        if kwargs.get("position_ids") is None and kwargs.get("attention_mask") is not None:
            kwargs["position_ids"] = position_ids_from_mask(kwargs["attention_mask"])
        return self.model(*args, **kwargs)

    def __getattr__(self, name):  # anything else (config, device, ...) is the model's
        if name == "model":  # not set yet (e.g. during copy): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)


# Why: TRL 1.16's `_get_per_token_logps_and_entropies` (grpo_trainer.py and rloo_trainer.py) calls
# `model(input_ids=, attention_mask=, labels=, fused_lm_head=True)` on [left-padded prompt | completion] with no
# position ids, so GPT-2 numbers the columns 0, 1, 2, ... padding included, while `generate` sampled the same
# tokens with positions counted from each row's first real token. On padded rows the policy's log-probs (PPO ratio)
# and the reference's (KL) are then those of a shifted text. tests/test_trl_parity.py::
# test_grpo_log_probs_equal_ours_only_where_the_prompt_is_not_left_padded measures the gap (> 1e-2 on padded rows);
# tests/test_trl_trainers.py checks that with this override TRL's log-probs equal our `response_logprobs` on every
# row. The override wraps the model handed to TRL's own method and changes nothing else in it.
_LOGPROB_METHOD = "_get_per_token_logps_and_entropies"
for _cls in (GRPOTrainer, RLOOTrainer):
    if not callable(getattr(_cls, _LOGPROB_METHOD, None)):
        raise ImportError(f"trl.{_cls.__name__} has no {_LOGPROB_METHOD} any more (TRL changed): the position-id fix "
                          "in rlhf_helpers.beyond_ppo.grpo_rloo must be moved to the method that now scores completions.")


class CourseGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose completion log-probs use position ids from the attention mask (see above)."""

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        return super()._get_per_token_logps_and_entropies(_WithMaskPositionIds(model), *args, **kwargs)


class CourseRLOOTrainer(RLOOTrainer):
    """`trl.RLOOTrainer` whose completion log-probs use position ids from the attention mask (see above)."""

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        return super()._get_per_token_logps_and_entropies(_WithMaskPositionIds(model), *args, **kwargs)


# Generation needs no fix: TRL 1.16 samples with `model.generate(input_ids, attention_mask)`, and transformers'
# `generate` builds position ids from the attention mask (`_prepare_position_ids_for_generation`: cumsum - 1) for any
# model whose forward accepts `position_ids`; TRL's patched forward keeps GPT-2's signature. Checked in the tests.

TRAINERS = {"grpo": (GRPOConfig, CourseGRPOTrainer), "rloo": (RLOOConfig, CourseRLOOTrainer)}
# The TRL settings recorded in the result and the run card (the ones that decide what is trained, and how).
REPORTED_SETTINGS = (
    "seed", "learning_rate", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "weight_decay", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size",
    "num_iterations", "num_generations", "max_completion_length", "temperature", "top_k", "top_p", "min_p",
    "repetition_penalty", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "use_bias_correction_kl",
    "normalize_advantages", "reward_clip_range", "mask_truncated_completions", "disable_dropout",
    "gradient_checkpointing", "bf16", "use_cpu", "logging_steps",
)


# ----------------------------------------------------------------------------------------------
# 4. A wall-clock budget, and the run itself
# ----------------------------------------------------------------------------------------------


class WallClockBudget(TrainerCallback):
    """Stops training once ``max_minutes`` of wall time have passed since training began, and stamps every log
    entry with ``seconds`` since then.

    Args:
        max_minutes: the budget; None = no budget (``max_steps`` alone ends the run).
        every: check only when ``global_step`` is a multiple of this (the Adam steps of one generation round), so
            a run never stops with completions generated but not yet trained on. Like our PPO, the last round
            runs to its end, so a run can overshoot the budget by up to one round.
    """

    def __init__(self, max_minutes: float | None, every: int = 1):
        self.max_seconds = None if max_minutes is None else 60.0 * float(max_minutes)
        self.every = max(1, int(every))
        self.start: float | None = None
        self.stopped = False  # True when the budget (not max_steps) ended the run

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if (self.max_seconds is not None and state.global_step % self.every == 0
                and self.elapsed() >= self.max_seconds and not control.should_training_stop):
            control.should_training_stop = True
            self.stopped = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Trainer.log appends {**logs, "step": ...} to log_history *before* calling on_log: stamp that entry.
        if state.log_history:
            state.log_history[-1]["seconds"] = round(self.elapsed(), 3)


def trl_config(algorithm: str, output_dir: str | Path, ppo: PPOConfig | None = None, *, num_generations: int = 4,
               progress: bool = False, use_cpu: bool = True, **overrides):
    """The `GRPOConfig` / `RLOOConfig` of `train_trl`, derived from our `PPOConfig` (nothing retyped).

    ``algorithm``: "grpo" or "rloo". ``ppo``: the PPO settings to mirror (default: the tiny profile's). Each
    PPO field (its `PPOConfig` default), the TRL setting it becomes, and TRL 1.16's default:

    * ``batch_size`` 64 -> completions sampled per round (TRL's ``generation_batch_size`` = per-device batch x
      ``steps_per_generation``). PPO: ``batch_size`` 64 rollouts per step.
    * ``num_generations`` 4 -> ``num_generations`` k, completions per prompt (GRPO default 8, RLOO 2). So a round
      is 16 prompts x 4 completions; PPO draws 64 distinct prompts. k = 4 keeps 16 prompts per round; k = 8
      would leave 8, and k = 2 gives RLOO's leave-one-out baseline a single sibling.
    * ``mini_batch_size`` 16 -> ``per_device_train_batch_size``: completions per Adam step (default 8), with
      ``gradient_accumulation_steps`` 1 (default 1) and ``steps_per_generation`` = 64 / 16 = 4 (default: =
      gradient_accumulation_steps). PPO: ``mini_batch_size`` 16.
    * ``ppo_epochs`` 4 -> ``num_iterations`` (GRPO's mu; default 1): passes over each round's completions. PPO:
      ``ppo_epochs`` 4. TRL shuffles a round once and reuses the same 4 mini-batches in each pass; PPO reshuffles
      every epoch.
    * ``learning_rate`` 5e-5 (default 1e-6, meant for billion-parameter models), PPO's value for the 5 M tiny
      policy; ``lr_scheduler_type`` "linear" (default), decaying to 0 over ``max_steps`` rounds, as PPO anneals
      over its planned ``max_steps`` = 200; no warm-up (default 0); AdamW, weight decay 0, betas (0.9, 0.999)
      (defaults; PPO: Adam, the same thing without weight decay); ``max_grad_norm`` 1.0 (default 1.0; PPO 1.0).
    * ``response_max_tokens`` 16 -> ``max_completion_length`` (default 512): PPO samples 16 tokens and cuts each response to a length drawn
      from 4-16 (``LengthSampler(4, 16)``, ``stop_at_eos=False``). TRL cannot draw lengths and always stops a
      completion at its first EOS; 16 is the same generation length and PPO's longest response.
    * ``temperature`` 1.0, ``top_k`` 0, ``top_p`` 1.0 (the 1.16 defaults, set explicitly): sample the full
      distribution, as PPO does, so that the KL estimates are unbiased. ``min_p`` None, ``repetition_penalty``
      1.0 (defaults).
    * ``init_kl_coef`` 0.2 -> ``beta`` (GRPO default 0.0 = no KL term and no reference model; RLOO default 0.05). PPO starts at 0.2
      (adaptive, but over 5 minutes Ziegler's controller moves it by at most a factor 1.00128 per 64 rollouts).
      RLOO's reward ``score - beta * sum_t k1_t`` is PPO's summed per-token reward, so the same beta means the same
      objective. GRPO puts ``beta * k3_t`` in the per-token loss next to ``-A * ratio_t``, with A the score
      divided by its group's std; the same beta weighs the KL against a score of about unit scale.
    * ``clip_range`` 0.2 -> ``epsilon`` (default 0.2). GRPO keeps its defaults ``loss_type`` "dapo" (token
      losses averaged over all tokens of the mini-batch, like our ``clipped_policy_loss``), ``scale_rewards``
      "group" and ``use_bias_correction_kl`` True; RLOO keeps ``normalize_advantages`` False.
    * ``disable_dropout`` True (default False; our policies have dropout 0 anyway), ``gradient_checkpointing``
      False (default True: memory for time, useless for 5 M parameters), ``bf16`` False (default None = on
      where supported), ``use_cpu`` True, ``seed`` (default 42).
    * Plumbing: ``logging_steps`` = Adam steps per round (default 10), so each log entry is one round;
      ``save_strategy`` "no" (default "steps": a checkpoint every 500 steps); ``report_to`` "none";
      ``disable_tqdm`` = not ``progress``; ``max_steps`` = rounds x Adam steps per round (default -1, i.e.
      ``num_train_epochs`` 3).

    ``overrides`` go to the config unchanged (TRL names, e.g. ``loss_type="grpo"``).
    """
    if algorithm not in TRAINERS:
        raise ValueError(f"algorithm must be one of {sorted(TRAINERS)}, got {algorithm!r}")
    ppo = ppo or get_config().ppo
    if ppo.batch_size % ppo.mini_batch_size or ppo.batch_size % num_generations:
        raise ValueError(f"batch_size={ppo.batch_size} must be divisible by mini_batch_size={ppo.mini_batch_size} "
                         f"and by num_generations={num_generations}.")
    steps_per_generation = ppo.batch_size // ppo.mini_batch_size
    updates_per_round = steps_per_generation * ppo.ppo_epochs
    settings = dict(
        output_dir=str(output_dir), seed=ppo.seed, use_cpu=use_cpu, bf16=False, gradient_checkpointing=False,
        disable_dropout=True, per_device_train_batch_size=ppo.mini_batch_size, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_generation,
        num_iterations=ppo.ppo_epochs, num_generations=num_generations,
        max_completion_length=ppo.response_max_tokens, temperature=ppo.temperature, top_k=ppo.top_k,
        top_p=ppo.top_p, beta=ppo.init_kl_coef, epsilon=ppo.clip_range, learning_rate=ppo.learning_rate,
        lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=ppo.max_grad_norm,
        max_steps=ppo.max_steps * updates_per_round, logging_steps=updates_per_round,
        save_strategy="no", report_to="none", disable_tqdm=not progress,
    )
    settings.update(overrides)
    config_cls = TRAINERS[algorithm][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advisory warnings about GPU-only options
        return config_cls(**settings)


def _history(log_history: list[dict], reward_name: str, updates_per_round: int, batch_size: int) -> list[dict]:
    """One row per round from TRL's log entries (one entry per round, see ``logging_steps``)."""
    rows = []
    for entry in log_history:
        score = entry.get(f"rewards/{reward_name}/mean")
        if score is None:  # the end-of-training summary (train_runtime, ...)
            continue
        step = entry["step"] // updates_per_round
        kl = entry.get("kl")
        length = entry.get("completions/mean_length")
        rows.append({
            "step": step,
            "seconds": entry.get("seconds"),
            "episodes": step * batch_size,
            "score": score,  # the reward model's normalised score, as PPO's "score"
            "score_std": entry.get(f"rewards/{reward_name}/std"),
            "reward": entry.get("reward"),  # GRPO: = score; RLOO: score - beta * sum_t k1_t
            "kl": kl,  # TRL's per-token mean (GRPO: k3, averaged over the round's Adam steps; RLOO: k1 at sampling)
            "kl_per_response": None if kl is None or length is None else kl * length,  # ~ PPO's "kl" (sum per response)
            "response_length": length,
            "eos_free_fraction": entry.get("completions/clipped_ratio"),  # completions cut at 16 tokens, no EOS
            "entropy": entry.get("entropy"),
            "loss": entry.get("loss"),
            "grad_norm": entry.get("grad_norm"),
            "learning_rate": entry.get("learning_rate"),
        })
    return rows


def train_trl(algorithm: str, output_dir: str | Path, ppo: PPOConfig | None = None, *, policy: str | Path | None = None,
              reward_fn: Callable | None = None, prompts: Dataset | None = None, num_generations: int = 4,
              progress: bool = False, evaluator=None, eval_every: int | None = None, until_step: int | None = None,
              keep_samples: int = 0, **trl_overrides) -> dict:
    """Train the policy with TRL's GRPO (``algorithm="grpo"``) or RLOO (``"rloo"``); save it; return the history.

    Args:
        output_dir: the trained policy (weights, config, tokenizer) and ``run_card_<algorithm>.json`` go here.
        policy: a profile name (None: the current profile's SFT policy, `rlhf_helpers.sources.resolve_source`) or a
            directory holding a saved ``GPT2LMHeadModel`` and its
            tokenizer. TRL loads it from there, and with ``beta > 0`` loads the frozen reference from the same path.
        reward_fn: a TRL reward function; default `reward_function()` over the shipped tiny reward model.
        prompts: a dataset with a ``prompt`` column; default `trl_prompt_dataset` (our PPO's train prompts).
        ppo: the PPO settings to mirror (`trl_config`); its ``max_minutes`` is the wall-clock budget of the
            training loop (model loading excluded, as in PPO), its ``max_steps`` the most rounds (the learning rate
            decays to 0 over them). Default: the current profile's.
        progress: show TRL's tqdm bar.
        evaluator, eval_every, keep_samples: evaluate the policy with `evaluator` (a `HeldOutEvaluator`) at the
            start, every `eval_every` rounds and at the end (`trl_evaluation.HeldOutCallback`); the rows come back
            under ``"evaluations"`` and in ``<output_dir>/evaluations.json``.
        until_step: stop after this many rounds while the learning rate still decays over ``ppo.max_steps`` (as
            notebook 07's PPO runs stop at step 150 of 200); None = run to ``max_steps`` or the budget.
        ``num_generations`` and ``trl_overrides``: see `trl_config`.
    Returns:
        ``{"algorithm", "output_dir", "steps"`` (rounds completed), ``"optimizer_steps"`` (Adam steps),
        ``"episodes"`` (completions trained on), ``"train_seconds"``, ``"stopped_by_budget"``, ``"n_prompts"``,
        ``"history"`` (one dict per round: step, seconds since training began, episodes, score, score_std,
        reward, kl, kl_per_response, response_length, eos_free_fraction, entropy, loss, grad_norm,
        learning_rate), ``"log_history"`` (TRL's raw entries), ``"settings"`` (the TRL config)``}``.
    """
    ppo = ppo or get_config().ppo
    seed, batch_size = ppo.seed, ppo.batch_size
    policy_dir = resolve_source("policy", policy)
    tokenizer = load_tokenizer(policy_dir)
    set_seed(seed)
    if reward_fn is None:
        reward_fn = reward_function()
        reward_fn.scorer.check_same_tokenizer(tokenizer)
    if prompts is None:
        prompts = trl_prompt_dataset(tokenizer, get_config(seed=seed), split="train")
    args = trl_config(algorithm, output_dir, ppo, num_generations=num_generations, progress=progress, **trl_overrides)
    updates_per_round = args.steps_per_generation * args.num_iterations
    budget = WallClockBudget(ppo.max_minutes, every=updates_per_round)
    callbacks = [budget]
    held_out = None
    if evaluator is not None or until_step is not None:
        from .trl_evaluation import HeldOutCallback, StopAt

        stop_at = None if until_step is None else until_step * updates_per_round
        if evaluator is not None:
            held_out = HeldOutCallback(evaluator, (eval_every or ppo.max_steps) * updates_per_round, output_dir,
                                       step_unit=updates_per_round, stop_at=stop_at, keep_samples=keep_samples)
            callbacks.append(held_out)
        else:
            callbacks.append(StopAt(stop_at))
    trainer_cls = TRAINERS[algorithm][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_cls(model=str(policy_dir), reward_funcs=[reward_fn], args=args, train_dataset=prompts,
                              processing_class=tokenizer, callbacks=callbacks)
    check_tokenizer_matches(trainer.model, tokenizer, where=f"in {policy_dir}")
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    with warnings.catch_warnings():
        # transformers 5 deprecates a name TRL 1.16 still calls; not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.train()
    train_seconds = budget.elapsed() - (held_out.eval_seconds if held_out else 0.0)
    trainer.save_model(str(output_dir))  # weights, config and the tokenizer (processing_class)

    reward_name = getattr(reward_fn, "__name__", "reward")
    history = _history(trainer.state.log_history, reward_name, updates_per_round, batch_size)
    steps = trainer.state.global_step // updates_per_round
    settings = {k: str(v) if k == "lr_scheduler_type" else v
                for k, v in args.to_dict().items() if k in REPORTED_SETTINGS}
    result = {"algorithm": algorithm, "output_dir": str(output_dir), "steps": steps,
              "optimizer_steps": trainer.state.global_step, "episodes": steps * batch_size,
              "train_seconds": round(train_seconds, 3), "stopped_by_budget": budget.stopped,
              "n_prompts": len(prompts), "history": history, "log_history": list(trainer.state.log_history),
              "settings": settings, "evaluations": held_out.rows if held_out else None}
    write_run_card(output_dir, algorithm, {"policy": str(policy_dir), "seed": seed, "max_minutes": ppo.max_minutes,
                                           "trainer": trainer_cls.__name__, "trl": settings},
                   metrics={k: result[k] for k in ("steps", "optimizer_steps", "episodes", "stopped_by_budget",
                                                   "n_prompts", "history")},
                   timings={"train": result["train_seconds"]})
    return result
