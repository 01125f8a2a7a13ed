"""Exercise cases of notebook 08: the KL-regularised optimum, the implicit reward, the DPO loss, the
log-probability of a completion.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

import torch
import torch.nn.functional as F

from rlhf_helpers.beyond_ppo.dpo import dpo_loss, implicit_rewards, kl_regularised_optimum, sequence_logprobs


# -- 8.1 the optimum ------------------------------------------------------------------------------

def optimum_unnormalised(reference, rewards, beta):
    return reference + rewards / beta


def optimum_times_beta(reference, rewards, beta):
    return torch.log_softmax(reference + rewards * beta, -1)


def optimum_without_reference(reference, rewards, beta):
    return torch.log_softmax(rewards / beta, -1)


def optimum_wrong_dim(reference, rewards, beta):
    return torch.log_softmax(reference + rewards / beta, 0)


def optimum_probabilities(reference, rewards, beta):  # probabilities, not their logs
    return torch.softmax(reference + rewards / beta, -1)


# -- 8.2 the implicit reward ----------------------------------------------------------------------

def implicit_reference(policy, reference, beta):
    return implicit_rewards(policy, policy, reference, reference, beta)[0]


def implicit_no_beta(policy, reference, beta):
    return (policy - reference).detach()


def implicit_divided(policy, reference, beta):
    return ((policy - reference) / beta).detach()


def implicit_reversed(policy, reference, beta):
    return (beta * (reference - policy)).detach()


def implicit_no_reference(policy, reference, beta):
    return (beta * policy).detach()


def implicit_not_detached(policy, reference, beta):
    return beta * (policy - reference)


# -- 8.3 the loss ---------------------------------------------------------------------------------

def loss_no_beta(pc, pr, rc, rr, beta):
    return -F.logsigmoid((pc - rc) - (pr - rr)).mean()


def loss_reversed(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean()


def loss_log_ratios_reversed(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((rc - pc) - (rr - pr))).mean()  # log pi_ref - log pi, both completions


def loss_no_reference(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * (pc - pr)).mean()


def loss_sum(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum()


def loss_log_of_sigmoid(pc, pr, rc, rr, beta):  # right on moderate margins, inf on large ones
    return -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr)))).mean()


def loss_reference_swapped(pc, pr, rc, rr, beta):  # chosen's policy against rejected's reference
    return -F.logsigmoid(beta * ((pc - rr) - (pr - rc))).mean()


def loss_tuple(pc, pr, rc, rr, beta):  # the package's own: a tuple whose first item is the loss
    return dpo_loss(pc, pr, rc, rr, beta)


# -- 8.4 the log-probability of a completion ------------------------------------------------------
# Each wrong implementation is the whole function as a learner might write it, one mistake in it.

def _next_token_logps(model, input_ids, attention_mask):
    """[N, L-1]: log p(x_t | x_<t) for t = 1 … L-1 (the logits at t - 1 score token t)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    return torch.log_softmax(logits, -1).gather(2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_attention_mask(model, input_ids, attention_mask, completion_mask):
    return (_next_token_logps(model, input_ids, attention_mask) * attention_mask[:, 1:]).sum(1)


def sequence_no_mask(model, input_ids, attention_mask, completion_mask):
    return _next_token_logps(model, input_ids, attention_mask).sum(1)


def sequence_mask_not_shifted(model, input_ids, attention_mask, completion_mask):
    return (_next_token_logps(model, input_ids, attention_mask) * completion_mask[:, :-1]).sum(1)


def sequence_no_shift(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    token_logps = torch.log_softmax(logits, -1).gather(2, input_ids.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask).sum(1)


def sequence_mean(model, input_ids, attention_mask, completion_mask):
    mask = completion_mask[:, 1:].float()
    return (_next_token_logps(model, input_ids, attention_mask) * mask).sum(1) / mask.sum(1)


def sequence_no_grad(model, input_ids, attention_mask, completion_mask):
    with torch.no_grad():
        return (_next_token_logps(model, input_ids, attention_mask) * completion_mask[:, 1:]).sum(1)


CASES = [
    ("kl_regularised_optimum", kl_regularised_optimum, [
        (optimum_unnormalised, "do not sum to one"),
        (optimum_times_beta, "multiplied the reward by beta"),
        (optimum_without_reference, "no reference"),
        (optimum_wrong_dim, "normalised over the prompts"),
        (optimum_probabilities, "wrong values"),
    ]),
    ("implicit_reward", implicit_reference, [
        (implicit_no_beta, "left out beta"),
        (implicit_divided, "divided by beta"),
        (implicit_reversed, "sign is reversed"),
        (implicit_no_reference, "left out the reference"),
        (implicit_not_detached, "still carries a gradient"),
    ]),
    ("dpo_loss", loss_tuple, [
        (loss_no_beta, "left out beta"),
        (loss_reversed, "chosen and rejected are swapped"),
        (loss_log_ratios_reversed, "both log-ratios are reversed"),
        (loss_no_reference, "left out the reference"),
        (loss_sum, "sum over the pairs"),
        (loss_log_of_sigmoid, "NaN or inf"),
        (loss_reference_swapped, "wrong values"),
    ]),
    ("sequence_logprobs", sequence_logprobs, [
        (sequence_attention_mask, "the prompt tokens are counted"),
        (sequence_no_mask, "the padding is counted"),
        (sequence_mask_not_shifted, "the mask is off by one"),
        (sequence_no_shift, "no shift"),
        (sequence_mean, "DPO uses the SUM"),
        (sequence_no_grad, "no gradient reaches the model"),
    ]),
]
