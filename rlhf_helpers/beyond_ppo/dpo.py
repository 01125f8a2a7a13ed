"""Direct Preference Optimization from scratch (Rafailov et al. 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model", equation 7).

DPO skips the reward model and the sampling of PPO: the KL-regularised objective's optimum
``pi*(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta)`` (notebook 00) can be solved for the reward,
``r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x)``; put into the Bradley–Terry likelihood of a
preference ``y_w ≻ y_l`` the ``Z(x)`` cancels, and the policy itself is trained with

    L_DPO = -log sigmoid( beta [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] ).

Shapes: B preference pairs; log-probabilities are of whole completions (the sum over their tokens), ``[B]``.
The argument order of `dpo_loss` is the paper's reference code's and TRL's: policy chosen, policy rejected,
reference chosen, reference rejected. ``tests/test_dpo.py`` checks it against TRL 1.16's `DPOTrainer` loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kl_regularised_optimum", "dpo_loss", "implicit_rewards", "sequence_logprobs", "preference_metrics"]


def kl_regularised_optimum(reference_logprobs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """``log pi*(y|x)`` of the KL-regularised objective's optimum over a finite set of completions.

    ``max_pi E_pi[r] - beta KL(pi || pi_ref)`` is maximised by ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)``
    (Rafailov et al. 2023, equation 4; notebook 00). Args: ``[P, K]`` log pi_ref of K completions of each of P
    prompts (each row a distribution over its K completions), ``[P, K]`` rewards, beta > 0. Returns ``[P, K]``,
    each row normalised (``log Z(x)`` = logsumexp over the row).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    return torch.log_softmax(reference_logprobs + rewards / beta, dim=-1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss (mean over the B pairs) and the implicit rewards of the chosen and rejected completions.

    Args: four ``[B]`` tensors of sequence log-probabilities; `beta` > 0, the strength of the implicit KL leash
    (small beta: the policy may move far from the reference). Returns ``(loss, chosen_rewards, rejected_rewards)``,
    rewards ``[B]`` detached (`implicit_rewards`). ``-logsigmoid`` rather than ``-log(sigmoid)``: it stays finite
    for margins of any size.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (the implicit reward is beta * log-ratio), got {beta}.")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    loss = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()
    chosen_rewards, rejected_rewards = implicit_rewards(policy_chosen_logps, policy_rejected_logps,
                                                        reference_chosen_logps, reference_rejected_logps, beta)
    return loss, chosen_rewards, rejected_rewards


def implicit_rewards(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                     beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` of the chosen and the rejected completions,
    ``[B]`` each, detached: the reward that the policy, read as the optimum of the KL-regularised objective, is
    optimal for (up to the prompt-only ``beta log Z(x)``, which cancels in a comparison)."""
    chosen = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected = beta * (policy_rejected_logps - reference_rejected_logps).detach()
    return chosen, rejected


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` sum of ``log p(x_t | x_<t)`` over the completion tokens of each right-padded row.

    Args: ``[N, L]`` token ids, attention mask (1 = real token), completion mask (1 = a completion token, 0 = prompt
    or padding). Token t is predicted by the logits at t - 1, so the first token of a row is never scored.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_logps = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:].to(token_logps.dtype)).sum(1)


def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """How well the implicit reward ranks the pairs: ``accuracy`` (share with chosen > rejected; ties count 0) and
    the mean ``margin`` (chosen - rejected), plus each side's mean."""
    margin = chosen_rewards - rejected_rewards
    return {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
            "chosen_reward": chosen_rewards.mean().item(), "rejected_reward": rejected_rewards.mean().item()}
