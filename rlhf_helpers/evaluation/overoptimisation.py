"""Reward over-optimisation: the functional forms of Gao, Schulman & Hilton (2022) and best-of-n's KL.

Gao, Schulman & Hilton, "Scaling Laws for Reward Model Overoptimization" (2022), measure how a *gold* reward
changes as a policy is optimised against a *proxy* reward model, as a function of the distance from the initial
policy, ``d = sqrt(KL(pi || pi_init))``. With ``R(d)`` the gold reward's gain over the initial policy
(``R(0) = 0``), they find

* best-of-n:            ``R_bon(d) = d (alpha_bon - beta_bon * d)``
* reinforcement learning: ``R_RL(d)  = d (alpha_RL  - beta_RL  * log d)``

while the proxy keeps rising. Both forms are linear in (alpha, beta), so a least-squares fit needs no iterative
optimiser: ``R = alpha * d - beta * d**2`` (best-of-n) and ``R = alpha * d - beta * d log d`` (RL), without an
intercept. The gold peaks where ``dR/dd = 0``: at ``d* = alpha / (2 beta)`` for best-of-n and at
``d* = exp(alpha / beta - 1)`` for RL (for beta > 0; a beta <= 0 means the fitted gold never turns down).

Best-of-n's KL from the base policy has a closed form, ``log n - (n - 1) / n`` nats (Stiennon et al. 2020,
"Learning to summarize from human feedback", and Gao et al. 2022); Beirami et al. 2024, "Theoretical guarantees on
the best-of-n alignment policy", show that it is an upper bound on the true KL, exact when no two samples tie.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["best_of_n_kl", "OveroptimisationFit", "fit_overoptimisation", "gold_gain"]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) in nats: ``log n - (n - 1) / n`` (0 for n = 1; grows like log n)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples, got n = {n}.")
    return math.log(n) - (n - 1) / n


@dataclass
class OveroptimisationFit:
    """A fitted ``R(d)`` of Gao et al. 2022 (``form`` = "rl" or "bon") and where its gold reward peaks."""

    form: str
    alpha: float
    beta: float
    r_squared: float
    """Share of the gain's variance (around its mean) that the fit explains: 1 - SS_residual / SS_total. High values
    are easy for points that rise steadily; read the fitted curve against the points too."""
    peak_d: float
    """sqrt(KL) where the fitted gold gain is largest (inf: the fit never turns down)."""
    peak_gain: float
    n_points: int

    @property
    def peak_kl(self) -> float:
        """The KL (nats) where the fitted gold peaks: ``peak_d ** 2``."""
        return self.peak_d**2

    def __call__(self, d) -> np.ndarray:
        """The fitted gain at distances `d` (array-like of sqrt-KL values)."""
        d = np.asarray(d, dtype=float)
        return d * (self.alpha - self.beta * _shape(self.form, d))

    def as_dict(self) -> dict:
        return {**asdict(self), "peak_kl": self.peak_kl}


def _shape(form: str, d: np.ndarray) -> np.ndarray:
    """What beta multiplies inside the bracket: d for best-of-n, log d for RL (0 at d = 0, where R = 0 anyway)."""
    if form == "bon":
        return d
    if form == "rl":
        return np.log(np.where(d > 0, d, 1.0))
    raise ValueError(f"form must be 'rl' (reinforcement learning) or 'bon' (best-of-n), got {form!r}.")


def gold_gain(kl, gold) -> tuple[np.ndarray, np.ndarray]:
    """``(d, R)`` from a run's points: ``d = sqrt(KL)``, ``R = gold - gold at KL 0`` (the first point must be the
    initial policy, KL = 0, as Gao et al.'s R(0) = 0 requires). Slightly negative KL estimates (sampling noise
    around 0) count as 0."""
    kl, gold = np.asarray(kl, dtype=float), np.asarray(gold, dtype=float)
    if kl.shape != gold.shape or kl.ndim != 1 or len(kl) < 3:
        raise ValueError(f"kl and gold must be 1-D and of the same length >= 3; got shapes {kl.shape}, {gold.shape}.")
    if abs(kl[0]) > 1e-6:
        raise ValueError(f"the first point must be the initial policy (KL 0), got KL {kl[0]:.3g}: put the starting "
                         "policy's evaluation first.")
    return np.sqrt(np.clip(kl, 0.0, None)), gold - gold[0]


def fit_overoptimisation(kl, gold, form: str = "rl") -> OveroptimisationFit:
    """Least-squares fit of Gao et al.'s ``R(d)`` to points along a run (or over best-of-n's n).

    Args:
        kl: ``[N]`` KL(pi || pi_init) in nats at each point, the first one 0 (the initial policy).
        gold: ``[N]`` the gold reward at each point (here: an independent judge's mean p(positive)).
        form: "rl" for ``d (alpha - beta log d)``, "bon" for ``d (alpha - beta d)``.
    """
    d, gain = gold_gain(kl, gold)
    design = np.stack([d, -d * _shape(form, d)], axis=1)  # R = alpha * d - beta * d * shape(d); no intercept
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    fitted = design @ np.array([alpha, beta])
    total = float(np.sum((gain - gain.mean()) ** 2))
    r_squared = 1.0 - float(np.sum((gain - fitted) ** 2)) / total if total > 0 else float("nan")
    if beta <= 0:
        peak_d = math.inf
    elif form == "bon":
        peak_d = alpha / (2 * beta)
    else:
        peak_d = math.exp(min(alpha / beta - 1, 700.0))
    fit = OveroptimisationFit(form, float(alpha), float(beta), r_squared, float(peak_d), float("nan"), len(d))
    fit.peak_gain = float(fit(peak_d)) if math.isfinite(peak_d) else math.inf
    return fit
