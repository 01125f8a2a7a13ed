"""Checks of notebook 05's exercises: the pieces of PPO (masked statistics, rewards, GAE, losses, β).

Each check compares the learner's function with the package's own (`rlhf_helpers.ppo.*`) on random inputs whose
padding holds junk, so that a mask forgotten anywhere changes the answer, and names the usual mistakes.
"""

from __future__ import annotations

import torch

from ..ppo.advantages import compute_gae as reference_compute_gae
from ..ppo.advantages import masked_mean as reference_masked_mean
from ..ppo.advantages import masked_whiten as reference_masked_whiten
from ..ppo.kl import AdaptiveKLController as reference_adaptive_kl
from ..ppo.kl import kl_penalty as reference_kl_penalty
from ..ppo.kl import per_token_rewards as reference_per_token_rewards
from ..ppo.losses import clipped_policy_loss as reference_clipped_policy_loss
from ..ppo.losses import clipped_value_loss as reference_clipped_value_loss
from .checking import ExerciseFailed, call, exercise, expect, expect_close, passed

__all__ = ["check_masked_mean", "check_masked_whiten", "check_per_token_rewards", "check_compute_gae",
           "check_clipped_policy_loss", "check_clipped_value_loss", "check_adaptive_kl_update"]


def right_padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    """``[B, width]`` float mask with ``lengths[b]`` ones, then zeros (responses are right-padded)."""
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()


def _cases(seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(description, values [B, T], mask [B, T]) cases: random, one real token, padding holding junk."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width in [([4, 16, 8, 6], 16), ([1, 3], 5), ([7], 7)]:
        mask = right_padded_mask(lengths, width)
        values = torch.randn(len(lengths), width, generator=g) * 3 + 1
        values = torch.where(mask.bool(), values, torch.full_like(values, 50.0))  # junk in the padding
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, padding filled with 50.0", values, mask))
    return cases


@exercise("05", "masked_mean", difficulty=1, importance=4, minutes=5)
def check_masked_mean(fn) -> None:
    """`fn(values [B, T], mask [B, T]) -> 0-d tensor`: the mean over the positions where mask is 1."""
    cases = _cases()
    for case, values, mask in cases:
        expected = reference_masked_mean(values, mask)
        answer = call(fn, values.clone(), mask.clone(), case=case)
        expect_close(answer, expected, "masked_mean", case=case, diagnoses=[
            (values.mean(), "you averaged over every position, padding included: count only where mask is 1."),
            ((values * mask).mean(), "the sum is right but you divided by B*T: divide by the number of real tokens, mask.sum()."),
            ((values * mask).sum(1).div(mask.sum(1)).mean(), "that is the mean of per-row means: weigh every real token equally instead."),
        ])
    passed("masked_mean", len(cases))


@exercise("05", "masked_whiten", difficulty=2, importance=4, minutes=10)
def check_masked_whiten(fn) -> None:
    """`fn(values [B, T], mask [B, T]) -> [B, T]`: mean 0, unbiased std 1 over the real tokens; padding 0."""
    cases = _cases(seed=1)
    for case, values, mask in cases:
        expected = reference_masked_whiten(values, mask)
        answer = call(fn, values.clone(), mask.clone(), case=case)
        m = mask.bool()
        everywhere = (values - values.mean()) / (values.std() + 1e-8)
        real = values[m]
        biased = torch.where(m, (values - real.mean()) / real.std(unbiased=False), torch.zeros_like(values))
        padding_kept = torch.where(m, expected, (values - real.mean()) / real.std())
        expect_close(answer, expected, "masked_whiten", case=case, atol=1e-4, diagnoses=[
            (everywhere, "you whitened over the padding too: the mean and std must come from the real tokens only."),
            (torch.where(m, everywhere, torch.zeros_like(values)), "the padding is 0, but the mean and std still count the padding: take them over the real tokens only."),
            (padding_kept, "the real tokens are right, but the padding is not 0: set it to 0 (the losses mask it, but NaN-free zeros are safer)."),
            (biased, "that is the biased std (divided by n): use the unbiased one, as masked_var does (n - 1)."),
        ])
    passed("masked_whiten", len(cases))


# ----------------------------------------------------------------------------------------------
# Helpers shared by the checks below
# ----------------------------------------------------------------------------------------------


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of each right-padded row's last real token."""
    return mask.sum(1).long() - 1


def _pair(answer, what: str, first: str, second: str):
    """The learner's two outputs, or a clear failure if the function did not return two."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseFailed(f"{what}: return two tensors, `({first}, {second})`, got {type(answer).__name__}"
                             + (f" of length {len(answer)}" if isinstance(answer, (tuple, list)) else "") + ".")
    return answer


def _loss_with_gradient(answer, what: str, wrt: str, case: str) -> torch.Tensor:
    """The learner's loss, which must be a tensor that gradients can flow back through."""
    expect(isinstance(answer, torch.Tensor), f"{what}: return the loss as a 0-d torch.Tensor, got "
                                             f"{type(answer).__name__}.\n  case: {case}")
    expect(answer.requires_grad, f"{what}: the loss carries no gradient with respect to `{wrt}` (a .detach(), "
                                 f".item(), torch.no_grad() or torch.tensor(...) on the way?): the optimiser needs "
                                 f"loss.backward() to reach the model.\n  case: {case}")
    return answer


# ----------------------------------------------------------------------------------------------
# Exercise 5.3: per-token rewards
# ----------------------------------------------------------------------------------------------


def _reward_cases(seed: int = 2):
    """(description, scores [B], logprobs [B, T], ref_logprobs [B, T], mask [B, T], kl_coef) with junk in the
    padding (so a penalty charged there, or a score placed on the last column, shows)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, kl_coef in [([4, 10, 7, 1], 10, 0.2), ([3, 5], 6, 0.05), ([6], 6, 1.0)]:
        mask = right_padded_mask(lengths, width)
        logprobs = -torch.rand(len(lengths), width, generator=g) * 4
        ref_logprobs = logprobs + torch.randn(len(lengths), width, generator=g) * 0.7
        logprobs = torch.where(mask.bool(), logprobs, torch.full_like(logprobs, -30.0))  # junk in the padding
        ref_logprobs = torch.where(mask.bool(), ref_logprobs, torch.full_like(ref_logprobs, -1.0))
        scores = torch.randn(len(lengths), generator=g) * 2
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, kl_coef {kl_coef}, padding log-probs -30 "
                      f"(policy) and -1 (reference)", scores, logprobs, ref_logprobs, mask, kl_coef))
    return cases


@exercise("05", "per_token_rewards", difficulty=2, importance=5, minutes=10)
def check_per_token_rewards(fn) -> None:
    """`fn(scores [B], logprobs [B, T], ref_logprobs [B, T], mask [B, T], kl_coef) -> rewards [B, T]`:
    ``-kl_coef * (logp - logp_ref)`` on real tokens (k1), the score added at each row's last real token, 0 on padding,
    as `rlhf_helpers.ppo.kl.per_token_rewards(..., estimator="k1")` (its first output)."""
    cases = _reward_cases()
    for case, scores, logprobs, ref_logprobs, mask, beta in cases:
        expected, _ = reference_per_token_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator="k1")
        answer = call(fn, scores.clone(), logprobs.clone(), ref_logprobs.clone(), mask.clone(), beta, case=case)
        rows, last = torch.arange(len(scores)), _last_real(mask)
        k1 = logprobs - ref_logprobs

        def with_score(base, where=None, everywhere=False):
            out = base.clone()
            if everywhere:
                return out + scores[:, None] * mask
            out[rows, last if where is None else where] += scores
            return out

        masked_k1 = k1 * mask
        k3 = reference_kl_penalty(logprobs, ref_logprobs, "k3") * mask
        expect_close(answer, expected, "per_token_rewards", case=case, diagnoses=[
            (with_score(-beta * masked_k1, where=torch.full_like(last, mask.shape[1] - 1)),
             "the score sits on the last *column*, which is padding in the shorter rows: put it on each row's last "
             "real token, index mask.sum(1) - 1 (right padding)."),
            (with_score(beta * masked_k1), "the KL's sign is flipped: the penalty is -kl_coef * (logp - logp_ref). With "
                                           "+, moving away from the reference *earns* reward and the policy runs off."),
            (with_score(-masked_k1), "the KL is not multiplied by kl_coef (β): the penalty is -kl_coef * KL_t."),
            (with_score(-beta * k1), "the padding is charged a KL penalty: multiply the penalty by the mask "
                                     "(padding is not part of the response, its rewards must be 0)."),
            (with_score(-beta * masked_k1, everywhere=True),
             "the score is added at every token: it judges the whole response, so it comes once, at the last real token."),
            (with_score(-beta * masked_k1, where=torch.zeros_like(last)),
             "the score sits on the *first* token: put it on the last real token (index mask.sum(1) - 1)."),
            (with_score(-beta * k3), "that is the k3 estimator: this exercise asks for k1, logp - logp_ref (the "
                                     "course's default, PPOConfig.kl_estimator)."),
        ])
    passed("per_token_rewards", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.4: GAE
# ----------------------------------------------------------------------------------------------


def _plain_gae(rewards, values, mask, gamma, lam, next_offset=1, use_mask=True):
    """GAE written out, with switches for the usual mistakes (next value at t + next_offset; mask ignored)."""
    B, T = rewards.shape
    if not use_mask:
        mask = torch.ones_like(mask)
    r, v = rewards * mask, values * mask
    advantages = torch.zeros_like(r)
    for b in range(B):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            j = t + next_offset
            next_value = v[b, j] if j < n else 0.0
            delta = r[b, t] + gamma * next_value - v[b, t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
    return advantages


def _full_width_gae(rewards, values, gamma, lam):
    """GAE run over every column, padding included, with V = 0 only after the last *column* (not the last real
    token): what a loop over ``range(T)`` computes when it is handed padded tensors."""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=values.dtype)
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages


def _gae_cases(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, gamma, lam in [([5, 12, 8, 1], 12, 1.0, 0.95), ([3, 6], 7, 0.9, 0.8), ([4], 4, 1.0, 0.0)]:
        mask = right_padded_mask(lengths, width)
        rewards = torch.randn(len(lengths), width, generator=g)
        values = torch.randn(len(lengths), width, generator=g)
        rewards = torch.where(mask.bool(), rewards, torch.full_like(rewards, 7.0))  # junk in the padding
        values = torch.where(mask.bool(), values, torch.full_like(values, 9.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, gamma {gamma}, lam {lam}, padding rewards "
                      f"7.0 and values 9.0", rewards, values, mask, gamma, lam))
    return cases


@exercise("05", "compute_gae", difficulty=3, importance=5, minutes=20)
def check_compute_gae(fn) -> None:
    """`fn(rewards [B, T], values [B, T], mask [B, T], gamma, lam) -> (advantages [B, T], returns [B, T])`,
    as `rlhf_helpers.ppo.advantages.compute_gae`: 0 on padding, V = 0 after the last real token."""
    cases = _gae_cases()
    for case, rewards, values, mask, gamma, lam in cases:
        expected_adv, expected_ret = reference_compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
        answer = call(fn, rewards.clone(), values.clone(), mask.clone(), gamma, lam, case=case)
        advantages, returns = _pair(answer, "compute_gae", "advantages", "returns")
        unmasked = _plain_gae(rewards, values, mask, gamma, lam, use_mask=False)
        bootstrap = "you bootstrapped from the padding: after a row's last real token V_{t+1} = 0 and A_{t+1} = 0 " \
                    "(the response has ended). Zero the rewards and values on padding, or stop each row at its length."
        values_unmasked = _full_width_gae(rewards * mask, values, gamma, lam)
        padded_values = ("you masked the rewards but not the values, so GAE bootstraps from padded values: at a "
                         "row's last real token δ_t = r_t + γ·V_{t+1} − V_t reads V_{t+1} = values[:, t + 1], which is "
                         "padding (junk 9.0 here), and the padding's own deltas flow back through γ·λ·A_{t+1}. The "
                         "response has ended: V_{t+1} = 0 and A_{t+1} = 0 after the last real token. Multiply the "
                         "values by the mask too (values * mask), or stop each row at its length.")
        expect_close(advantages, expected_adv, "compute_gae (advantages)", case=case, diagnoses=[
            (values_unmasked * mask, padded_values),
            (values_unmasked, padded_values),
            (unmasked * mask, bootstrap),
            (unmasked, bootstrap),
            (_plain_gae(rewards, values, mask, gamma, 1.0),
             "λ is missing (that is λ = 1): A_t = δ_t + γ·λ·A_{t+1}."),
            (_plain_gae(rewards, values, mask, 1.0, lam),
             "γ is missing: δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γ·λ·A_{t+1} (it shows when γ < 1)."),
            (_plain_gae(rewards, values, mask, gamma, lam, next_offset=0),
             "off by one in the next value: δ_t uses V_{t+1}, the value of the *next* state (values[:, t + 1], "
             "0 after the last real token), not V_t."),
            (_plain_gae(rewards, values, mask, gamma, lam, next_offset=2),
             "off by one in the next value: δ_t uses V_{t+1} = values[:, t + 1], not values[:, t + 2]."),
            (_plain_gae(rewards, values, mask, gamma, gamma * lam), "you discounted the advantages by γ²·λ: the "
                                                                   "recursion is A_t = δ_t + γ·λ·A_{t+1}."),
        ])
        m = mask.bool()
        rewards_to_go = _plain_gae(rewards, torch.zeros_like(values), mask, gamma, 1.0)
        expect_close(returns, expected_ret, "compute_gae (returns)", case=case, diagnoses=[
            (expected_adv, "returns equal the advantages: the value target is A_t + V_t."),
            (torch.where(m, expected_adv - values, torch.zeros_like(values)),
             "returns are A_t − V_t: the value target is A_t + V_t."),
            (rewards_to_go, "those are the discounted rewards-to-go: the value target of GAE is A_t + V_t (equal to the "
                            "rewards-to-go only when λ = 1)."),
            (expected_adv + values, "the returns are right on real tokens but not 0 on padding: mask them."),
        ])
    passed("compute_gae", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.5: the clipped policy loss
# ----------------------------------------------------------------------------------------------


def _policy_loss_cases(seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, eps in [([6, 12, 3, 9], 12, 0.2), ([1, 5], 5, 0.1), ([8], 8, 0.3)]:
        mask = right_padded_mask(lengths, width)
        old = -torch.rand(len(lengths), width, generator=g) * 3
        new = old + (torch.rand(len(lengths), width, generator=g) - 0.5) * 1.2  # ratios from e^-0.6 to e^0.6
        advantages = torch.randn(len(lengths), width, generator=g)
        new = torch.where(mask.bool(), new, old + 2.0)  # padding: a ratio of e^2 and an advantage of 5
        advantages = torch.where(mask.bool(), advantages, torch.full_like(advantages, 5.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, clip_range {eps}, ratios 0.55-1.8 on real "
                      f"tokens, padding ratio e^2 with advantage 5", new, old, advantages, mask, eps))
    return cases


def _masked(x, mask):
    return (x * mask).sum() / mask.sum()


@exercise("05", "clipped_policy_loss", difficulty=3, importance=5, minutes=15)
def check_clipped_policy_loss(fn) -> None:
    """`fn(logprobs [B, T], old_logprobs [B, T], advantages [B, T], mask [B, T], clip_range) -> 0-d loss` to minimise,
    as the first output of `rlhf_helpers.ppo.losses.clipped_policy_loss`; its gradient must match too."""
    cases = _policy_loss_cases()
    for case, new, old, advantages, mask, eps in cases:
        reference_new = new.clone().requires_grad_(True)
        expected, _ = reference_clipped_policy_loss(reference_new, old, advantages, mask, eps)
        expected.backward()
        learner_new = new.clone().requires_grad_(True)
        answer = call(fn, learner_new, old.clone(), advantages.clone(), mask.clone(), eps, case=case)
        answer = _loss_with_gradient(answer, "clipped_policy_loss", "logprobs", case)
        ratio, backwards = torch.exp(new - old), torch.exp(old - new)
        clipped = torch.clamp(ratio, 1 - eps, 1 + eps)
        pessimistic = torch.max(-ratio * advantages, -clipped * advantages)
        expect_close(answer, expected, "clipped_policy_loss", case=case, diagnoses=[
            (_masked(torch.min(-ratio * advantages, -clipped * advantages), mask),
             "you took the min of the two *loss* terms: the loss is max(−ρ·A, −clip(ρ)·A), the negative of the "
             "objective's min(ρ·A, clip(ρ)·A). With min, the loss rewards pushing the ratio without limit."),
            (_masked(torch.min(ratio * advantages, clipped * advantages), mask),
             "that is the objective min(ρ·A, clip(ρ)·A), which PPO *maximises*: the loss to minimise is its negative."),
            (_masked(-ratio * advantages, mask), "there is no clipping: that is the plain importance-sampled loss −ρ·A."),
            (_masked(-clipped * advantages, mask),
             "you used only the clipped term −clip(ρ)·A: take the max with the unclipped −ρ·A, so that a move in the "
             "harmful direction is never clipped."),
            (pessimistic.mean(), "you averaged over every position, padding included: average over real tokens only."),
            ((pessimistic * mask).mean(), "the padding is zeroed but you divided by B*T: divide by the number of real "
                                          "tokens, mask.sum()."),
            (_masked(torch.max(-backwards * advantages, -torch.clamp(backwards, 1 - eps, 1 + eps) * advantages), mask),
             "the ratio is the wrong way round: ρ = π_new / π_old = exp(logprobs − old_logprobs)."),
            ((pessimistic * mask).sum(1).div(mask.sum(1)).mean(),
             "that is the mean of per-row means: weigh every real token equally instead."),
        ])
        answer.reshape(()).backward()
        expect(learner_new.grad is not None, "clipped_policy_loss: no gradient reached `logprobs`: compute the ratio "
                                             f"from the logprobs argument itself.\n  case: {case}")
        expect_close(learner_new.grad, reference_new.grad, "clipped_policy_loss (its gradient with respect to logprobs)",
                     case=case)
    passed("clipped_policy_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.6: the clipped value loss
# ----------------------------------------------------------------------------------------------


def _value_loss_cases(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, c in [([6, 12, 3, 9], 12, 0.2), ([1, 5], 5, 0.5), ([8], 8, 1.0)]:
        mask = right_padded_mask(lengths, width)
        old = torch.randn(len(lengths), width, generator=g) + 1.0  # values away from 0, so "clipped around 0" shows
        values = old + (torch.rand(len(lengths), width, generator=g) - 0.5) * 2.0
        returns = old + torch.randn(len(lengths), width, generator=g)
        values = torch.where(mask.bool(), values, torch.full_like(values, 6.0))  # junk in the padding
        returns = torch.where(mask.bool(), returns, torch.full_like(returns, -4.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, clip_range_value {c}, padding values 6 and "
                      f"returns -4", values, old, returns, mask, c))
    return cases


@exercise("05", "clipped_value_loss", difficulty=2, importance=4, minutes=10)
def check_clipped_value_loss(fn) -> None:
    """`fn(values [B, T], old_values [B, T], returns [B, T], mask [B, T], clip_range_value) -> 0-d loss`, as the
    first output of `rlhf_helpers.ppo.losses.clipped_value_loss`; its gradient must match too."""
    cases = _value_loss_cases()
    for case, values, old, returns, mask, c in cases:
        reference_values = values.clone().requires_grad_(True)
        expected, _ = reference_clipped_value_loss(reference_values, old, returns, mask, c)
        expected.backward()
        learner_values = values.clone().requires_grad_(True)
        answer = call(fn, learner_values, old.clone(), returns.clone(), mask.clone(), c, case=case)
        answer = _loss_with_gradient(answer, "clipped_value_loss", "values", case)
        unclipped = (values - returns) ** 2
        around_old = (old + torch.clamp(values - old, -c, c) - returns) ** 2
        around_zero = (torch.clamp(values, -c, c) - returns) ** 2
        worst = torch.max(unclipped, around_old)
        expect_close(answer, expected, "clipped_value_loss", case=case, diagnoses=[
            (0.5 * _masked(torch.max(unclipped, around_zero), mask),
             "you clipped the value around 0: clip its *change*, v_clip = old_values + clip(values − old_values, −c, c)."),
            (0.5 * _masked(torch.min(unclipped, around_old), mask),
             "min instead of max: the value loss is the larger (pessimistic) of the two squared errors."),
            (_masked(worst, mask), "the ½ is missing: 0.5 * mean(max(...)) (as the historical TRL and baselines)."),
            (0.5 * _masked(unclipped, mask), "there is no clipping: that is the plain ½·(v − R)²."),
            (0.5 * _masked(around_old, mask), "you used only the clipped error: take the max with the unclipped one."),
            (0.5 * worst.mean(), "you averaged over every position, padding included: average over real tokens only."),
            (0.5 * (worst * mask).mean(), "the padding is zeroed but you divided by B*T: divide by mask.sum()."),
        ])
        answer.reshape(()).backward()
        expect(learner_values.grad is not None, "clipped_value_loss: no gradient reached `values`: compute the loss "
                                                f"from the values argument itself.\n  case: {case}")
        expect_close(learner_values.grad, reference_values.grad, "clipped_value_loss (its gradient with respect to "
                     "values)", case=case)
    passed("clipped_value_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.7: the adaptive KL controller
# ----------------------------------------------------------------------------------------------

#: (beta, measured KL, target, horizon, n_steps): clipped above and below, unclipped both ways, on target, KL 0
KL_CONTROLLER_CASES = [(0.2, 12.0, 6.0, 10_000, 64), (0.2, 6.6, 6.0, 10_000, 64), (0.1, 1.0, 6.0, 1_000, 256),
                       (0.05, 5.0, 6.0, 1_000, 128), (0.3, 0.0, 3.0, 500, 64), (0.2, 6.0, 6.0, 1_000, 64),
                       (0.5, 3.3, 3.0, 200, 32)]


@exercise("05", "adaptive_kl_update", difficulty=1, importance=4, minutes=5)
def check_adaptive_kl_update(fn) -> None:
    """`fn(beta, kl, target, horizon, n_steps) -> float`: the new β, as `AdaptiveKLController(beta, target,
    horizon).update(kl, n_steps)`."""
    answers, expected = [], []
    for beta, kl, target, horizon, n in KL_CONTROLLER_CASES:
        case = f"beta {beta}, kl {kl}, target {target}, horizon {horizon}, n_steps {n}"
        answer = call(fn, beta, kl, target, horizon, n, case=case)
        try:
            answers.append(float(answer))
        except (TypeError, ValueError):
            raise ExerciseFailed(f"adaptive_kl_update: return the new beta as a number, got {type(answer).__name__}."
                                 f"\n  case: {case}") from None
        expected.append(reference_adaptive_kl(beta, target, horizon).update(kl, n))

    def each(rule):
        return torch.tensor([rule(*c) for c in KL_CONTROLLER_CASES], dtype=torch.float64)

    def clip(x):
        return min(max(x, -0.2), 0.2)

    case = "; ".join(f"(beta {b}, kl {k}, target {t}, horizon {h}, n_steps {n})" for b, k, t, h, n in KL_CONTROLLER_CASES)
    expect_close(torch.tensor(answers, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 "adaptive_kl_update (the new beta of each case)", case=case, atol=1e-9, rtol=1e-7, diagnoses=[
        (each(lambda b, k, t, h, n: b * (1 + (k / t - 1) * n / h)),
         "the error is not clipped: err = clip(kl / target − 1, −0.2, 0.2), so one strange batch cannot move β far."),
        (each(lambda b, k, t, h, n: b * (1 - clip(k / t - 1) * n / h)),
         "the sign is flipped: β must *rise* when the KL is above the target (a stronger leash), and fall below it."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k / t - 1) / h)),
         "n_steps is ignored: the step is err · n_steps / horizon (a batch of n samples moves β n times as far)."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k / t - 1))),
         "the step is err alone: scale it by n_steps / horizon, β ← β·(1 + err · n_steps / horizon)."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k - t) * n / h)),
         "the error is kl − target: it is proportional, kl / target − 1, then clipped to ±0.2."),
        (each(lambda b, k, t, h, n: b * (1 + clip((k / t - 1) * n / h))),
         "you clipped the whole step: clip the error kl / target − 1 to ±0.2, then multiply by n_steps / horizon."),
        (each(lambda b, k, t, h, n: 1 + clip(k / t - 1) * n / h),
         "that is the factor 1 + err · n_steps / horizon: multiply the old β by it."),
    ])
    passed("adaptive_kl_update", len(KL_CONTROLLER_CASES))
