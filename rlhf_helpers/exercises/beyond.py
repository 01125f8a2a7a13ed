"""Checks of notebook 08's exercises: DPO from the optimum of the KL-regularised objective.

* ``kl_regularised_optimum``: log pi*(y) = log pi_ref(y) + r(y) / beta - log Z over a finite set of completions
  (Rafailov et al. 2023, equation 4), against `rlhf_helpers.beyond_ppo.dpo.kl_regularised_optimum`.
* ``implicit_reward``: beta (log pi(y|x) - log pi_ref(y|x)), detached (equation 5, without the log Z that cancels),
  against `rlhf_helpers.beyond_ppo.dpo.implicit_rewards`.
* ``dpo_loss``: the mean of -log sigmoid(beta [chosen log-ratio - rejected log-ratio]) (equation 7), against
  `rlhf_helpers.beyond_ppo.dpo.dpo_loss`.
* ``sequence_logprobs``: the sum of log p(x_t | x_<t) over the completion tokens of each right-padded row, from one
  forward pass of a causal LM, against `rlhf_helpers.beyond_ppo.dpo.sequence_logprobs`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..beyond_ppo.dpo import dpo_loss as reference_dpo_loss
from ..beyond_ppo.dpo import implicit_rewards as reference_implicit_rewards
from ..beyond_ppo.dpo import kl_regularised_optimum as reference_optimum
from .checking import call, exercise, expect, expect_close, passed

__all__ = ["check_kl_regularised_optimum", "check_implicit_reward", "check_dpo_loss", "check_sequence_logprobs"]


def _first(answer):
    """A loss function may return the loss alone or a tuple whose first item is the loss (as TRL's and ours)."""
    return answer[0] if isinstance(answer, (tuple, list)) else answer


# ----------------------------------------------------------------------------------------------
# Exercise 8.1: the optimum of the KL-regularised objective
# ----------------------------------------------------------------------------------------------


def _optimum_cases():
    generator = torch.Generator().manual_seed(8)
    reference = torch.log_softmax(torch.randn(3, 5, generator=generator, dtype=torch.float64), -1)
    rewards = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    return [
        ("3 prompts x 5 completions, beta 0.5", reference, rewards, 0.5),
        ("the same, beta 2", reference, rewards, 2.0),
        ("one prompt; an unlikely completion with the highest reward, beta 0.1",
         torch.log(torch.tensor([[0.6, 0.3, 0.099, 0.001]], dtype=torch.float64)),
         torch.tensor([[0.0, 0.5, 1.0, 3.0]], dtype=torch.float64), 0.1),
    ]


@exercise("08", "kl_regularised_optimum", difficulty=2, importance=5, minutes=10)
def check_kl_regularised_optimum(fn) -> None:
    """`fn(reference_logprobs [P, K], rewards [P, K], beta) -> [P, K]`: the log-probabilities of
    ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)`` over the K completions of each of the P prompts."""
    count = 0
    for case, reference, rewards, beta in _optimum_cases():
        answer = call(fn, reference.clone(), rewards.clone(), beta, case=case)
        expected = reference_optimum(reference, rewards, beta)
        expect_close(answer, expected, "kl_regularised_optimum", case=case, atol=1e-8, diagnoses=[
            (reference + rewards / beta, "the log-probabilities of each prompt do not sum to one: subtract "
             "log Z(x) = logsumexp over the K completions of log pi_ref + r / beta."),
            (torch.log_softmax(reference + rewards * beta, -1), "you multiplied the reward by beta: the optimum "
             "weighs it by 1 / beta (a small beta lets the reward count more)."),
            (torch.log_softmax(rewards / beta, -1), "this is the optimum with no reference (a uniform prior): "
             "pi* is the reference re-weighted by exp(r / beta), so start from log pi_ref."),
            (torch.log_softmax(reference + rewards / beta, 0), "you normalised over the prompts (dim 0): Z(x) sums "
             "over the completions of one prompt (the last dimension)."),
        ], hint="log pi*(y|x) = log pi_ref(y|x) + r(x, y) / beta - logsumexp_y'(log pi_ref(y'|x) + r(x, y') / beta).")
        count += 1
    passed("kl_regularised_optimum", count)


# ----------------------------------------------------------------------------------------------
# Exercise 8.2: the implicit reward
# ----------------------------------------------------------------------------------------------


@exercise("08", "implicit_reward", difficulty=1, importance=4, minutes=5)
def check_implicit_reward(fn) -> None:
    """`fn(policy_logps [B], reference_logps [B], beta) -> [B]`: beta (log pi - log pi_ref), with no gradient."""
    generator = torch.Generator().manual_seed(82)
    count = 0
    for beta in (0.1, 1.0, 5.0):
        policy = (-20 + 5 * torch.randn(6, generator=generator)).requires_grad_(True)
        reference = -20 + 5 * torch.randn(6, generator=generator)
        case = f"6 completions, beta {beta}"
        answer = call(fn, policy, reference, beta, case=case)
        expected, _ = reference_implicit_rewards(policy, policy, reference, reference, beta)
        expect_close(answer, expected, "implicit_reward", case=case, diagnoses=[
            ((policy - reference).detach(), "you left out beta: the implicit reward is beta times the log-ratio."),
            (((policy - reference) / beta).detach(), "you divided by beta: the reward is beta * log(pi / pi_ref) "
             "(the optimum's log-ratio is r / beta)."),
            ((beta * (reference - policy)).detach(), "the sign is reversed: the reward is high where the policy "
             "makes a completion LIKELIER than the reference does (log pi - log pi_ref)."),
            ((beta * policy).detach(), "you left out the reference: without it, beta log pi is not a reward the "
             "policy is optimal for (and a likely completion would score high for being likely)."),
        ])
        expect(not (isinstance(answer, torch.Tensor) and answer.requires_grad),
               "implicit_reward: the result still carries a gradient. It is a measurement of the policy (logged, "
               "compared), not a term to train on: return it `.detach()`ed.")
        count += 1
    passed("implicit_reward", count)


# ----------------------------------------------------------------------------------------------
# Exercise 8.3: the DPO loss
# ----------------------------------------------------------------------------------------------


def _loss_cases():
    generator = torch.Generator().manual_seed(83)

    def logps(n, scale=4.0):
        return -25 + scale * torch.randn(n, generator=generator, dtype=torch.float64)

    return [
        ("8 pairs, beta 0.1", logps(8), logps(8), logps(8), logps(8), 0.1),
        ("8 pairs, beta 1", logps(8), logps(8), logps(8), logps(8), 1.0),
        ("a policy equal to its reference (the loss is log 2)", *(lambda a, b: (a, b, a.clone(), b.clone()))(
            logps(5), logps(5)), 0.5),
        ("large margins, beta 5: -log(sigmoid(x)) overflows, -logsigmoid(x) does not",
         torch.tensor([-10.0, -200.0], dtype=torch.float64), torch.tensor([-200.0, -10.0], dtype=torch.float64),
         torch.tensor([-100.0, -100.0], dtype=torch.float64), torch.tensor([-100.0, -100.0], dtype=torch.float64),
         5.0),
    ]


@exercise("08", "dpo_loss", difficulty=2, importance=5, minutes=10)
def check_dpo_loss(fn) -> None:
    """`fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)`
    -> the mean DPO loss over the B pairs (a tensor, or a tuple whose first item it is)."""
    count = 0
    for case, pc, pr, rc, rr, beta in _loss_cases():
        answer = _first(call(fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta, case=case))
        expected = reference_dpo_loss(pc, pr, rc, rr, beta)[0]
        margin = (pc - rc) - (pr - rr)
        expect_close(answer, expected, "dpo_loss", case=case, atol=1e-7, diagnoses=[
            (-F.logsigmoid(margin).mean(), "you left out beta: the logit is beta times the margin of log-ratios."),
            (-F.logsigmoid(-beta * margin).mean(), "the sign of the margin is reversed, and two different "
             "mistakes give exactly this: (a) both log-ratios are reversed, log pi_ref - log pi instead of "
             "log pi - log pi_ref, or (b) chosen and rejected are swapped, rejected minus chosen. Check both lines: "
             "the margin is (pi_c - ref_c) - (pi_r - ref_r), so the loss falls when the policy raises the CHOSEN "
             "completion above the reference more than the rejected one."),
            (-F.logsigmoid(beta * (pc - pr)).mean(), "you left out the reference: DPO compares log-RATIOS "
             "log pi - log pi_ref of the two completions, not the policy's log-probabilities."),
            (-F.logsigmoid(beta * margin).sum(), "this is the sum over the pairs: return the mean."),
            (F.logsigmoid(beta * margin).mean(), "this is the log-likelihood; the loss is its negative."),
        ], hint="loss = mean( -logsigmoid( beta * ((pi_c - ref_c) - (pi_r - ref_r)) ) ); "
                "if large margins give inf, use F.logsigmoid rather than log(sigmoid).")
        count += 1
    passed("dpo_loss", count)


# ----------------------------------------------------------------------------------------------
# Exercise 8.4: the log-probability of a completion
# ----------------------------------------------------------------------------------------------


def _sequence_cases(vocab_size: int, seed: int = 84):
    """(description, input_ids [N, L], attention_mask [N, L], completion_mask [N, L]): right-padded rows of a prompt
    then a completion, the prompts and the completions of different lengths, so that the prompt, the padding and a
    shift by one each change the sum."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for prompt_lengths, completion_lengths in [([3, 5, 2, 4], [4, 2, 6, 1]), ([2, 6, 3], [5, 3, 4])]:
        ends = torch.tensor(prompt_lengths) + torch.tensor(completion_lengths)
        columns = torch.arange(int(ends.max()))[None, :]
        attention = (columns < ends[:, None]).long()
        completion = ((columns >= torch.tensor(prompt_lengths)[:, None]) & attention.bool()).long()
        ids = torch.where(attention.bool(), torch.randint(2, vocab_size, attention.shape, generator=g),
                          torch.zeros_like(attention))
        cases.append((f"N={len(prompt_lengths)} rows, prompt lengths {prompt_lengths}, completion lengths "
                      f"{completion_lengths}, right-padded to {attention.shape[1]} with token 0", ids, attention,
                      completion))
    return cases


@exercise("08", "sequence_logprobs", difficulty=2, importance=5, minutes=10)
def check_sequence_logprobs(fn) -> None:
    """`fn(model, input_ids [N, L], attention_mask [N, L], completion_mask [N, L]) -> [N]`: the sum of
    log p(x_t | x_<t) over the completion tokens of each right-padded row, as
    `rlhf_helpers.beyond_ppo.dpo.sequence_logprobs`; gradients must reach the model (DPO trains through it)."""
    from ..beyond_ppo.dpo import sequence_logprobs as reference_sequence_logprobs
    from .ppo import one_thread, tiny_gpt2

    model = tiny_gpt2(seed=8)
    cases = _sequence_cases(model.config.vocab_size)
    with one_thread():
        for case, ids, attention, completion in cases:
            with torch.no_grad():
                expected = reference_sequence_logprobs(model, ids, attention, completion)
                log_p = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits.float(), -1)
            answer = call(fn, model, ids.clone(), attention.clone(), completion.clone(), case=case)
            next_token = log_p[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # [N, L-1]: log p(x_t | x_<t), t >= 1
            own_token = log_p.gather(-1, ids[..., None]).squeeze(-1)  # [N, L]: each token read from its own column
            scored = completion[:, 1:].to(next_token.dtype)
            expect_close(answer, expected, "sequence_logprobs", case=case, atol=1e-4, diagnoses=[
                ((next_token * attention[:, 1:]).sum(1), "the prompt tokens are counted: you summed over the "
                 "attention mask, which is 1 on the prompt too. log pi(y|x) is the completion's log-probability "
                 "GIVEN the prompt: sum over the completion mask. (In DPO's margin the terms of a prompt shared by "
                 "the chosen and the rejected completion cancel, but the implicit rewards, and every log pi(y|x) you "
                 "report, would carry them.)"),
                (next_token.sum(1), "the padding is counted: you summed over every position. Multiply by the "
                 "completion mask (shifted like the targets, completion_mask[:, 1:]) before the sum."),
                ((next_token * completion[:, :-1]).sum(1), "the mask is off by one: the target of the logits at t - 1 "
                 "is token t, so the mask must be shifted like the targets, completion_mask[:, 1:]. With "
                 "completion_mask[:, :-1] the first completion token is dropped and the token after the completion "
                 "counted."),
                ((own_token * completion).sum(1), "no shift: each token is read from the logits at its own column, "
                 "which predict the NEXT token. Score token t with the logits at t - 1: logits[:, :-1] against "
                 "input_ids[:, 1:]."),
                ((next_token * scored).sum(1) / scored.sum(1), "that is the mean over each completion's tokens: "
                 "DPO uses the SUM, log pi(y|x) of the whole completion (a length-normalised mean is another "
                 "method's choice, e.g. SimPO's)."),
                ((next_token * scored).mean(1), "that is the masked sum divided by the row's length (a mean): "
                 "DPO uses the SUM over the completion tokens, log pi(y|x) of the whole completion."),
            ])
            expect(isinstance(answer, torch.Tensor) and answer.requires_grad,
                   "sequence_logprobs: no gradient reaches the model (a torch.no_grad(), .detach() or .item() "
                   "inside?). DPO trains the policy through these sums; the caller wraps the reference's pass in "
                   f"torch.no_grad().\n  case: {case}")
    passed("sequence_logprobs", len(cases))
