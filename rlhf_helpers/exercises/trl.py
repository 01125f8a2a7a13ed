"""Checks of notebook 04's exercises: what TRL's GRPO and RLOO trainers compute, written by the learner.

* ``group_normalised_advantages``: GRPO's advantage, each reward centred and scaled within its prompt's group, against
  the three lines of TRL 1.16's `GRPOTrainer._generate_and_score_completions` written out here (`grpo_advantages`:
  the package has no function of its own for it, since it trains GRPO through TRL).
* ``grpo_loss``: GRPO's loss, the clipped term plus β·k3 per token with TRL's "grpo" or "dapo" normalisation, against
  `grpo_loss` written out here from TRL 1.16's `GRPOTrainer._compute_loss` (tests/test_exercises_04_05.py checks
  it against that method on a real trainer, and notebook 04 checks the learner's function against it too).
* ``rloo_advantages``: RLOO's leave-one-out baseline, against `rlhf_helpers.ppo.advantages.leave_one_out_advantages`.

Rewards come flat, ``[N * k]``, with the k completions of a prompt next to each other (TRL's ``RepeatSampler``).
"""

from __future__ import annotations

import torch

from ..ppo.advantages import leave_one_out_advantages as reference_leave_one_out
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_group_normalised_advantages", "check_grpo_loss", "check_rloo_advantages"]

GRPO_STD_EPS = 1e-4  # TRL 1.16: advantages / (std_rewards + 1e-4)


# ----------------------------------------------------------------------------------------------
# Exercise 4.1: GRPO's group-normalised advantages
# ----------------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``[N * k]`` -> ``[N * k]``: (r − group mean) / (group std + 1e-4), the unbiased std of each prompt's k rewards,
    as TRL 1.16's `GRPOTrainer` with its default ``scale_rewards="group"``."""
    grouped = rewards.reshape(-1, k)
    centred = grouped - grouped.mean(1, keepdim=True)
    return (centred / (grouped.std(1, keepdim=True) + GRPO_STD_EPS)).reshape(rewards.shape)


def _group_cases(seed: int = 1) -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 3.0, 0.3]).repeat_interleave(4)  # groups of different spreads and means
    offsets = torch.tensor([0.0, 5.0, -2.0]).repeat_interleave(4)
    return [
        ("N=3 prompts, k=4, groups of different means and spreads", torch.randn(12, generator=g) * scales + offsets, 4),
        ("N=2, k=3, the second group's rewards all equal (std 0: advantages 0)",
         torch.tensor([1.0, 2.0, 4.0, 0.5, 0.5, 0.5]), 3),
        ("N=4, k=2", torch.randn(8, generator=g) * 2 + torch.arange(4.0).repeat_interleave(2), 2),
    ]


@exercise("04", "group_normalised_advantages", difficulty=2, importance=4, minutes=10)
def check_group_normalised_advantages(fn) -> None:
    """`fn(rewards [N * k], k) -> [N * k]`: each reward centred on its group's mean and divided by its group's
    unbiased std + 1e-4 (TRL 1.16's GRPO default)."""
    cases = _group_cases()
    for case, rewards, k in cases:
        expected = grpo_advantages(rewards, k)
        answer = call(fn, rewards.clone(), k, case=case)
        grouped = rewards.reshape(-1, k)
        centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
        tiled = rewards.reshape(k, -1).T  # column j of the tiled layout read as prompt j
        tiled = ((tiled - tiled.mean(1, keepdim=True)) / (tiled.std(1, keepdim=True) + GRPO_STD_EPS)).T.reshape(-1)
        expect_close(answer, expected, "group_normalised_advantages", case=case, atol=1e-4, diagnoses=[
            (centred / (rewards.std() + GRPO_STD_EPS),
             "the mean is the group's but the std is the whole batch's (TRL's scale_rewards=\"batch\"): divide by the "
             "std of the prompt's own k rewards."),
            ((rewards - rewards.mean()) / (rewards.std() + GRPO_STD_EPS),
             "you normalised over the whole batch: the mean and std are those of each prompt's group of k rewards "
             "(rewards.view(-1, k) along dim 1)."),
            ((centred.reshape(-1, k) / (grouped.std(1, unbiased=False, keepdim=True) + GRPO_STD_EPS)).reshape(-1),
             "that is the biased std (divided by k): TRL uses the unbiased one (k − 1), torch.std's default."),
            (centred, "the rewards are centred but not divided by the group's std (that is Dr. GRPO, TRL's "
                      "scale_rewards=\"none\"): divide by std + 1e-4."),
            ((centred.reshape(-1, k) / grouped.std(1, keepdim=True)).reshape(-1),
             "you divided by the group's std alone: TRL divides by std + 1e-4. The 1e-4 keeps a group of equal "
             "rewards at advantage 0 instead of 0 / 0 = NaN, and it shrinks every advantage a little (most where "
             "the group's spread is small): add exactly 1e-4 to compute TRL's numbers."),
            ((centred.reshape(-1, k) / (grouped.std(1, keepdim=True) + 1e-8)).reshape(-1),
             "your epsilon is too small: TRL divides by std + 1e-4 (not 1e-8, a common default elsewhere)."),
            (tiled, "the groups are read the wrong way: the k completions of a prompt are *adjacent* "
                    "(rewards.view(-1, k)), not one every N (view(k, -1))."),
        ])
    passed("group_normalised_advantages", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 4.2: GRPO's loss, token by token
# ----------------------------------------------------------------------------------------------


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, epsilon: float, loss_type: str = "dapo", *, kl: str = "k3",
              kl_times_ratio: bool = True, surrogate: str = "clipped", reduce: str | None = None) -> torch.Tensor:
    """GRPO's loss as TRL 1.16's `GRPOTrainer._compute_loss` computes it (token-level importance sampling,
    ``epsilon_low = epsilon_high = epsilon``, ``use_bias_correction_kl=True``, one process, one batch):

    * per token: ``-min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) + β·k3·ρ``, with ρ = exp(logprobs − old_logprobs), A the
      completion's advantage (``[B]``, the same at each of its tokens) and k3 = exp(ref − logp) − (ref − logp) − 1;
    * ``loss_type="grpo"``: the mean over each completion's real tokens, then over completions;
      ``"dapo"``: the sum over every real token of the batch divided by their number (TRL's ``num_items_in_batch``,
      here the batch is the whole generation batch).

    The keyword switches compute the usual mistakes (the check uses them to name one): `kl` "k1", "k2",
    "k3-reversed" (log-ratio the wrong way), "k3-no-minus-one"; `kl_times_ratio` False (no bias correction);
    `surrogate` "min-of-losses", "objective" (not negated), "unclipped", "clipped-only", "ratio-reversed";
    `reduce` "grpo" / "dapo" / "all-positions" (padding counted) instead of `loss_type`'s.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(-log_ratio if surrogate == "ratio-reversed" else log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    a = advantages.unsqueeze(1)
    per_token = {"clipped": lambda: -torch.min(ratio * a, clipped * a),
                 "ratio-reversed": lambda: -torch.min(ratio * a, clipped * a),
                 "min-of-losses": lambda: torch.min(-ratio * a, -clipped * a),
                 "objective": lambda: torch.min(ratio * a, clipped * a),
                 "unclipped": lambda: -ratio * a,
                 "clipped-only": lambda: -clipped * a}[surrogate]()
    if beta != 0.0:
        x = ref_logprobs - logprobs  # log(pi_ref / pi_theta): the tokens were sampled from pi_theta
        per_token_kl = {"k3": lambda: torch.exp(x) - x - 1, "k1": lambda: -x, "k2": lambda: 0.5 * x ** 2,
                        "k3-reversed": lambda: torch.exp(-x) + x - 1, "k3-no-minus-one": lambda: torch.exp(x) - x}[kl]()
        if kl_times_ratio:
            per_token_kl = per_token_kl * torch.exp(log_ratio)
        per_token = per_token + beta * per_token_kl
    mask = mask.to(per_token.dtype)
    how = reduce or loss_type
    if how == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if how == "dapo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if how == "all-positions":
        return per_token.mean()
    raise ValueError(f"loss_type must be 'grpo' or 'dapo', got {loss_type!r}")


def _grpo_loss_cases(seed: int = 0):
    """(description, logprobs, old_logprobs, ref_logprobs, advantages, mask, beta, epsilon, loss_type): B = 4
    completions of up to T = 6 tokens, padding holding junk (log-probs 3.0 policy, −2.0 old and reference); the
    first case isolates the KL term (ratio 1, advantages 0), the second the clipped term (β = 0)."""
    g = torch.Generator().manual_seed(seed)
    lengths, width = [6, 2, 4, 1], 6
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    real = mask.bool()

    def junk(x, value):
        return torch.where(real, x, torch.full_like(x, value))

    logprobs = -torch.rand(4, width, generator=g) * 3
    ref = logprobs + torch.randn(4, width, generator=g)  # about 1 nat apart: k3, k2 and k1 all differ
    old = logprobs - (torch.rand(4, width, generator=g) - 0.5) * 1.2  # ratios e^-0.6 .. e^0.6: every clip case
    advantages = torch.tensor([1.3, -0.8, 0.5, -1.6])
    lp, rf, od = junk(logprobs, 3.0), junk(ref, -2.0), junk(old, -2.0)
    where = f"B=4, T={width}, lengths {lengths}, padding log-probs 3.0 (policy) and -2.0 (old, reference)"
    return [
        (f"{where}; the KL term alone: old = policy (ratio 1), advantages 0, beta 0.1, loss_type 'grpo'",
         lp, lp.clone(), rf, torch.zeros(4), mask, 0.1, 0.2, "grpo"),
        (f"{where}; the clipped term alone: beta 0, ratios 0.55-1.8, epsilon 0.2, loss_type 'grpo'",
         lp, od, rf, advantages, mask, 0.0, 0.2, "grpo"),
        (f"{where}; both terms, off-policy (ratio != 1), beta 0.04, epsilon 0.2, loss_type 'grpo'",
         lp, od, rf, advantages, mask, 0.04, 0.2, "grpo"),
        (f"{where}; both terms, off-policy, beta 0.04, epsilon 0.2, loss_type 'dapo'",
         lp, od, rf, advantages, mask, 0.04, 0.2, "dapo"),
        (f"{where}; both terms, beta 0.3, epsilon 0.1, loss_type 'dapo'",
         lp, od, rf, -advantages, mask, 0.3, 0.1, "dapo"),
    ]


#: (switches of `grpo_loss`, the message that names the mistake), tried in this order
GRPO_LOSS_MISTAKES = [
    (dict(kl="k1"), "the KL term is k1 = logp − ref_logp: TRL's per-token KL is k3 = exp(ref − logp) − (ref − logp) "
                    "− 1, never negative (k1 is negative on single tokens)."),
    (dict(kl="k3-reversed"), "the KL term's log-ratio is the wrong way round: k3 uses x = ref_logp − logp "
                             "(r = π_ref / π_θ, because the tokens were sampled from π_θ); exp(logp − ref) − (logp − "
                             "ref) − 1 estimates KL(π_ref ‖ π_θ) instead."),
    (dict(kl="k2"), "the KL term is k2 = ½ (log r)²: close to k3 when the models are close, but biased; k3 is "
                    "exp(x) − x − 1 with x = ref_logp − logp."),
    (dict(kl="k3-no-minus-one"), "the KL term misses its − 1: without it the estimate is 1 where the models agree."),
    (dict(kl_times_ratio=False), "the KL term is not multiplied by the ratio ρ = exp(logp − old_logp): TRL 1.16 "
                                 "does it by default (use_bias_correction_kl=True), so that the k3 of tokens sampled "
                                 "by the old policy estimates the current policy's KL. It changes the gradient even where ρ = 1 (ρ's "
                                 "derivative is ρ), and the value once ρ ≠ 1."),
    (dict(surrogate="min-of-losses"), "you took the min of the two *loss* terms: the per-token loss is −min(ρ·A, "
                                      "clip(ρ)·A) = max(−ρ·A, −clip(ρ)·A). With min, the loss rewards pushing the "
                                      "ratio without limit."),
    (dict(surrogate="objective"), "the clipped term is not negated: min(ρ·A, clip(ρ)·A) is the objective GRPO "
                                  "*maximises*; the loss to minimise is its negative."),
    (dict(surrogate="unclipped"), "there is no clipping: −ρ·A is the plain importance-sampled loss; take "
                                  "−min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A)."),
    (dict(surrogate="clipped-only"), "you used only the clipped term −clip(ρ)·A: take the min with the unclipped ρ·A "
                                     "(before negating), so a move in the harmful direction is never clipped."),
    (dict(surrogate="ratio-reversed"), "the ratio is the wrong way round: ρ = π_θ / π_old = exp(logprobs − "
                                       "old_logprobs)."),
    (dict(reduce="dapo"), "that is the \"dapo\" normalisation (every real token of the batch weighs the same) where "
                          "loss_type is \"grpo\": average over each completion's real tokens first, then over the "
                          "completions (a short completion's tokens weigh more)."),
    (dict(reduce="grpo"), "that is the \"grpo\" normalisation (per completion, then over completions) where "
                          "loss_type is \"dapo\": sum over every real token of the batch and divide by their number."),
    (dict(reduce="all-positions"), "you averaged over every position, padding included: multiply by the mask and "
                                   "divide by the number of real tokens (per completion for \"grpo\", in the batch "
                                   "for \"dapo\")."),
]


@exercise("04", "grpo_loss", difficulty=3, importance=5, minutes=20)
def check_grpo_loss(fn) -> None:
    """`fn(logprobs [B, T], old_logprobs [B, T], ref_logprobs [B, T], advantages [B], mask [B, T], beta, epsilon,
    loss_type) -> 0-d loss`, as TRL 1.16's `GRPOTrainer._compute_loss` (`grpo_loss` above; notebook 04 and
    tests/test_exercises_04_05.py run TRL's own method on the same inputs); its gradient must match too."""
    cases = _grpo_loss_cases()
    for case, logp, old, ref, adv, mask, beta, eps, loss_type in cases:
        reference_logp = logp.clone().requires_grad_(True)
        expected = grpo_loss(reference_logp, old, ref, adv, mask, beta, eps, loss_type)
        expected.backward()
        learner_logp = logp.clone().requires_grad_(True)
        answer = call(fn, learner_logp, old.clone(), ref.clone(), adv.clone(), mask.clone(), beta, eps, loss_type,
                      case=case)
        expect(isinstance(answer, torch.Tensor), f"grpo_loss: return the loss as a 0-d torch.Tensor, got "
                                                 f"{type(answer).__name__}.\n  case: {case}")
        expect(answer.requires_grad, "grpo_loss: the loss carries no gradient with respect to `logprobs` (a "
                                     ".detach(), .item() or torch.tensor(...) on the way?): the optimiser needs "
                                     f"loss.backward() to reach the model.\n  case: {case}")
        diagnoses = []
        for switches, message in GRPO_LOSS_MISTAKES:
            if switches.get("reduce") == loss_type:
                continue
            diagnoses.append((grpo_loss(logp, old, ref, adv, mask, beta, eps, loss_type, **switches), message))
        diagnoses.append((grpo_loss(logp, old, ref, adv, mask, -beta, eps, loss_type),
                          "the KL term has the wrong sign: it is ADDED to the loss, + β·k3·ρ, so that moving away "
                          "from the reference costs."))
        if beta:
            diagnoses.append((grpo_loss(logp, old, ref, adv, mask, 0.0, eps, loss_type),
                              "the KL term is missing: add β·k3 (times the ratio) to each token's loss."))
            diagnoses.append((grpo_loss(logp, old, ref, adv, mask, 1.0, eps, loss_type),
                              "the KL term is not multiplied by beta."))
        expect_close(answer, expected, "grpo_loss", case=case, atol=1e-6, diagnoses=diagnoses,
                     hint="per token: -min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) + β·(exp(x) - x - 1)·ρ, x = ref - logp, "
                          "ρ = exp(logp - old); then the masked mean of loss_type.")
        answer.reshape(()).backward()
        expect(learner_logp.grad is not None, "grpo_loss: no gradient reached `logprobs`: compute the ratio and the "
                                              f"KL from the logprobs argument itself.\n  case: {case}")
        gradient_diagnoses = []
        for switches, message in GRPO_LOSS_MISTAKES:
            if switches.get("reduce") != loss_type:
                wrong_logp = logp.clone().requires_grad_(True)
                grpo_loss(wrong_logp, old, ref, adv, mask, beta, eps, loss_type, **switches).backward()
                gradient_diagnoses.append((wrong_logp.grad, message))
        expect_close(learner_logp.grad, reference_logp.grad, "grpo_loss (its gradient with respect to logprobs)",
                     case=case, atol=1e-6, diagnoses=gradient_diagnoses)
    passed("grpo_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 4.3: RLOO's leave-one-out baseline
# ----------------------------------------------------------------------------------------------


def _rloo_cases(seed: int = 2) -> list[tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("N=3 prompts, k=4, groups of different means",
         torch.randn(12, generator=g) + torch.tensor([0.0, 4.0, -3.0]).repeat_interleave(4), 4),
        ("N=2, k=2 (the baseline is the other completion's reward)", torch.tensor([1.0, 3.0, -2.0, 5.0]), 2),
        ("N=4, k=3", torch.randn(12, generator=g) * 2 + torch.arange(4.0).repeat_interleave(3), 3),
    ]


@exercise("04", "rloo_advantages", difficulty=2, importance=4, minutes=10)
def check_rloo_advantages(fn) -> None:
    """`fn(rewards [N * k], k) -> [N * k]`: each reward minus the mean of the other k − 1 rewards of its prompt,
    as `rlhf_helpers.ppo.advantages.leave_one_out_advantages`."""
    cases = _rloo_cases()
    for case, rewards, k in cases:
        expected = reference_leave_one_out(rewards, k)
        answer = call(fn, rewards.clone(), k, case=case)
        grouped = rewards.reshape(-1, k)
        sums = grouped.sum(1, keepdim=True)
        n = rewards.numel()
        tiled = reference_leave_one_out(rewards.reshape(k, -1).T.contiguous(), k).T.reshape(-1)
        expect_close(answer, expected, "rloo_advantages", case=case, atol=1e-5, diagnoses=[
            ((grouped - sums / k).reshape(-1), "the baseline includes the sample itself (r − group mean): leave it out, "
                                               "b_i = (Σ_j r_j − r_i) / (k − 1), so the baseline does not depend on y_i."),
            (rewards - (rewards.sum() - rewards) / (n - 1),
             "you left one out of the whole batch: the baseline is the mean of the other k − 1 completions of the "
             "*same prompt* (rewards.view(-1, k))."),
            (rewards - rewards.mean(), "you centred on the whole batch's mean: the baseline is the mean of the other "
                                       "k − 1 completions of the same prompt."),
            ((grouped - (sums - grouped) / k).reshape(-1), "the others' sum is divided by k: there are k − 1 others."),
            (tiled, "the groups are read the wrong way: the k completions of a prompt are *adjacent* "
                    "(rewards.view(-1, k)), not one every N (view(k, -1))."),
        ])
    passed("rloo_advantages", len(cases))
