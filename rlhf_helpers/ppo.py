"""PPO for RLHF, from scratch: rollouts → rewards → advantages → clipped updates, on `accelerate`.

One PPO *step* (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022):

1. **Rollout.** Draw a batch of prompts; the policy samples a response of 4–16 tokens for each
   (top-k 0, top-p 1: the full distribution, so the KL estimate stays unbiased).
2. **Forward passes.** Log-probs and values of the sampled tokens under the policy (the "old" policy of
   this step) and log-probs under the frozen reference (the SFT model), at the sampling temperature.
3. **Rewards.** The reward model's normalised score of query + response at the last response token, and
   ``-beta * KL_t`` at every token (`rlhf_helpers.kl.per_token_rewards`).
4. **Advantages.** GAE(γ, λ) with the value head as baseline (`rlhf_helpers.advantages.compute_gae`).
5. **Update.** Several epochs over shuffled mini-batches of the clipped surrogate + ``vf_coef`` × the
   clipped value loss, advantages whitened per mini-batch, gradient clipping, and a guard that skips a
   mini-batch whose mean ratio explodes.
6. **KL control.** A fixed beta, or Ziegler et al.'s adaptive controller steering the KL to a target.

The implementation details that matter (Huang et al. 2023, "The N Implementation Details of RLHF with
PPO"; Ziegler et al. 2019), and where they are in this code:

1. Reward model and value function read query + response; the score lands on the last token → `per_token_rewards`.
2. Left-padded prompts, attention masks and position ids from the mask → `generation.generate`, `value_head`.
3. Log-probs recomputed from ``logits / temperature`` with the sampling temperature → `response_logprobs_and_values`.
4. Value head initialised to zero; no dropout in policy, reference or value passes → `value_head.PolicyWithValueHead`.
5. Reward model output normalised (mean 0, std 1) on samples of the reference policy → the reward model.
6. Per-token KL penalty; γ = 1, λ = 0.95; advantages whitened per mini-batch → `PPOConfig`, `ppo_update`.
7. Clipped value loss; adaptive KL; learning rate annealed; seeds per process → `PPOConfig`, `PPOTrainer`.
8. Optional: penalise responses that never produced EOS (``missing_eos_penalty``).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .advantages import compute_gae, explained_variance, masked_mean, masked_whiten
from .data import LengthSampler
from .generation import generate
from .kl import AdaptiveKLController, FixedKLController, per_token_rewards
from .ppo_losses import clipped_policy_loss, clipped_value_loss, entropy_from_logits
from .runcard import Timer, write_run_card
from .value_head import response_logprobs_and_values


@dataclass
class PPOConfig:
    """PPO settings. Defaults are the tiny profile's; the historical TRL (0.11) value is given beside each."""

    steps: int = 200
    """PPO steps (rollout + update) at most; the learning rate anneals linearly to 0 over them. On 2 idle CPU
    cores the tiny profile does 180-200 steps in 5 minutes (bf16), so either limit may end a run."""
    max_minutes: float | None = 5.0
    """Wall-clock budget for the steps; the run stops cleanly (and saves) when it is spent."""
    batch_size: int = 64
    """Rollouts (prompt + response) per step (TRL: 128; smaller steps = more updates per minute on a CPU)."""
    mini_batch_size: int = 16
    """Rollouts per gradient step; must divide batch_size (TRL: 128, i.e. one mini-batch)."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts (TRL: 4)."""
    learning_rate: float = 5e-5
    """Adam learning rate, annealed linearly to 0 over `steps` (TRL: 1.41e-5 for the 124M gpt2).
    The tiny profile's 5M model moves less per step, so it takes a larger one. 1e-4 was worse in 5-minute
    runs: the KL reached its budget of 6 nats by step 40 at a lower reward (noise, not progress)."""
    response_min_tokens: int = 4
    """Shortest response, new tokens (TRL: LengthSampler(4, 16), i.e. 4)."""
    response_max_tokens: int = 16
    """Longest response, new tokens, included (TRL's LengthSampler(4, 16) excluded 16)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are recomputed with the same one (Huang et al. detail 3)."""
    top_k: int = 0
    """0: no top-k. Truncated sampling would bias the KL estimate (negative KL)."""
    top_p: float = 1.0
    """1.0: no nucleus sampling, for the same reason."""
    stop_at_eos: bool = False
    """False: every response has its drawn length, EOS or not (the seed recipe's fixed lengths). IMDb
    reviews are far longer than 16 tokens, and when a response could end at EOS the tiny policy learned,
    within 5 minutes, to emit EOS after 2-3 tokens (mean length 3.4): a short episode pays less
    per-token KL penalty. True: stop at EOS (then consider `missing_eos_penalty`)."""
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
    cliprange: float = 0.2
    """PPO ratio clip epsilon (TRL: 0.2)."""
    cliprange_value: float = 0.2
    """Value clip around the rollout's values (TRL: 0.2)."""
    vf_coef: float = 0.1
    """Weight of the value loss in the shared-backbone loss (TRL: 0.1)."""
    ratio_threshold: float = 10.0
    """Skip a mini-batch whose mean ratio exceeds this: a guard against exploding updates (TRL: 10)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm (TRL: off by default; Huang et al. recommend clipping)."""
    missing_eos_penalty: float | None = None
    """If set, subtract this from the score of responses without EOS (Huang et al. detail 8). Off:
    IMDb reviews are longer than 16 tokens, so a cut-off response is the normal case here."""
    score_clip: float | None = None
    """If set, clip normalised scores to [-score_clip, score_clip] (TRL option; off)."""
    mixed_precision: str = "auto"
    """"bf16", "fp16", "no", or "auto" (bf16 where the processor has fast bf16, as in the SFT loop). Sampling
    and both passes of the update run under autocast, so the "old" log-probs and the update's log-probs come
    from the same computation; weights, optimiser state, log-softmax and losses stay float32. On these 2 CPU
    cores bf16 halves the time of a forward + backward pass (measured: 0.09 s -> 0.045 s for 16 rollouts)."""
    checkpoint_every: int = 10
    """Steps between resumable checkpoints."""
    seed: int = 0
    """Seed of prompt order, response lengths and sampling (each a pure function of seed and step)."""

    def validate(self, context_length: int | None = None) -> None:
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"batch_size={self.batch_size} is not divisible into mini-batches of "
                             f"{self.mini_batch_size}: choose a mini_batch_size that divides it.")
        if self.init_kl_coef < 0:
            raise ValueError(f"init_kl_coef (beta) must be >= 0, got {self.init_kl_coef}.")
        if not 1 <= self.response_min_tokens <= self.response_max_tokens:
            raise ValueError(f"response length bounds [{self.response_min_tokens}, {self.response_max_tokens}] "
                             "are empty or reversed.")
        if context_length is not None and self.response_max_tokens + 8 > context_length:
            raise ValueError(f"response_max_tokens={self.response_max_tokens} plus an 8-token prompt exceeds the "
                             f"model's context of {context_length} tokens.")


@dataclass
class Rollout:
    """One batch of experience. Shapes: B rollouts, P prompt tokens (left-padded), R response tokens."""

    query_ids: torch.Tensor  # [B, P]
    query_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R]
    logprobs: torch.Tensor  # [B, R] under the policy at rollout time ("old")
    ref_logprobs: torch.Tensor  # [B, R] under the frozen reference
    values: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B] normalised reward-model scores (after penalties / clipping)
    raw_scores: torch.Tensor  # [B] the reward model's output before normalisation, if it gives one
    rewards: torch.Tensor  # [B, R] per-token rewards: -beta * KL, + score at the last token
    kl: torch.Tensor  # [B, R] per-token KL estimates
    advantages: torch.Tensor  # [B, R]
    returns: torch.Tensor  # [B, R]
    queries: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# The pieces of one step
# ----------------------------------------------------------------------------------------------


def sample_prompt_batch(prompts: list[list[int]], batch_size: int, step: int, seed: int) -> list[list[int]]:
    """The prompts of `step`: a fresh seeded permutation per pass over the prompts (resumable)."""
    per_epoch = len(prompts) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(prompts)} prompts.")
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(prompts))
    return [prompts[i] for i in order[position * batch_size : (position + 1) * batch_size]]


def truncate_responses(response_ids, response_mask, lengths: torch.Tensor, pad_id: int):
    """Cut row i after ``lengths[i]`` tokens (pad + mask the rest): per-rollout response lengths.

    Sampling 16 tokens and keeping the first L is the same as sampling L tokens, so one batched
    generate call serves every length of `LengthSampler(4, 16)`.
    """
    keep = torch.arange(response_ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    mask = response_mask * keep.to(response_mask.dtype)
    ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_id))
    width = int(mask.sum(1).max().item())
    return ids[:, :width], mask[:, :width]


@torch.no_grad()
def collect_rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef: float, config: PPOConfig,
                    step: int, timer: Timer | None = None, autocast=None) -> Rollout:
    """Steps 1–4 above for one batch of prompts (token-id lists). No gradients.

    `autocast`: a context-manager factory (e.g. ``accelerator.autocast``) for sampling and the log-prob /
    value passes; the reward function runs outside it, at its own precision.
    """
    timer = timer or Timer()
    autocast = autocast or contextlib.nullcontext
    device = next(policy.parameters()).device
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    with timer("generate"), autocast():
        out = generate(policy.lm, tokenizer, prompts, max_new_tokens=config.response_max_tokens,
                       temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, generator=generator,
                       stop_at_eos=config.stop_at_eos)
        sampler = LengthSampler(config.response_min_tokens, config.response_max_tokens, seed=config.seed * 7_919 + step)
        lengths = torch.tensor([sampler() for _ in prompts])
        response_ids, response_mask = truncate_responses(out.response_ids, out.response_mask, lengths, tokenizer.pad_token_id)
        if int(response_mask.sum(1).min()) == 0:
            raise RuntimeError("A response is empty (EOS as the first token). Use responses of >= 1 token.")
        query_ids, query_mask = out.query_ids.to(device), out.query_mask.to(device)
        response_ids, response_mask = response_ids.to(device), response_mask.to(device)
        responses = tokenizer.batch_decode([ids[m.bool()] for ids, m in zip(response_ids, response_mask)],
                                           skip_special_tokens=True)
    with timer("score"):
        raw = reward_fn([q + r for q, r in zip(out.prompts, responses)])
        raw = torch.as_tensor(raw, dtype=torch.float32, device=device).reshape(-1)
        if not torch.isfinite(raw).all():
            raise FloatingPointError(f"The reward function returned non-finite scores at step {step}.")
        scores = raw.clone()
        if config.missing_eos_penalty is not None:
            has_eos = ((response_ids == tokenizer.eos_token_id) & response_mask.bool()).any(1)
            scores = scores - config.missing_eos_penalty * (~has_eos).float()
        if config.score_clip is not None:
            scores = scores.clamp(-config.score_clip, config.score_clip)
    with timer("forward"), autocast():
        logprobs, _, values = response_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask,
                                                           config.temperature)
        from .logprobs import response_logprobs

        ref_logprobs = response_logprobs(reference, query_ids, query_mask, response_ids, response_mask, config.temperature)
        rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, response_mask, kl_coef, config.kl_estimator)
        advantages, returns = compute_gae(rewards, values, response_mask, config.gamma, config.lam)
    return Rollout(query_ids, query_mask, response_ids, response_mask, logprobs, ref_logprobs, values, scores, raw,
                   rewards, kl, advantages, returns, out.prompts, responses)


def ppo_update(policy, optimizer, accelerator, rollout: Rollout, config: PPOConfig, step: int) -> dict:
    """Step 5: `ppo_epochs` passes of shuffled mini-batches over `rollout`. Returns averaged statistics."""
    # eval mode during the update too: gradients still flow, and any dropout (hub GPT-2 has 0.1) stays
    # off, so the update sees exactly the network that produced the rollout (Huang et al. detail 4).
    policy.eval()
    batch_size = rollout.query_ids.shape[0]
    generator = torch.Generator().manual_seed(config.seed * 999_983 + step)
    stats: dict[str, list[float]] = {}
    skipped = 0
    for _ in range(config.ppo_epochs):
        order = torch.randperm(batch_size, generator=generator)
        for start in range(0, batch_size, config.mini_batch_size):
            idx = order[start : start + config.mini_batch_size].to(rollout.query_ids.device)
            mask = rollout.response_mask[idx]
            with accelerator.autocast():  # the same precision as the rollout's passes
                logprobs, logits, values = response_logprobs_and_values(
                    policy, rollout.query_ids[idx], rollout.query_mask[idx], rollout.response_ids[idx], mask,
                    config.temperature)
            advantages = masked_whiten(rollout.advantages[idx], mask)
            pg_loss, pg_stats = clipped_policy_loss(logprobs, rollout.logprobs[idx], advantages, mask, config.cliprange)
            vf_loss, vf_stats = clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask,
                                                   config.cliprange_value)
            loss = pg_loss + config.vf_coef * vf_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"PPO loss is {loss.item()} at step {step}.")
            if pg_stats["ratio_mean"] > config.ratio_threshold:
                skipped += 1  # the policy moved too far from the rollout's: this gradient would be garbage
                continue
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                entropy = masked_mean(entropy_from_logits(logits), mask).item()
            for key, value in {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "entropy": entropy,
                               **pg_stats, **vf_stats}.items():
                stats.setdefault(key, []).append(float(value))
    summary = {k: float(np.mean(v)) for k, v in stats.items()}
    summary["skipped_minibatches"] = skipped
    return summary


def rollout_statistics(rollout: Rollout, kl_coef: float) -> dict:
    """Per-step numbers worth plotting: reward, KL, lengths, value fit."""
    mask = rollout.response_mask
    kl_per_response = (rollout.kl * mask).sum(1)
    return {
        "score": rollout.scores.mean().item(),
        "raw_score": rollout.raw_scores.mean().item(),
        "kl": kl_per_response.mean().item(),
        "kl_coef": kl_coef,
        "reward_total": (rollout.rewards * mask).sum(1).mean().item(),
        "response_length": mask.sum(1).float().mean().item(),
        "explained_variance": float(explained_variance(rollout.values, rollout.returns, mask)),
        "advantage_mean": masked_mean(rollout.advantages, mask).item(),
    }


# ----------------------------------------------------------------------------------------------
# The trainer: steps in a loop, with statistics, checkpoints and resume
# ----------------------------------------------------------------------------------------------


class PPOTrainer:
    """Runs PPO steps on `accelerate`; checkpoints every `checkpoint_every` steps and resumes.

    Args:
        policy: `PolicyWithValueHead` (trained).
        reference: frozen `GPT2LMHeadModel` (the SFT policy), never updated.
        tokenizer: the policy's tokenizer.
        reward_fn: ``texts -> FloatTensor[N]`` (normalised scores), e.g. ``RewardScorer.score``.
        prompts: token-id lists to draw prompts from (``build_dataset(..., split="train")["input_ids"]``).
        output_dir: where checkpoints, the final policy and the run card go.
    """

    def __init__(self, policy, reference, tokenizer, reward_fn: Callable, prompts, config: PPOConfig,
                 output_dir: str | Path, mixed_precision: str | None = None, run_config: dict | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        config.validate(getattr(policy.config, "n_positions", None))
        scorer_tokenizer = getattr(getattr(reward_fn, "__self__", None), "tokenizer", None)
        if scorer_tokenizer is not None and scorer_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError("The reward model's tokenizer differs from the policy's. Train the reward model "
                             "from this policy (same tokenizer), or pass a reward_fn that tokenizes for itself.")
        self.config, self.tokenizer, self.reward_fn = config, tokenizer, reward_fn
        self.prompts = [list(map(int, p)) for p in prompts]
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoint"
        self.run_config = run_config or {}
        from .sft import resolve_mixed_precision

        # `mixed_precision` here overrides the config's (tests pin "no" for exact comparisons).
        self.mixed_precision = resolve_mixed_precision(mixed_precision or config.mixed_precision)
        self.accelerator = Accelerator(mixed_precision=self.mixed_precision)
        set_seed(config.seed + self.accelerator.process_index)  # separate seeds per process (detail 7)
        optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
        # anneal the learning rate linearly to 0 over the planned steps (Huang et al. detail 7)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / config.steps))
        self.policy, self.optimizer, self.scheduler = self.accelerator.prepare(policy, optimizer, scheduler)
        self.reference = reference.to(self.accelerator.device).eval().requires_grad_(False)
        if config.adaptive_kl:
            self.kl_controller = AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(config.init_kl_coef)
        self.state = {"step": 0, "seconds": 0.0, "history": []}
        self.timer = Timer()

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Model, value head, optimiser, scheduler, RNG (accelerate) + KL controller and history (JSON)."""
        if not self.accelerator.is_main_process:
            return
        tmp = self.checkpoint_dir.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.save_state(str(tmp))
        (tmp / "ppo_state.json").write_text(json.dumps({**self.state, "kl_controller": self.kl_controller.state_dict()}))
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        tmp.rename(self.checkpoint_dir)  # swap only once the new checkpoint is complete

    def maybe_resume(self) -> bool:
        """Load the last checkpoint in `output_dir` if there is one. Returns whether it resumed."""
        state_file = self.checkpoint_dir / "ppo_state.json"
        if not state_file.exists():
            return False
        self.accelerator.load_state(str(self.checkpoint_dir))
        saved = json.loads(state_file.read_text())
        self.kl_controller.load_state_dict(saved.pop("kl_controller"))
        self.state = saved
        return True

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> dict:
        step = self.state["step"]
        started = time.perf_counter()
        before = dict(self.timer.totals)
        policy = self.accelerator.unwrap_model(self.policy)
        prompts = sample_prompt_batch(self.prompts, self.config.batch_size, step, self.config.seed)
        policy.eval()
        rollout = collect_rollout(policy, self.reference, self.tokenizer, self.reward_fn, prompts,
                                  self.kl_controller.value, self.config, step, self.timer,
                                  autocast=self.accelerator.autocast)
        stats = rollout_statistics(rollout, self.kl_controller.value)
        with self.timer("update"):
            stats.update(ppo_update(self.policy, self.optimizer, self.accelerator, rollout, self.config, step))
        self.scheduler.step()
        # Ziegler et al.: steer with the mean KL per response; n_steps = rollouts in this batch.
        self.kl_controller.update(stats["kl"], self.config.batch_size)
        seconds = time.perf_counter() - started
        self.state["step"] = step + 1
        self.state["seconds"] += seconds
        phases = {f"time_{k}": self.timer.totals[k] - before.get(k, 0.0) for k in self.timer.totals}
        stats.update(step=step + 1, seconds=seconds, episodes_per_second=self.config.batch_size / seconds,
                     learning_rate=self.scheduler.get_last_lr()[0], **phases)
        stats["samples"] = [q + r for q, r in zip(rollout.queries[:3], rollout.responses[:3])]
        self.state["history"].append(stats)
        self.last_rollout = rollout
        return stats

    # -- the loop ---------------------------------------------------------------------------------
    def train(self, progress: bool = True, callback: Callable[[dict], None] | None = None,
              stop_after: int | None = None) -> list[dict]:
        """Run steps until `steps` or `max_minutes`; `stop_after` = at most this many steps in this call
        (to demonstrate an interruption). Checkpoints every `checkpoint_every` steps and at the end."""
        config = self.config
        bar = tqdm(total=config.steps, initial=self.state["step"], desc="PPO", disable=not progress)
        done_here = 0
        while self.state["step"] < config.steps:
            if config.max_minutes is not None and self.state["seconds"] >= 60 * config.max_minutes:
                break
            if stop_after is not None and done_here >= stop_after:
                break
            stats = self.step()
            done_here += 1
            bar.update(1)
            bar.set_postfix(score=f"{stats['score']:.2f}", kl=f"{stats['kl']:.2f}", beta=f"{stats['kl_coef']:.3f}")
            if callback is not None:
                callback(stats)
            if self.state["step"] % config.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        return self.state["history"]

    def save(self, directory: str | Path | None = None, metrics: dict | None = None) -> Path:
        """Save the trained policy (LM + value head + tokenizer) and a run card."""
        directory = Path(directory or self.output_dir)
        if self.accelerator.is_main_process:
            policy = self.accelerator.unwrap_model(self.policy)
            policy.save_pretrained(directory)
            self.tokenizer.save_pretrained(str(directory))
            history = [{k: v for k, v in h.items() if k != "samples"} for h in self.state["history"]]
            write_run_card(directory, "ppo", {**self.run_config, "ppo": asdict(self.config)},
                           metrics={**(metrics or {}), "steps": self.state["step"], "history": history},
                           timings={"train": round(self.state["seconds"], 1), **{k: round(v, 1) for k, v in self.timer.totals.items()}})
        return directory


PPO_PROFILES = {
    "tiny": {},
    # Real GPT-2 on a GPU: the historical TRL gpt2-sentiment settings (one pass over the 24,895 prompts).
    "gpt2": dict(steps=194, max_minutes=None, batch_size=128, mini_batch_size=32, learning_rate=1.41e-5,
                 checkpoint_every=20),
}
