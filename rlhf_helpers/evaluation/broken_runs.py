"""Broken PPO runs: notebook 06's recipe with one bug each, for notebook 07's "Debug this run" capstone.

A PPO run with a bug rarely crashes: it trains, prints numbers, and ends with a policy. What gives a bug away is
the *shape* of the per-step statistics that `PPOTrainer` records (``trainer.state["history"]``: score, kl, kl_coef,
entropy, clip_fraction, approx_kl, value_loss, explained_variance, ...). `BUGS` lists named, documented ways to
break the recipe, each injected **from outside** the trainer — the PPO code of ``rlhf_helpers.ppo`` is never edited:

* a change to the config (``vf_coef=0``, ``top_p=0.9``),
* another reward function (the reward model's raw score instead of the normalised one),
* another reference model (the policy itself instead of a frozen copy of the SFT model),
* or a function the trainer calls swapped, for the duration of the run, for a broken one (`injected`): the
  trainer looks ``per_token_rewards`` up in `rlhf_helpers.ppo.rollout`'s namespace and ``masked_whiten_shards`` /
  ``clipped_policy_loss`` in `rlhf_helpers.ppo.trainer`'s, on the fast path as on the plain one, so replacing the
  name there changes what the next step runs.

`broken_run` trains one of them (resumable); ``scripts/debug_runs.py`` runs them all into the run card
``rlhf_helpers/assets/tiny/results/run_card_debug.json`` under neutral labels ("run A", ...; `run_labels`) with the
answer key stored apart, so notebook 07 can plot the runs without saying which is which.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..ppo import rollout as rollout_module
from ..ppo import trainer as trainer_module
from ..ppo.advantages import masked_whiten_shards
from ..ppo.kl import per_token_rewards
from ..ppo.losses import clipped_policy_loss
from ..ppo.value_head import response_logprobs_and_values
from ..policy.generation import filter_logits

__all__ = ["Bug", "BUGS", "HEALTHY", "STATISTICS", "injected", "make_trainer", "broken_run", "run_labels"]

HEALTHY = "healthy"

STATISTICS = {
    "score": "score (reward model, mean)",
    "kl": "KL to the reference (nats / response)",
    "kl_coef": "KL coefficient β",
    "entropy": "entropy (nats / token)",
    "clip_fraction": "clip fraction",
    "value_loss": "value loss",
    "explained_variance": "explained variance",
}
"""The per-step statistics the notebook plots, with their titles (keys of ``PPOTrainer``'s history)."""

KEPT = ("step", "score", "kl", "kl_coef", "reward_total", "entropy", "clip_fraction", "approx_kl", "ratio_mean",
        "policy_loss", "value_loss", "value_clip_fraction", "explained_variance", "advantage_mean",
        "response_length", "skipped_minibatches", "seconds")
"""The history keys a run card keeps per step (the timings of each phase are left out)."""


# ----------------------------------------------------------------------------------------------
# The broken replacements of the trainer's functions (each calls the correct one and breaks one thing)
# ----------------------------------------------------------------------------------------------


def _kl_rewarded(scores, logprobs, ref_logprobs, mask, kl_coef, estimator="k1"):
    """`per_token_rewards` with the penalty's sign flipped: ``+beta * kl_t`` instead of ``-beta * kl_t``.

    The correct rewards are ``-beta * kl`` plus the score at the last token; adding ``2 * beta * kl`` turns the
    penalty into a bonus for drifting away from the reference. The KL it returns (and the trainer logs) is right."""
    rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, estimator)
    return rewards + 2 * kl_coef * kl, kl


def _advantages_negated(parts, all_sum=None):
    """`masked_whiten_shards` with the sign flipped: each mini-batch's advantages whitened, then negated, so the
    update makes the *worse* than average tokens more likely."""
    return [-whitened for whitened in masked_whiten_shards(parts, all_sum)]


NUCLEUS = 0.9
"""The top-p of the `top_p_mismatch` bug."""


def _nucleus_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask, temperature=1.0,
                                 fast=False):
    """`response_logprobs_and_values` whose log-probs are those of the *sampler*: the top-p = `NUCLEUS` nucleus of
    each next-token distribution, renormalised, as a trainer that keeps the sampler's scores would have them.

    Used for the rollout's pass only, so the rollout's ("old") log-probs come from the nucleus while the
    reference's and the update's come from the full distribution. Shapes as `response_logprobs_and_values`:
    logprobs ``[B, R]`` (0 on padding); the second output is the log-softmax at the M real tokens ``[M, V]`` on
    the fast path, the logits ``[B, R, V]`` on the plain one; values ``[B, R]``."""
    logprobs, scores, values = response_logprobs_and_values(policy, query_ids, query_mask, response_ids,
                                                            response_mask, temperature, fast=fast)
    mask = response_mask.bool()
    rows = scores if fast else scores[mask]  # [M, V]: one next-token distribution per real response token
    nucleus = torch.log_softmax(filter_logits(rows.float(), top_p=NUCLEUS), dim=-1)  # -inf outside the nucleus
    picked = nucleus.gather(-1, response_ids[mask].long().unsqueeze(-1)).squeeze(-1)  # [M]
    # a token that float rounding puts just outside the recomputed nucleus keeps its full log-prob (not -inf)
    picked = torch.where(torch.isfinite(picked), picked, logprobs[mask].float())
    return logprobs.masked_scatter(mask, picked.to(logprobs.dtype)), scores, values


def _ratio_always_one(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    """`clipped_policy_loss` with the "old" log-probs taken from the *current* policy (detached) instead of the
    rollout's: the ratio is exactly 1, so the clip never acts, and the loss is the plain policy gradient however far
    the update has moved the policy from the one that sampled the batch."""
    return clipped_policy_loss(logprobs, logprobs.detach(), advantages, mask, clip_range)


# ----------------------------------------------------------------------------------------------
# The bugs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bug:
    """One way to break notebook 06's recipe, injected without editing the trainer.

    `what`: what is broken, in one sentence (the answer key's text). `config`: `PPOConfig` fields changed.
    `raw_scores`: the reward model's unnormalised score as the reward (``RewardScorer.score_raw``).
    `reference_is_policy`: the policy's own LM passed as the reference (the same object, not a frozen copy).
    `patches`: ``(module, name, replacement)``: `injected` puts `replacement` at ``module.name`` during the run.
    """

    name: str
    what: str
    config: dict = field(default_factory=dict)
    raw_scores: bool = False
    reference_is_policy: bool = False
    patches: tuple[tuple[object, str, Callable], ...] = ()


BUGS: dict[str, Bug] = {bug.name: bug for bug in [
    Bug(HEALTHY, "nothing: notebook 06's recipe as it is."),
    Bug("kl_sign_flipped", "the KL penalty's sign is flipped: each token earns +β·KL instead of paying −β·KL, so "
        "moving away from the SFT model is rewarded.", patches=((rollout_module, "per_token_rewards", _kl_rewarded),)),
    Bug("reference_is_policy", "the reference is the policy itself (the same model object, not a frozen copy of the "
        "SFT model): the KL is always 0, so there is no leash.", reference_is_policy=True),
    Bug("raw_scores", "the reward model's raw scores are used, not normalised (mean 0, std 1 on the SFT policy's "
        "samples): the score is shifted and about 2.8 times as spread out.", raw_scores=True),
    Bug("no_value_loss", "the value loss is switched off (vf_coef = 0): the value head never learns and stays at its "
        "initial zeros.", config={"vf_coef": 0.0}),
    Bug("advantages_negated", "the advantages are whitened with the wrong sign: PPO makes the worse-than-average "
        "tokens more likely.", patches=((trainer_module, "masked_whiten_shards", _advantages_negated),)),
    Bug("top_p_mismatch", f"responses are sampled with top-p = {NUCLEUS} and the rollout keeps the sampler's "
        "log-probs (the nucleus, renormalised), while the reference's and the update's come from the full "
        "distribution: the KL and the ratio compare two different distributions.",
        config={"top_p": NUCLEUS},
        patches=((rollout_module, "response_logprobs_and_values", _nucleus_logprobs_and_values),)),
    Bug("ratio_always_one", "the update's \"old\" log-probs are recomputed from the current policy instead of taken "
        "from the rollout: the ratio is always 1 and PPO's clip never acts.",
        patches=((trainer_module, "clipped_policy_loss", _ratio_always_one),)),
]}
"""Every bug of the capstone, and the healthy run, by name."""


@contextlib.contextmanager
def injected(bug: Bug | str):
    """While inside, the functions `bug` replaces are replaced (in the namespace the trainer looks them up in);
    restored on exit, also after an error. A name that is not there any more is an error, not a silent no-op."""
    bug = BUGS[bug] if isinstance(bug, str) else bug
    saved = []
    try:
        for module, name, replacement in bug.patches:
            if not hasattr(module, name):
                raise AttributeError(f"{module.__name__} has no {name!r} any more: the bug {bug.name!r} would not "
                                     "be injected; update rlhf_helpers/evaluation/broken_runs.py")
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, replacement)
        yield bug
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def make_trainer(bug: Bug | str, sft_lm, tokenizer, scorer, prompts, config, output_dir, **trainer_kwargs):
    """A `PPOTrainer` from `sft_lm` with `bug`'s config, reward and reference (its patches come with `injected`).

    `sft_lm` is not changed: the policy (and the reference) are copies of it. `scorer`: an object with
    ``score(texts) -> [N]`` (normalised) and ``score_raw(texts) -> [N]`` (`RewardScorer`). `config`: the
    `PPOConfig` of the healthy recipe; the bug's changes go on top."""
    from ..ppo import PPOTrainer
    from ..ppo.value_head import PolicyWithValueHead

    bug = BUGS[bug] if isinstance(bug, str) else bug
    config = dataclasses.replace(config, **bug.config)
    lm = copy.deepcopy(sft_lm).requires_grad_(True)
    policy = PolicyWithValueHead(lm)
    reference = lm if bug.reference_is_policy else sft_lm
    reward_fn = scorer.score_raw if bug.raw_scores else scorer.score
    trainer = PPOTrainer(policy, reference, tokenizer, reward_fn, prompts, config, output_dir, **trainer_kwargs)
    if bug.reference_is_policy:
        # the trainer freezes its reference (requires_grad_(False)); here that is the policy's LM, which must train
        trainer.accelerator.unwrap_model(trainer.policy).requires_grad_(True)
    return trainer


def broken_run(course, bug: Bug | str, output_dir, steps: int, progress: bool = True) -> dict:
    """The first `steps` steps of notebook 06's recipe (`fast_recipe`, seed 0) with `bug`, from the shipped SFT
    policy against the shipped reward model; resumable in `output_dir` (checkpoints every 10 steps).

    Returns ``{"steps", "train_seconds", "mixed_precision", "history", "samples"}``: `history` one dict per step with
    the `KEPT` statistics, `samples` the first three query + response texts of the last step. The bug's name is not
    in it (the run card keeps it apart)."""
    from .sweep import fast_recipe

    bug = BUGS[bug] if isinstance(bug, str) else bug
    trainer = make_trainer(bug, course.sft, course.tokenizer, course.scorer, course.train_prompts,
                           fast_recipe(course.config.ppo, seed=0), output_dir)
    trainer.maybe_resume()
    with injected(bug):
        if trainer.state["step"] < steps:
            trainer.train(progress=progress, stop_after=steps - trainer.state["step"])
    history = trainer.state["history"][:steps]
    return {"steps": len(history), "train_seconds": round(trainer.state["train_seconds"], 1),
            "mixed_precision": trainer.mixed_precision,
            "history": [{k: _rounded(h[k]) for k in KEPT if k in h} for h in history],
            "samples": list(history[-1].get("samples", []))}


def _rounded(value):
    return float(f"{value:.6g}") if isinstance(value, float) else value


def run_labels(names, seed: int = 7) -> dict[str, str]:
    """Neutral labels for the runs: ``{"run A": name, ...}``, the names shuffled with a fixed `seed` (so the healthy
    run is somewhere among them, and the same place every time)."""
    names = list(names)
    random.Random(seed).shuffle(names)
    return {f"run {chr(ord('A') + i)}": name for i, name in enumerate(names)}
