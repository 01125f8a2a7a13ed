"""Masked statistics and Generalised Advantage Estimation (GAE) for PPO on text.

Shapes: a batch of B responses, each padded to T tokens, gives ``[B, T]`` tensors. ``mask`` ``[B, T]``
(0/1 floats or bools) is 1 on real response tokens, up to and including the EOS token if there is one,
and 0 on the padding after it. Every function here ignores padding completely: whatever numbers sit
there (even NaN) change nothing, and outputs at padding positions are 0.

The pieces:

* **Masked mean / variance / whitening.** Means and variances over real tokens only. "Whitening"
  rescales to mean 0 and standard deviation 1, ``(x - mean) / sqrt(var + 1e-8)``. PPO whitens the
  advantages of each mini-batch so the step size does not depend on the scale of the reward
  (Huang et al. 2023, "The N Implementation Details of RLHF with PPO", section "Policy training implementation details").

* **GAE** (Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation", eqs. 11-16). With per-token rewards ``r_t`` and value estimates ``V_t``::

      delta_t = r_t + gamma * V_{t+1} - V_t                      (one-step TD error)
      A_t     = sum_{l>=0} (gamma * lam)^l * delta_{t+l}          (eq. 16)
              = delta_t + gamma * lam * A_{t+1}                   (the recursion we compute)
      R_t     = A_t + V_t                                         (the value function's target)

  ``lam`` trades bias for variance: ``lam = 0`` trusts the value function (``A_t = delta_t``),
  ``lam = 1`` trusts only the rewards (``A_t`` = reward-to-go minus ``V_t``). The response ends after
  its last real token, so ``V`` past it is 0. RLHF uses ``gamma = 1`` and ``lam = 0.95``
  (Ziegler et al. 2019; Huang et al. 2023).

* **Explained variance** ``1 - Var[R - V] / Var[R]``: 1 when the value function predicts the returns
  exactly, 0 when it does no better than a constant, negative when it is worse than a constant.

* **Leave-one-out baseline** (RLOO; Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
  Free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
  from Human Feedback in LLMs"). No value function: sample k responses per prompt and use the mean
  reward of the *other* k - 1 as each one's baseline. One number per response, not per token.
"""

from __future__ import annotations

import math

import torch

from ..core.tensors import as_bool_mask, check_same_shape

WHITEN_EPS = 1e-8  # keeps the division finite when every real token has the same value


# ----------------------------------------------------------------------------------------------
# Masked statistics
# ----------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1.

    ``dim=None`` averages over all real tokens (a 0-d tensor); ``dim=1`` gives one mean per row ``[B]``.
    """
    m = as_bool_mask(mask, x)
    # torch.where, not x * mask: 0 * NaN is NaN, and padding may hold anything.
    total = torch.where(m, x, torch.zeros_like(x)).sum(dim=dim)
    count = m.sum(dim=dim)
    if (count == 0).any():
        where = "the whole mask" if dim is None else f"at least one slice along dim {dim}"
        raise ValueError(f"masked_mean: {where} has no real tokens (all zeros); there is nothing to average.")
    return total / count.to(total.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all real tokens (0-d tensor); ``unbiased`` divides by ``n - 1``."""
    m = as_bool_mask(mask, x)
    n = int(m.sum())
    if unbiased and n < 2:
        raise ValueError(f"masked_var(unbiased=True) needs at least 2 real tokens, got {n}; "
                         "use a larger batch or unbiased=False.")
    x = torch.where(m, x, torch.zeros_like(x))  # clean padding first, so no NaN reaches the gradient
    centred = x - masked_mean(x, m)
    var = masked_mean(centred**2, m)
    if unbiased:
        var = var * n / (n - 1)  # Bessel's correction
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Rescale ``x`` to mean 0 and (unbiased) standard deviation 1 over real tokens; padding -> 0.

    ``shift_mean=False`` divides by the standard deviation but keeps the original mean (the historical
    TRL option for rewards, whose sign carries meaning). Output has the shape of ``x``.
    """
    m = as_bool_mask(mask, x)
    x = torch.where(m, x, torch.zeros_like(x))  # clean padding first, so no NaN reaches the gradient
    mean, var = masked_mean(x, m), masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros_like(whitened))


# ----------------------------------------------------------------------------------------------
# Generalised Advantage Estimation
# ----------------------------------------------------------------------------------------------


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE (Schulman et al. 2016, eq. 16), both ``[B, T]``, 0 at padding.

    Args:
        rewards: ``[B, T]`` per-token rewards (see ``kl.per_token_rewards``).
        values: ``[B, T]`` value estimates ``V_t`` from the rollout.
        mask: ``[B, T]`` right-padded 0/1 mask (ones, then zeros). A hole in the middle would be read
            as "the episode ended here", so it is rejected.
        gamma: discount in [0, 1]; 1 in RLHF (a response is short and its score arrives at the end).
        lam: GAE lambda in [0, 1].

    The outputs are detached: they are fixed targets for the PPO losses, not something to
    differentiate through.
    """
    check_same_shape(rewards=rewards, values=values)
    if rewards.dim() != 2:
        raise ValueError(f"compute_gae expects [batch, tokens] tensors, got shape {tuple(rewards.shape)}.")
    m = as_bool_mask(mask, rewards)
    if (m[:, 1:] & ~m[:, :-1]).any():
        raise ValueError("compute_gae needs right-padded masks (1s, then only 0s in each row); "
                         "found a 1 after a 0. Build the mask from the response length / first EOS.")
    if not (0.0 <= gamma <= 1.0) or not (0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}.")

    zeros = torch.zeros_like(rewards)
    rewards = torch.where(m, rewards.detach(), zeros)
    values = torch.where(m, values.detach(), zeros)  # V = 0 on padding, i.e. after the episode ends

    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])      # V_{t+1}
    next_advantage = torch.zeros_like(rewards[:, 0])  # A_{t+1}
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # On padding, zero the advantage so the last real token sees A_{t+1} = 0 and V_{t+1} = 0.
        advantages[:, t] = torch.where(m[:, t], advantage, torch.zeros_like(advantage))
        next_value, next_advantage = values[:, t], advantages[:, t]
    returns = torch.where(m, advantages + values, zeros)
    return advantages, returns


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[returns - values] / Var[returns]`` over real tokens; NaN if the returns are constant."""
    check_same_shape(values=values, returns=returns)
    m = as_bool_mask(mask, values)
    values, returns = values.detach(), returns.detach()
    var_returns = masked_var(returns, m, unbiased=False)
    if var_returns == 0:
        return math.nan  # undefined: there is no variance to explain
    return float(1.0 - masked_var(returns - values, m, unbiased=False) / var_returns)


# ----------------------------------------------------------------------------------------------
# Leave-one-out baseline (RLOO)
# ----------------------------------------------------------------------------------------------


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO advantages: each response's reward minus the mean reward of the other ``k - 1`` of its prompt.

    For the k responses ``y_1 .. y_k`` sampled for one prompt (Kool et al. 2019; Ahmadian et al. 2024)::

        b_i = (sum_j r_j - r_i) / (k - 1)          (the others' mean: independent of y_i, so unbiased)
        A_i = r_i - b_i = k / (k - 1) * (r_i - mean_j r_j)

    The second form shows the link to GRPO: the same centring on the group mean, scaled by ``k / (k - 1)``
    instead of divided by the group's standard deviation.

    Args:
        rewards: the sequence-level rewards (score, possibly minus ``beta * KL``) of ``N`` prompts with ``k``
            responses each, either ``[N, k]`` (one row per prompt) or flat ``[N * k]`` with the k responses
            of a prompt **next to each other**: entries ``j*k .. j*k + k - 1`` belong to prompt ``j``. That is
            the layout of ``prompts.repeat_interleave(k)`` and of TRL's ``RepeatSampler``; the tiled layout of
            ``prompts.repeat(k)`` (p0, p1, .., p0, p1, ..) would mix prompts and give wrong baselines.
        k: responses per prompt, at least 2 (with one response there is no "other" to average).

    Returns:
        Advantages with the shape (and layout) of ``rewards``. They are constants: detached.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2 (responses per prompt), got {k!r}: a leave-one-out baseline "
                         "needs at least one other response of the same prompt.")
    if rewards.dim() == 2:
        if rewards.shape[1] != k:
            raise ValueError(f"rewards of shape {tuple(rewards.shape)} should be [num_prompts, k] = [*, {k}].")
    elif rewards.dim() == 1:
        if rewards.numel() % k != 0:
            raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of k = {k} responses per prompt.")
    else:
        raise ValueError(f"rewards must be [num_prompts * k] or [num_prompts, k], got shape {tuple(rewards.shape)}.")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; score every response before computing advantages.")

    grouped = rewards.detach().reshape(-1, k)  # [N, k]: row j = the k responses of prompt j
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(rewards.shape)


def masked_whiten_shards(parts: list[tuple[torch.Tensor, torch.Tensor]], all_sum=None) -> list[torch.Tensor]:
    """`masked_whiten` of one mini-batch held as several shards (``[(x, mask), ...]``, each ``[b_s, R_s]``;
    the response lengths R_s may differ), with the mean and unbiased variance of the *whole* mini-batch.

    `all_sum`: adds a tensor over processes (``core.distributed.sum_over_processes``) when other processes
    hold more shards of the same mini-batch. One shard on one process: exactly `masked_whiten`.
    """
    if len(parts) == 1 and all_sum is None:
        return [masked_whiten(*parts[0])]
    total = torch.zeros(3, dtype=torch.float64)  # sum, sum of squares, count of real tokens
    for x, mask in parts:
        m = as_bool_mask(mask, x)
        values = x[m].double().cpu()
        total += torch.stack([values.sum(), (values**2).sum(), torch.tensor(float(values.numel()))])
    if all_sum is not None:
        total = all_sum(total.to(parts[0][0].device)).cpu()
    total_sum, total_squares, n = total.tolist()
    if n < 2:
        raise ValueError(f"whitening needs at least 2 real tokens in a mini-batch, got {int(n)}.")
    mean = total_sum / n
    var = max(total_squares / n - mean**2, 0.0) * n / (n - 1)  # Bessel's correction, as in `masked_var`
    out = []
    for x, mask in parts:
        m = as_bool_mask(mask, x)
        whitened = (torch.where(m, x, torch.zeros_like(x)) - mean) / math.sqrt(var + WHITEN_EPS)
        out.append(torch.where(m, whitened, torch.zeros_like(whitened)))
    return out
