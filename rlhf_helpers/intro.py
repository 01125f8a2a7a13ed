"""Notebook 00's closed-form KL-regularised optimum on a toy problem.

For one prompt and a finite set of outputs, ``E_pi[r] - beta * KL(pi || pi_ref)`` is maximised by
``pi*(y) = pi_ref(y) exp(r(y)/beta) / Z``. This module holds that toy problem and its numbers
(`toy_problem`, `optimal_policy`, `kl_divergence`) and the figure drawn from them (`draw_kl_leash`), so that
notebook 00 and ``scripts/make_figures.py`` (which saves the figure as ``images/kl_leash.png``) compute with
the same functions.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["BETAS", "toy_problem", "optimal_policy", "kl_divergence", "draw_kl_leash"]

BETAS = (0.1, 0.3, 1.0, 3.0)
"""The beta values drawn in kl_leash.png (small beta = loose leash)."""


def toy_problem(n: int = 241):
    """A 1-D stand-in for "all possible reviews": outputs y on a grid, a reference policy, a reward.

    y is a made-up sentiment axis (-4 = very negative, +4 = very positive). The reference policy
    `pi_ref` is a mixture of two bumps, heavier on the negative side, like an SFT model that writes
    negative and positive reviews. The reward r(y) = tanh(y) is bounded, like a sentiment classifier.

    Returns (y, pi_ref, reward), three float64 arrays of shape (n,); `pi_ref` sums to 1.
    """
    y = np.linspace(-4.0, 4.0, n)
    bumps = 0.6 * np.exp(-0.5 * ((y + 1.2) / 0.7) ** 2) + 0.4 * np.exp(-0.5 * ((y - 1.0) / 0.8) ** 2)
    pi_ref = bumps / bumps.sum()
    reward = np.tanh(y)
    return y, pi_ref, reward


def optimal_policy(pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """The maximiser of E_pi[r] - beta * KL(pi || pi_ref): pi*(y) = pi_ref(y) exp(r(y)/beta) / Z.

    Computed in log space (a softmax of log pi_ref + r/beta) so small beta does not overflow.
    Shapes: pi_ref, reward (n,) -> (n,).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (got {beta}); beta -> 0 is the unregularised argmax of r.")
    logits = np.log(pi_ref) + reward / beta
    logits = logits - logits.max()
    weights = np.exp(logits)
    return weights / weights.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum_y p(y) log(p(y)/q(y)) in nats; terms with p(y) = 0 contribute 0."""
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def draw_kl_leash(betas=BETAS) -> plt.Figure:
    y, pi_ref, reward = toy_problem()
    dy = y[1] - y[0]  # plot densities (probability per unit y) so the curves do not depend on n
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(betas)))

    fig, (ax_pi, ax_front) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw=dict(width_ratios=[1.35, 1]))

    # Left: the distributions.
    ax_pi.fill_between(y, pi_ref / dy, color="#bbbbbb", alpha=0.6, label="$\\pi_{\\mathrm{ref}}$ (reference)")
    for beta, c in zip(betas, colors):
        pi_star = optimal_policy(pi_ref, reward, beta)
        ax_pi.plot(y, pi_star / dy, color=c, linewidth=2.2, label=f"$\\pi^*$, $\\beta$ = {beta:g}")
    ax_pi.set_xlabel("output $y$ (toy sentiment axis: negative $\\leftarrow$ $\\rightarrow$ positive)")
    ax_pi.set_ylabel("probability density")
    ax_pi.set_title("$\\pi^*(y) \\propto \\pi_{\\mathrm{ref}}(y)\\,\\exp(r(y)/\\beta)$")
    ax_pi.set_xlim(y[0], y[-1])
    ax_pi.set_ylim(bottom=0)
    ax_r = ax_pi.twinx()
    ax_r.plot(y, reward, color="#d95f02", linestyle="--", linewidth=1.6)
    ax_r.set_ylabel("reward $r(y) = \\tanh(y)$", color="#d95f02")
    ax_r.tick_params(axis="y", colors="#d95f02")
    ax_r.set_ylim(-1.05, 1.6)
    handles, labels = ax_pi.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="#d95f02", linestyle="--"))
    labels.append("reward $r(y)$")
    ax_pi.legend(handles, labels, loc="upper left", fontsize=9.5, framealpha=0.95)

    # Right: the trade-off traced by beta, from a dense sweep, with the drawn betas marked.
    sweep = np.logspace(-1.5, 1.5, 200)
    kls = [kl_divergence(optimal_policy(pi_ref, reward, b), pi_ref) for b in sweep]
    rewards = [float(optimal_policy(pi_ref, reward, b) @ reward) for b in sweep]
    ax_front.plot(kls, rewards, color="#555555", linewidth=1.5, zorder=1, label="all $\\beta$ (sweep)")
    for beta, c in zip(betas, colors):
        p = optimal_policy(pi_ref, reward, beta)
        ax_front.scatter(kl_divergence(p, pi_ref), p @ reward, color=c, s=70, zorder=2,
                         edgecolor="black", label=f"$\\beta$ = {beta:g}")
    ax_front.axhline(pi_ref @ reward, color="#999999", linestyle=":", linewidth=1.2)
    ax_front.text(0.02, pi_ref @ reward + 0.03, "reward of $\\pi_{\\mathrm{ref}}$", fontsize=9, color="#666666",
                  transform=ax_front.get_yaxis_transform())
    ax_front.set_ylim(bottom=pi_ref @ reward - 0.1)
    ax_front.set_xlabel("$\\mathrm{KL}(\\pi^* \\,\\|\\, \\pi_{\\mathrm{ref}})$  (nats)")
    ax_front.set_ylabel("expected reward $\\mathbb{E}_{\\pi^*}[r]$")
    ax_front.set_title("smaller $\\beta$: more reward, further from $\\pi_{\\mathrm{ref}}$")
    ax_front.legend(loc="center right", fontsize=9.5)
    ax_front.grid(alpha=0.3)

    fig.tight_layout()
    return fig
