"""The DPO pieces that notebook 08's exercises stand on.

The exercises' CASES live in tests/exercise_cases/cases_08.py and run in tests/test_exercises.py.
"""

import torch

from rlhf_helpers.beyond_ppo.dpo import kl_regularised_optimum


# -- the pieces themselves ------------------------------------------------------------------------

def test_the_optimum_is_the_reference_tilted_by_the_reward_and_normalised():
    reference = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    rewards = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    optimum = kl_regularised_optimum(reference, rewards, beta=1.0).exp()
    weights = torch.tensor([0.5, 0.25 * torch.e, 0.25], dtype=torch.float64)
    assert torch.allclose(optimum[0], weights / weights.sum())
    # a huge beta keeps the reference; a tiny beta puts everything on the best completion
    assert torch.allclose(kl_regularised_optimum(reference, rewards, 1e9).exp(), reference.exp())
    assert kl_regularised_optimum(reference, rewards, 1e-3).exp()[0, 1] > 0.999


def test_the_implicit_reward_of_the_optimum_is_the_reward_up_to_a_constant():
    # Rafailov et al. 2023, equation 5: beta log(pi* / pi_ref) = r - beta log Z, the same shift for every completion
    generator = torch.Generator().manual_seed(0)
    reference = torch.log_softmax(torch.randn(2, 6, generator=generator, dtype=torch.float64), -1)
    rewards = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    beta = 0.3
    optimum = kl_regularised_optimum(reference, rewards, beta)
    shift = beta * (optimum - reference) - rewards
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-12)
