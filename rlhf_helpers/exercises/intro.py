"""Checks of notebook 00's exercise: the closed-form optimum of the KL-regularised objective."""

from __future__ import annotations

import numpy as np
import torch

from ..intro import optimal_policy as reference_optimal_policy
from ..intro import toy_problem
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_optimal_policy"]


@exercise("00", "optimal_policy", difficulty=2, importance=4, minutes=10)
def check_optimal_policy(fn) -> None:
    """`fn(pi_ref (n,), reward (n,), beta) -> (n,)`: pi*(y) = pi_ref(y) exp(r(y)/beta) / Z."""
    y, pi_ref, reward = toy_problem()
    rng = np.random.default_rng(0)
    small = rng.dirichlet(np.ones(5))
    cases = [(f"the toy problem, beta = {b}", pi_ref, reward, b) for b in (3.0, 1.0, 0.1)]
    cases += [("5 outputs, random reference, rewards in [-2, 2], beta = 0.5", small, rng.uniform(-2, 2, 5), 0.5),
              ("the toy problem, beta = 0.001 (exp(r / beta) overflows unless you work in log space)", pi_ref,
               reward, 0.001)]
    for case, p, r, beta in cases:
        answer = call(fn, p.copy(), r.copy(), beta, case=case)
        expect(isinstance(answer, np.ndarray) or isinstance(answer, torch.Tensor),
               f"optimal_policy: return a numpy array of shape {p.shape}, got {type(answer).__name__}.\n  case: {case}")
        answer = torch.as_tensor(np.asarray(answer, dtype=np.float64))
        expected = torch.as_tensor(reference_optimal_policy(p, r, beta))
        unnormalised = torch.as_tensor(p * np.exp(np.clip(r / beta, None, 700)))
        flipped = torch.as_tensor(reference_optimal_policy(p, -r, beta))
        times_beta = torch.as_tensor(reference_optimal_policy(p, r, 1 / beta))
        no_reference = torch.as_tensor(reference_optimal_policy(np.ones_like(p) / len(p), r, beta))
        expect_close(answer, expected, "optimal_policy", case=case, atol=1e-8, diagnoses=[
            (unnormalised, "the shape is right but it does not sum to 1: divide by Z = sum of pi_ref * exp(r / beta)."),
            (flipped, "probability moved towards the LOW rewards: the exponent is +r / beta."),
            (times_beta, "you multiplied the reward by beta: the exponent is r / beta (small beta = loose leash)."),
            (no_reference, "the reference is missing: pi* reweights pi_ref, it is not softmax(r / beta) alone."),
        ])
    passed("optimal_policy", len(cases))
