"""Tests for the pure-tensor maths of PPO for RLHF: KL, rewards, GAE, whitening, losses, entropy.

Each test compares against a hand computation or a naive reference written differently from the
code under test (e.g. GAE as an explicit discounted sum rather than the backward recursion).
"""

import math

import pytest
import torch

from rlhf_helpers.ppo.advantages import compute_gae, explained_variance, masked_mean, masked_var, masked_whiten
from rlhf_helpers.ppo.kl import AdaptiveKLController, FixedKLController, kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, clipped_value_loss, entropy_from_logits

DT = torch.float64


def ragged_mask(lengths, T):
    """Right-padded 0/1 float mask [B, T] with the given number of real tokens per row."""
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).to(DT)


def with_garbage(x, mask, value=float("nan")):
    """Fill padding with `value`, so any test passes only if padding is truly ignored."""
    return torch.where(mask.bool(), x, torch.full_like(x, value))


# ----------------------------------------------------------------------------------------------
# Masked statistics and whitening
# ----------------------------------------------------------------------------------------------


def test_masked_mean_and_var_match_the_real_entries_alone():
    g = torch.Generator().manual_seed(0)
    mask = ragged_mask([5, 2, 7, 1], T=7)
    x = with_garbage(torch.randn(4, 7, generator=g, dtype=DT), mask)
    real = x[mask.bool()]
    assert torch.allclose(masked_mean(x, mask), real.mean())
    assert torch.allclose(masked_var(x, mask), real.var(unbiased=True))
    assert torch.allclose(masked_var(x, mask, unbiased=False), real.var(unbiased=False))
    per_row = masked_mean(x, mask.bool(), dim=1)
    expected = torch.stack([x[i, : int(n)].mean() for i, n in enumerate(mask.sum(1))])
    assert torch.allclose(per_row, expected)


def test_masked_whiten_over_real_tokens_only():
    g = torch.Generator().manual_seed(1)
    mask = ragged_mask([6, 3, 8], T=8)
    x = 5.0 + 3.0 * torch.randn(3, 8, generator=g, dtype=DT)
    white = masked_whiten(with_garbage(x, mask), mask)

    real = white[mask.bool()]
    assert abs(real.mean().item()) < 1e-12
    assert abs(real.std(unbiased=True).item() - 1.0) < 1e-6
    assert (white[~mask.bool()] == 0).all()
    # Same as whitening the real entries alone.
    xr = x[mask.bool()]
    assert torch.allclose(real, (xr - xr.mean()) / torch.sqrt(xr.var() + 1e-8))

    # shift_mean=False keeps the mean, only rescales.
    kept = masked_whiten(x, mask, shift_mean=False)[mask.bool()]
    assert torch.allclose(kept, (xr - xr.mean()) / torch.sqrt(xr.var() + 1e-8) + xr.mean())


def test_masked_stats_reject_bad_masks():
    x = torch.zeros(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="no real tokens"):
        masked_mean(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        masked_mean(x, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="shape"):
        masked_mean(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, ragged_mask([1, 0], T=3))


# ----------------------------------------------------------------------------------------------
# GAE
# ----------------------------------------------------------------------------------------------


def naive_gae(rewards, values, mask, gamma, lam):
    """A_t = sum_l (gamma*lam)^l delta_{t+l}, one row at a time, V = 0 after the last real token."""
    B, T = rewards.shape
    adv, ret = torch.zeros(B, T, dtype=DT), torch.zeros(B, T, dtype=DT)
    for b in range(B):
        n = int(mask[b].sum())
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]
        deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t))
            ret[b, t] = adv[b, t] + v[t]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0)])
def test_gae_matches_naive_discounted_sum(gamma, lam):
    g = torch.Generator().manual_seed(2)
    mask = ragged_mask([7, 1, 4, 0, 6], T=7)  # includes a one-token row and an empty row
    rewards = torch.randn(5, 7, generator=g, dtype=DT)
    values = torch.randn(5, 7, generator=g, dtype=DT)
    adv, ret = compute_gae(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    adv_ref, ret_ref = naive_gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, adv_ref, atol=1e-12)
    assert torch.allclose(ret, ret_ref, atol=1e-12)
    assert (adv[~mask.bool()] == 0).all() and (ret[~mask.bool()] == 0).all()


def test_gae_lambda_one_gives_reward_to_go():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, -1.0, 0.0, 0.0]], dtype=DT)
    values = torch.tensor([[0.3, 0.1, -0.2, 9.0], [1.0, 2.0, 9.0, 9.0]], dtype=DT)
    mask = ragged_mask([3, 2], T=4)
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = torch.tensor([[6.0, 5.0, 3.0, 0.0], [-0.5, -1.0, 0.0, 0.0]], dtype=DT)
    assert torch.allclose(ret, reward_to_go)
    assert torch.allclose(adv, (reward_to_go - values) * mask)


def test_gae_rejects_holes_and_bad_hyperparameters():
    r = torch.zeros(1, 3, dtype=DT)
    with pytest.raises(ValueError, match="right-padded"):
        compute_gae(r, r, torch.tensor([[1.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="gamma and lam"):
        compute_gae(r, r, torch.ones(1, 3), gamma=1.5)


def test_explained_variance():
    g = torch.Generator().manual_seed(3)
    mask = ragged_mask([5, 3, 6], T=6)
    returns = torch.randn(3, 6, generator=g, dtype=DT)
    assert explained_variance(returns, with_garbage(returns, mask), mask) == pytest.approx(1.0)
    mean_values = torch.full_like(returns, masked_mean(returns, mask).item())
    assert explained_variance(mean_values, returns, mask) == pytest.approx(0.0, abs=1e-12)
    # Hand example: returns [1, 2, 3], values [1, 2, 2]: Var[R - V] = Var[0, 0, 1] = 2/9, Var[R] = 2/3.
    ev = explained_variance(torch.tensor([[1.0, 2.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3))
    assert ev == pytest.approx(1 - (2 / 9) / (2 / 3))
    assert math.isnan(explained_variance(returns, torch.ones_like(returns), mask))


# ----------------------------------------------------------------------------------------------
# KL estimators, controllers and per-token rewards
# ----------------------------------------------------------------------------------------------


def test_kl_estimators_on_hand_values_and_k3_nonnegative():
    logp, ref = torch.tensor([[-1.0, -2.0]], dtype=DT), torch.tensor([[-2.0, -1.0]], dtype=DT)
    assert torch.allclose(kl_penalty(logp, ref, "k1"), torch.tensor([[1.0, -1.0]], dtype=DT))
    # log r = ref - logp = [-1, 1]; k3 = (e^{log r} - 1) - log r
    expected_k3 = torch.tensor([[math.exp(-1) - 1 + 1, math.e - 1 - 1]], dtype=DT)
    assert torch.allclose(kl_penalty(logp, ref, "k3"), expected_k3)

    g = torch.Generator().manual_seed(4)
    a, b = 10 * torch.randn(2, 1000, generator=g, dtype=DT)
    assert (kl_penalty(a[None], b[None], "k3") >= 0).all()
    with pytest.raises(ValueError, match="Unknown KL estimator"):
        kl_penalty(logp, ref, "k2")


def test_kl_estimators_are_unbiased_for_sampled_tokens():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=DT)
    q = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=DT)
    exact = (p * (p / q).log()).sum()

    n = 200_000
    tokens = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(5))
    logp, ref = p.log()[tokens][None], q.log()[tokens][None]
    k1, k3 = kl_penalty(logp, ref, "k1"), kl_penalty(logp, ref, "k3")
    for k in (k1, k3):
        stderr = k.std() / math.sqrt(n)
        assert abs(k.mean() - exact) < 4 * stderr
    # Schulman (2020)'s point: k3 has the lower variance when p and q are close.
    assert k3.var() < k1.var()


def test_fixed_controller_never_changes():
    ctl = FixedKLController(0.05)
    for kl in (0.0, 3.0, 100.0):
        ctl.update(kl, n_steps=128)
    assert ctl.value == 0.05
    restored = FixedKLController(1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == 0.05


def test_adaptive_controller_hand_computed_with_clipping():
    ctl = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=10_000)
    # KL 9 -> 9/6 - 1 = 0.5, clipped to 0.2; beta = 0.2 * (1 + 0.2 * 1000/10000) = 0.204
    assert ctl.update(9.0, n_steps=1000) == pytest.approx(0.204)
    # KL 5.4 -> 5.4/6 - 1 = -0.1, inside the clip; beta = 0.204 * (1 - 0.1 * 500/10000) = 0.20298
    assert ctl.update(torch.tensor(5.4), n_steps=500) == pytest.approx(0.20298)
    # KL 0 -> -1, clipped to -0.2; beta = 0.20298 * (1 - 0.2 * 0.25)
    assert ctl.update(0.0, n_steps=2500) == pytest.approx(0.20298 * 0.95)

    state = ctl.state_dict()
    resumed = AdaptiveKLController(init_coef=1.0, target=1.0, horizon=1.0)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert resumed.update(7.0, 128) == ctl.update(7.0, 128)
    with pytest.raises(ValueError, match="'fixed' KL controller"):
        resumed.load_state_dict(FixedKLController(0.1).state_dict())


@pytest.mark.parametrize("kwargs,name", [
    (dict(init_coef=-0.1, target=6, horizon=10), "init_coef"),
    (dict(init_coef=0.1, target=0, horizon=10), "target"),
    (dict(init_coef=0.1, target=6, horizon=0), "horizon"),
])
def test_controllers_reject_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaptiveKLController(**kwargs)
    with pytest.raises(ValueError, match="KL coefficient"):
        FixedKLController(-0.1)


def test_per_token_rewards_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 9.9]], dtype=DT)
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -1.0, 0.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    scores = torch.tensor([2.0, -1.0], dtype=DT)
    rewards, kl = per_token_rewards(scores, logp, ref, mask, kl_coef=0.1)
    # k1 = logp - ref: row 0 [0.5, -1.0, 0.0]; row 1 [-0.2, -0.2, (pad) 0]
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [-0.2, -0.2, 0.0]], dtype=DT))
    # -0.1 * kl, plus the score on the last real token (index 2 in row 0, index 1 in row 1)
    expected = torch.tensor([[-0.05, 0.1, 2.0], [0.02, 0.02 - 1.0, 0.0]], dtype=DT)
    assert torch.allclose(rewards, expected)

    rewards3, kl3 = per_token_rewards(scores, logp, ref, mask, kl_coef=0.1, estimator="k3")
    assert torch.allclose(kl3, kl_penalty(logp, ref, "k3") * mask)
    assert rewards3[1, 2] == 0 and rewards3[0, 2] == pytest.approx(2.0)


def test_per_token_rewards_rejects_bad_input():
    logp = torch.zeros(2, 3, dtype=DT)
    ok_mask, scores = torch.ones(2, 3), torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match=r"Rows \[1\]"):
        per_token_rewards(scores, logp, logp, torch.tensor([[1.0, 0, 0], [0, 0, 0]]), kl_coef=0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        per_token_rewards(torch.tensor([1.0, float("nan")], dtype=DT), logp, logp, ok_mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_coef"):
        per_token_rewards(scores, logp, logp, ok_mask, kl_coef=-0.1)
    with pytest.raises(ValueError, match="shape \\[batch\\]"):
        per_token_rewards(scores[:, None], logp, logp, ok_mask, kl_coef=0.1)


# ----------------------------------------------------------------------------------------------
# PPO losses
# ----------------------------------------------------------------------------------------------

# Five real tokens covering the four clip cases, plus one padding token whose ratio is inf.
RATIOS = [1.1, 1.5, 1.5, 0.5, 0.5, float("inf")]
ADVANTAGES = [2.0, 1.0, -1.0, -1.0, 1.0, 5.0]
POLICY_MASK = [1, 1, 1, 1, 1, 0]


def test_clipped_policy_loss_hand_computed_with_gradients():
    old = torch.tensor([[-1.0, -2.0, -0.7, -3.0, -0.2, -1.0]], dtype=DT)
    logp = (old + torch.tensor([RATIOS], dtype=DT).log()).requires_grad_()
    adv, mask = torch.tensor([ADVANTAGES], dtype=DT), torch.tensor([POLICY_MASK], dtype=DT)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_range=0.2)

    # Per token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   r=1.1 A=+2 (inside): -2.2;   r=1.5 A=+1: max(-1.5, -1.2) = -1.2 (clipped)
    #   r=1.5 A=-1: max(1.5, 1.2) = 1.5;   r=0.5 A=-1: max(0.5, 0.8) = 0.8 (clipped)
    #   r=0.5 A=+1: max(-0.5, -0.8) = -0.5
    assert loss.item() == pytest.approx((-2.2 - 1.2 + 1.5 + 0.8 - 0.5) / 5)
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx((1.1 + 1.5 + 1.5 + 0.5 + 0.5) / 5)
    assert stats["ratio_max"] == pytest.approx(1.5)
    real_r = torch.tensor(RATIOS[:5], dtype=DT)
    assert stats["approx_kl"] == pytest.approx(((real_r - 1) - real_r.log()).mean().item())

    # d loss / d logp = -A * r / 5 where unclipped; 0 where clipped in the advantage's direction and on padding.
    loss.backward()
    expected_grad = torch.tensor([[-2.2 / 5, 0.0, 1.5 / 5, 0.0, -0.5 / 5, 0.0]], dtype=DT)
    assert torch.allclose(logp.grad, expected_grad)


def test_clipped_value_loss_hand_computed_with_gradients():
    v = torch.tensor([[1.0, 1.5, 1.5, 0.0, float("nan")]], dtype=DT, requires_grad=True)
    v_old = torch.tensor([[0.9, 1.0, 1.0, 1.0, 0.0]], dtype=DT)
    R = torch.tensor([[2.0, 2.0, 1.0, 2.0, 0.0]], dtype=DT)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    loss, stats = clipped_value_loss(v, v_old, R, mask, clip_range_value=0.2)

    # v_clip = [1.0, 1.2, 1.2, 0.8]; errors (v-R)^2 = [1, .25, .25, 4], (v_clip-R)^2 = [1, .64, .04, 1.44]
    # max = [1, .64, .25, 4]; only token 2 takes the clipped error.
    assert loss.item() == pytest.approx(0.5 * (1 + 0.64 + 0.25 + 4) / 4)
    assert stats["value_clip_fraction"] == pytest.approx(1 / 4)

    # Gradient 0.5 * 2 * (v - R) / 4 on unclipped tokens, 0 on the clipped token and on padding.
    loss.backward()
    expected_grad = torch.tensor([[-1.0 / 4, 0.0, 0.5 / 4, -2.0 / 4, 0.0]], dtype=DT)
    assert torch.allclose(v.grad, expected_grad)


def test_losses_pass_gradcheck_away_from_kinks():
    g = torch.Generator().manual_seed(6)
    mask = ragged_mask([6, 4, 5], T=6)
    old = torch.randn(3, 6, generator=g, dtype=DT)
    # Ratios in [0.5, 1.5], pushed away from the kinks at 0.8 and 1.2 (gradcheck steps by 1e-6).
    r = 0.5 + torch.rand(3, 6, generator=g, dtype=DT)
    near = ((r - 0.8).abs() < 0.05) | ((r - 1.2).abs() < 0.05)
    r = torch.where(near, r + 0.1, r)
    logp = (old + r.log()).requires_grad_()
    adv = torch.randn(3, 6, generator=g, dtype=DT)
    _, stats = clipped_policy_loss(logp, old, adv, mask)
    assert 0 < stats["clip_fraction"] < 1  # both clipped and unclipped tokens are exercised
    assert torch.autograd.gradcheck(lambda lp: clipped_policy_loss(lp, old, adv, mask)[0], (logp,))

    v_old = torch.randn(3, 6, generator=g, dtype=DT)
    returns = torch.randn(3, 6, generator=g, dtype=DT)
    step = 0.8 * (torch.rand(3, 6, generator=g, dtype=DT) - 0.5)
    step = torch.where((step.abs() - 0.2).abs() < 0.03, step * 0.5, step)  # away from the value clip at 0.2
    v = (v_old + step).requires_grad_()
    # Preconditions: both branches are exercised, and no clipped token sits on a tie of the two errors.
    real, outside = mask.bool(), (step.abs() > 0.2) & mask.bool()
    assert outside.any() and (real & ~outside).any()
    err1, err2 = (v - returns) ** 2, (v_old + step.clamp(-0.2, 0.2) - returns) ** 2
    assert ((err1 - err2).abs()[outside] > 1e-4).all()
    assert torch.autograd.gradcheck(lambda vv: clipped_value_loss(vv, v_old, returns, mask)[0], (v,))


def test_losses_validate_clip_ranges():
    x, mask = torch.zeros(1, 2, dtype=DT), torch.ones(1, 2)
    with pytest.raises(ValueError, match="clip_range must"):
        clipped_policy_loss(x, x, x, mask, clip_range=0.0)
    with pytest.raises(ValueError, match="clip_range_value must"):
        clipped_value_loss(x, x, x, mask, clip_range_value=-1.0)


# ----------------------------------------------------------------------------------------------
# Entropy
# ----------------------------------------------------------------------------------------------


def test_entropy_matches_definition_and_uniform():
    p = torch.tensor([0.7, 0.2, 0.1], dtype=DT)
    logits = (p.log() + 3.0)[None, None, :]  # a shift of the logits does not change the softmax
    expected = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert entropy_from_logits(logits).item() == pytest.approx(expected)

    V = 50
    uniform = torch.full((2, 3, V), 123.0, dtype=DT)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2, 3), math.log(V), dtype=DT))


def test_entropy_is_stable_with_huge_and_infinite_logits():
    logits = torch.tensor([[[1000.0, 1000.0, -float("inf"), -float("inf")]]], dtype=DT, requires_grad=True)
    h = entropy_from_logits(logits)
    assert h.item() == pytest.approx(math.log(2))  # two equally likely tokens, two impossible ones
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()

    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 5, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(entropy_from_logits, (x,))
