"""The PPO losses for language models: clipped policy loss, clipped value loss, entropy.

All losses are written to be MINIMISED (the optimiser's convention), and averaged over real response
tokens only: ``mask`` ``[B, T]`` is 1 on real tokens, 0 on padding (see ``advantages.py``). Which of
these details matter for RLHF, and why, is catalogued by Huang et al. 2023, "The N Implementation
Details of RLHF with PPO" (clipped value loss, whitened advantages, masking of padding).

**Clipped policy loss** (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7).
For each token, ``ratio = pi_new(token) / pi_old(token) = exp(logp - logp_old)`` and advantage ``A``::

    L_CLIP = E[ min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) ]     (to maximise)
    loss   = E[ max(-ratio * A, -clip(ratio, 1 - eps, 1 + eps) * A) ]   (to minimise; = -L_CLIP)

The pessimistic max means: once the ratio has moved past ``1 + eps`` for a good token (A > 0), or below
``1 - eps`` for a bad token (A < 0), that token's gradient is zero. The policy cannot profit from moving
further from the policy that collected the data. Moves in the *harmful* direction are never clipped.

**Clipped value loss** (OpenAI baselines' ``ppo2`` and the historical TRL PPO; it is not in the paper,
and Engstrom et al. 2020 found it does not always help). The new value may move at most ``c`` from the
rollout's value before the loss stops rewarding it::

    v_clip = v_old + clip(v - v_old, -c, c)
    loss   = 0.5 * E[ max((v - R)^2, (v_clip - R)^2) ]

**Entropy** of the next-token distribution, ``H = -sum_v p_v log p_v``, a diagnostic for mode collapse
(entropy falling towards 0 while the policy repeats "great great great").

Statistics come back as plain floats for logging:

* ``clip_fraction``: share of real tokens whose clipped term is the active one (their gradient is 0).
* ``approx_kl``: KL(pi_old || pi_new) over the mini-batch, by the k3 estimator of Schulman 2020
  (tokens were sampled from pi_old; ``r = pi_new / pi_old = ratio``, ``k3 = (ratio - 1) - log ratio``).
  It is >= 0 and unbiased, and tells how far the PPO epochs have moved the policy.
* ``ratio_mean``, ``ratio_max``: over real tokens. A mean far above 1 is the warning sign that the
  historical TRL acted on (``ratio_threshold = 10``: skip the mini-batch).
* ``value_clip_fraction``: share of real tokens whose clipped value error is the larger one.
"""

from __future__ import annotations

import math

import torch

from ..core.tensors import as_bool_mask, check_same_shape
from .advantages import masked_mean


def _check_clip(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (PPO uses 0.2), got {value}.")
    return value


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss (Schulman et al. 2017, eq. 7, negated), mean over real tokens.

    Args:
        logprobs: ``[B, T]`` log-probs of the sampled tokens under the current policy (with gradient).
        old_logprobs: ``[B, T]`` the same tokens' log-probs at rollout time (treated as constants).
        advantages: ``[B, T]`` usually whitened GAE advantages (constants).
        mask: ``[B, T]`` 0/1, 1 on real tokens.
        clip_range: eps > 0.

    Returns:
        ``(loss, stats)``: a 0-d tensor and a dict with clip_fraction, approx_kl, ratio_mean, ratio_max.
    """
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    m = as_bool_mask(mask, logprobs)
    eps = _check_clip("clip_range", clip_range)

    # Zero the log-ratio on padding *before* exp: garbage there could overflow to inf, and even a
    # masked-out inf turns the gradient into NaN (0 * inf).
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    advantages = torch.where(m, advantages.detach(), torch.zeros_like(advantages))

    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    loss = masked_mean(torch.max(loss_unclipped, loss_clipped), m)

    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((loss_clipped > loss_unclipped).to(ratio.dtype), m).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m).item(),  # k3 of KL(old || new)
            "ratio_mean": masked_mean(ratio, m).item(),
            "ratio_max": ratio[m].max().item(),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss ``0.5 * mean(max((v - R)^2, (v_clip - R)^2))`` over real tokens.

    Args:
        values: ``[B, T]`` current value predictions (with gradient).
        old_values: ``[B, T]`` the values at rollout time (constants).
        returns: ``[B, T]`` GAE returns, the regression targets (constants).
        mask: ``[B, T]`` 0/1, 1 on real tokens.
        clip_range_value: c > 0, in the units of the value (the historical TRL used 0.2).

    Returns:
        ``(loss, stats)`` with stats ``{"value_clip_fraction": float}``.
    """
    check_same_shape(values=values, old_values=old_values, returns=returns)
    m = as_bool_mask(mask, values)
    c = _check_clip("clip_range_value", clip_range_value)

    zeros = torch.zeros_like(values)
    values = torch.where(m, values, zeros)  # clean padding so no NaN reaches the gradient
    old_values = torch.where(m, old_values.detach(), zeros)
    returns = torch.where(m, returns.detach(), zeros)

    values_clipped = old_values + torch.clamp(values - old_values, -c, c)
    error_unclipped = (values - returns) ** 2
    error_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(error_unclipped, error_clipped), m)

    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean((error_clipped > error_unclipped).to(values.dtype), m).item()}
    return loss, stats


def entropy_from_log_softmax(log_softmax: torch.Tensor) -> torch.Tensor:
    """`entropy_from_logits` when the log-softmax ``[B, T, V]`` is already at hand (no second normalisation)."""
    p = log_softmax.exp()
    # Raise log 0 = -inf to the most negative float *before* multiplying by p = 0, so neither the value nor
    # the gradient is NaN (one pass over [B, T, V]; finite entries are unchanged).
    return -torch.linalg.vecdot(p, log_softmax.clamp(min=torch.finfo(log_softmax.dtype).min))  # sum of products


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``[B, T]`` of the softmax over the last dim of ``logits`` ``[B, T, V]``, in nats.

    ``log_softmax`` subtracts the logsumexp, so large logits do not overflow. Logits of -inf (tokens
    banned outright) have p = 0 and contribute 0, as ``0 * log 0 = 0`` by convention.
    """
    return entropy_from_log_softmax(torch.log_softmax(logits, dim=-1))
