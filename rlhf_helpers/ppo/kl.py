"""The KL penalty of RLHF: how far the policy has drifted from the reference model, per token.

RLHF maximises the reward model's score while staying close to the reference (SFT) model
(Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", section 2.2)::

    R(x, y) = score(x, y) - beta * KL(pi(.|x) || pi_ref(.|x))

The KL of a whole response is the sum of per-token terms, so PPO gets a reward at *every* token:
``-beta * kl_t``, and the score only at the last real token (Huang et al. 2023, "The N Implementation
Details of RLHF with PPO", section "Policy training implementation details"). That is why the KL is per token but the score comes at the end.

**Estimating KL from samples** (Schulman 2020, "Approximating KL Divergence",
http://joschu.net/blog/kl-approx.html). For a token sampled from pi, with ``logr = logp_ref - logp``
and ``r = p_ref / p = exp(logr)``:

* ``k1 = -logr = logp - logp_ref``: unbiased, but a single token can be negative, and its variance is high.
* ``k3 = (r - 1) - logr``: also unbiased (``E_pi[r] = 1``, so the ``r - 1`` term adds zero on average) and
  never negative (``log r <= r - 1``), with lower variance when pi and pi_ref are close.

A *negative* mean k1 over a batch means the samples were not drawn from pi: top-k / top-p / min-length
during generation, or padding counted as tokens. Sample with ``top_k=0, top_p=1`` and mask correctly.

**Controllers for beta** (``kl_coef``). A fixed beta (TRL's later PPOTrainer used 0.05), or Ziegler et al.'s
adaptive, "log-space proportional" controller that steers the measured KL towards a target::

    err  = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + err * n_steps / horizon)

The paper writes ``beta * (1 + K_beta * err)``; the code behind it (and the historical TRL) used
``K_beta = n_steps / horizon``, with ``n_steps`` the number of samples in the batch. Defaults of the
historical TRL IMDb recipe: init 0.2, target 6, horizon 10,000.
"""

from __future__ import annotations

import math

import torch

from ..core.tensors import as_bool_mask, check_same_shape, last_token_index

KL_ESTIMATORS = ("k1", "k3")


# ----------------------------------------------------------------------------------------------
# Per-token KL estimates
# ----------------------------------------------------------------------------------------------


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimates ``[B, T]`` of KL(pi || pi_ref) for tokens sampled from pi.

    Args:
        logprobs: ``[B, T]`` log pi(token) of the sampled tokens under the policy.
        ref_logprobs: ``[B, T]`` log pi_ref(token) of the same tokens under the reference model.
        estimator: "k1" (``logp - logp_ref``) or "k3" (``(r - 1) - log r``, ``r = exp(logp_ref - logp)``).

    Padding is not masked here: ``per_token_rewards`` does that.
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_ratio = ref_logprobs - logprobs  # log r, r = p_ref / p
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        # expm1(x) = exp(x) - 1 without the cancellation error of exp(x) - 1 when x is tiny.
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}.")


# ----------------------------------------------------------------------------------------------
# KL coefficient controllers
# ----------------------------------------------------------------------------------------------


def _check_number(name: str, x: float, positive: bool) -> float:
    x = float(x)
    bad = not math.isfinite(x) or (x <= 0 if positive else x < 0)
    if bad:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {x}.")
    return x


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing (same interface as the adaptive one)."""

    def __init__(self, coef: float):
        self.value = _check_number("KL coefficient", coef, positive=False)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "fixed")
        self.value = _check_number("KL coefficient", state["value"], positive=False)


class AdaptiveKLController:
    """Ziegler et al. (2019)'s controller: nudges ``value`` so the measured KL approaches ``target``.

    Args:
        init_coef: the starting coefficient beta (>= 0).
        target: the KL (in nats per response, summed over tokens) to aim for (> 0).
        horizon: how many samples it takes to correct an error; larger = slower, smoother (> 0).
    """

    def __init__(self, init_coef: float, target: float, horizon: float):
        self.value = _check_number("init_coef", init_coef, positive=False)
        self.target = _check_number("target", target, positive=True)
        self.horizon = _check_number("horizon", horizon, positive=True)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move the coefficient after a batch of ``n_steps`` samples whose mean KL was ``current_kl``."""
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl}; check the log-probs for NaN/inf.")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
        # Clipping the proportional error keeps one strange batch from moving beta by more than 20%
        # of n_steps / horizon.
        err = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "adaptive")
        self.value = _check_number("KL coefficient", state["value"], positive=False)
        self.target = _check_number("target", state["target"], positive=True)
        self.horizon = _check_number("horizon", state["horizon"], positive=True)


def _check_kind(state: dict, kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"This state_dict is for a {state.get('kind')!r} KL controller, not a {kind!r} one; "
                         "create the controller of the same kind as the run you are resuming.")


# ----------------------------------------------------------------------------------------------
# Per-token rewards
# ----------------------------------------------------------------------------------------------


def per_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RLHF reward at each token: ``-kl_coef * kl_t``, plus the score at the last real token.

    Args:
        scores: ``[B]`` one reward-model score per response.
        logprobs, ref_logprobs: ``[B, T]`` log-probs of the sampled response tokens under the policy
            (at sampling time) and under the reference model.
        mask: ``[B, T]`` 0/1, 1 on real response tokens.
        kl_coef: beta >= 0 (``controller.value``).
        estimator: "k1" or "k3", see ``kl_penalty``.

    Returns:
        ``(rewards, kl)``, both ``[B, T]``, 0 at padding, detached (they are fixed targets for PPO).
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    m = as_bool_mask(mask, logprobs)
    if logprobs.dim() != 2:
        raise ValueError(f"per_token_rewards expects [batch, tokens] log-probs, got shape {tuple(logprobs.shape)}.")
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must have shape [batch] = ({logprobs.shape[0]},), got {tuple(scores.shape)}; "
                         "give one scalar score per response.")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; check the reward model's output before computing rewards.")
    kl_coef = _check_number("kl_coef", kl_coef, positive=False)

    kl = kl_penalty(logprobs.detach(), ref_logprobs.detach(), estimator)
    kl = torch.where(m, kl, torch.zeros_like(kl))
    if not torch.isfinite(kl).all():
        raise ValueError("The KL estimate is NaN or inf on a real token: a log-prob is -inf/NaN there. "
                         "Sample with top_k=0, top_p=1.0 and recompute log-probs with the sampling temperature.")
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(m)] += scores.detach().to(rewards.dtype)
    return rewards, kl
