"""Checks of notebook 05's exercises: the pieces of PPO (masked statistics, log-probs, entropy, KL estimates, rewards,
GAE, losses, β).

Each check compares the learner's function with the package's own (`rlhf_helpers.ppo.*`) on random inputs whose
padding holds junk, so that a mask forgotten anywhere changes the answer, and names the usual mistakes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from ..ppo.advantages import compute_gae as reference_compute_gae
from ..ppo.advantages import masked_mean as reference_masked_mean
from ..ppo.advantages import masked_whiten as reference_masked_whiten
from ..ppo.kl import AdaptiveKLController as reference_adaptive_kl
from ..ppo.kl import kl_penalty as reference_kl_penalty
from ..ppo.kl import per_token_rewards as reference_per_token_rewards
from ..ppo.losses import clipped_policy_loss as reference_clipped_policy_loss
from ..ppo.losses import clipped_value_loss as reference_clipped_value_loss
from .checking import ExerciseFailed, call, exercise, expect, expect_close, passed

__all__ = ["check_masked_mean", "check_masked_whiten", "check_response_logprobs", "check_entropy_from_logits",
           "check_kl_penalty", "check_per_token_rewards", "check_compute_gae", "check_clipped_policy_loss",
           "check_clipped_value_loss", "check_adaptive_kl_update"]


def right_padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    """``[B, width]`` float mask with ``lengths[b]`` ones, then zeros (responses are right-padded)."""
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()


def _cases(seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(description, values [B, T], mask [B, T]) cases: random, one real token, padding holding junk."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width in [([4, 16, 8, 6], 16), ([1, 3], 5), ([7], 7)]:
        mask = right_padded_mask(lengths, width)
        values = torch.randn(len(lengths), width, generator=g) * 3 + 1
        values = torch.where(mask.bool(), values, torch.full_like(values, 50.0))  # junk in the padding
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, padding filled with 50.0", values, mask))
    return cases


@exercise("05", "masked_mean", difficulty=1, importance=4, minutes=5)
def check_masked_mean(fn) -> None:
    """`fn(values [B, T], mask [B, T]) -> 0-d tensor`: the mean over the positions where mask is 1."""
    cases = _cases()
    for case, values, mask in cases:
        expected = reference_masked_mean(values, mask)
        answer = call(fn, values.clone(), mask.clone(), case=case)
        expect_close(answer, expected, "masked_mean", case=case, diagnoses=[
            (values.mean(), "you averaged over every position, padding included: count only where mask is 1."),
            ((values * mask).mean(), "the sum is right but you divided by B*T: divide by the number of real tokens, mask.sum()."),
            ((values * mask).sum(1).div(mask.sum(1)).mean(), "that is the mean of per-row means: weigh every real token equally instead."),
        ])
    passed("masked_mean", len(cases))


@exercise("05", "masked_whiten", difficulty=2, importance=4, minutes=10)
def check_masked_whiten(fn) -> None:
    """`fn(values [B, T], mask [B, T]) -> [B, T]`: mean 0, unbiased std 1 over the real tokens; padding 0."""
    cases = _cases(seed=1)
    for case, values, mask in cases:
        expected = reference_masked_whiten(values, mask)
        answer = call(fn, values.clone(), mask.clone(), case=case)
        m = mask.bool()
        everywhere = (values - values.mean()) / (values.std() + 1e-8)
        real = values[m]
        biased = torch.where(m, (values - real.mean()) / real.std(unbiased=False), torch.zeros_like(values))
        padding_kept = torch.where(m, expected, (values - real.mean()) / real.std())
        expect_close(answer, expected, "masked_whiten", case=case, atol=1e-4, diagnoses=[
            (everywhere, "you whitened over the padding too: the mean and std must come from the real tokens only."),
            (torch.where(m, everywhere, torch.zeros_like(values)), "the padding is 0, but the mean and std still count the padding: take them over the real tokens only."),
            (padding_kept, "the real tokens are right, but the padding is not 0: set it to 0 (the losses mask it, but NaN-free zeros are safer)."),
            (biased, "that is the biased std (divided by n): use the unbiased one, as masked_var does (n - 1)."),
        ])
    passed("masked_whiten", len(cases))


# ----------------------------------------------------------------------------------------------
# Helpers shared by the checks below
# ----------------------------------------------------------------------------------------------


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of each right-padded row's last real token."""
    return mask.sum(1).long() - 1


def _pair(answer, what: str, first: str, second: str):
    """The learner's two outputs, or a clear failure if the function did not return two."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseFailed(f"{what}: return two tensors, `({first}, {second})`, got {type(answer).__name__}"
                             + (f" of length {len(answer)}" if isinstance(answer, (tuple, list)) else "") + ".")
    return answer


def _loss_with_gradient(answer, what: str, wrt: str, case: str) -> torch.Tensor:
    """The learner's loss, which must be a tensor that gradients can flow back through."""
    expect(isinstance(answer, torch.Tensor), f"{what}: return the loss as a 0-d torch.Tensor, got "
                                             f"{type(answer).__name__}.\n  case: {case}")
    expect(answer.requires_grad, f"{what}: the loss carries no gradient with respect to `{wrt}` (a .detach(), "
                                 f".item(), torch.no_grad() or torch.tensor(...) on the way?): the optimiser needs "
                                 f"loss.backward() to reach the model.\n  case: {case}")
    return answer


# ----------------------------------------------------------------------------------------------
# Exercise 5.3: the log-probabilities of a response
# ----------------------------------------------------------------------------------------------


def tiny_gpt2(seed: int = 0, vocab_size: int = 48):
    """A random 2-layer, 16-wide `GPT2LMHeadModel` in eval mode, without dropout: the model of the checks that run a
    forward pass. Token 0 is its padding, 1 its EOS.

    Its weights are large (std 0.5, GPT-2's own is 0.02), so that log-probs are far from uniform and a token moved
    by one position, or attending to the padding, scores visibly differently. It is built under a forked random
    state: running a check leaves the notebook's global RNG where it was.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=16, n_layer=2, n_head=2, initializer_range=0.5,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, bos_token_id=1,
                        eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


@contextmanager
def one_thread():
    """Run a check's forward passes of a tiny model on one thread (restored afterwards): at this size the threads'
    synchronisation costs far more than the arithmetic, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _quiet_transformers():
    """No "pass an attention_mask" advice from transformers while the check runs a mistake on purpose."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def left_padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    """``[B, width]`` long mask with zeros, then ``lengths[b]`` ones (queries are left-padded)."""
    return (torch.arange(width)[None, :] >= width - torch.tensor(lengths)[:, None]).long()


def _random_tokens(mask: torch.Tensor, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Token ids 2 … vocab_size - 1 where `mask` is 1, the padding id 0 elsewhere."""
    ids = torch.randint(2, vocab_size, mask.shape, generator=generator)
    return torch.where(mask.bool(), ids, torch.zeros_like(ids))


def _response_cases(vocab_size: int, seed: int = 53):
    """(description, query_ids, query_mask, response_ids, response_mask, temperature): queries of different lengths
    left-padded, responses right-padded; temperature 1 first (so that only the window, the positions, the attention
    and the normalisation are tested), then 0.7; last, a batch without any padding."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for query_lengths, response_lengths, temperature in [([5, 2, 4], [4, 6, 1], 1.0),
                                                         ([3, 6, 1, 4], [2, 5, 5, 3], 0.7),
                                                         ([4, 4], [5, 5], 1.3)]:
        query_mask = left_padded_mask(query_lengths, max(query_lengths))
        response_mask = right_padded_mask(response_lengths, max(response_lengths)).long()
        cases.append((f"B={len(query_lengths)}, query lengths {query_lengths} (left-padded to "
                      f"{max(query_lengths)}), response lengths {response_lengths} (right-padded to "
                      f"{max(response_lengths)}), temperature {temperature}",
                      _random_tokens(query_mask, vocab_size, g), query_mask,
                      _random_tokens(response_mask, vocab_size, g), response_mask, temperature))
    return cases


def _response_logprobs_variant(model, query_ids, query_mask, response_ids, response_mask, temperature, *,
                               window="right", positions=True, attention=True, scale="divide",
                               normalise="log_softmax", zero_padding=True):
    """`response_logprobs` written out with a switch for each usual mistake; every default is the right choice.

    window: "right" (logits[:, P-1 : P+R-1]) or "own" (logits[:, P : P+R], each token scored from its own column);
    positions / attention: pass position ids from the mask / the attention mask; scale: "divide" by the
    temperature, "multiply", or "none"; normalise: "log_softmax", "softmax", "wrong_axis" (log_softmax over dim 1)
    or "none" (the raw logits)."""
    n_query, n_response = query_ids.shape[1], response_ids.shape[1]
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1).long()
    extra = {}
    if attention:
        extra["attention_mask"] = mask
    if positions:
        extra["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, **extra).logits.float()
    start = n_query - 1 if window == "right" else n_query
    logits = logits[:, start:start + n_response]
    logits = {"divide": logits / temperature, "multiply": logits * temperature, "none": logits}[scale]
    scores = {"log_softmax": lambda: torch.log_softmax(logits, -1), "softmax": lambda: torch.softmax(logits, -1),
              "wrong_axis": lambda: torch.log_softmax(logits, 1), "none": lambda: logits}[normalise]()
    picked = scores.gather(-1, response_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked * response_mask if zero_padding else picked


@exercise("05", "response_logprobs", difficulty=3, importance=5, minutes=20)
def check_response_logprobs(fn) -> None:
    """`fn(model, query_ids [B, P], query_mask [B, P], response_ids [B, R], response_mask [B, R], temperature)
    -> [B, R]`: log pi(response token) from one forward pass over ``[query | response]``, as
    `rlhf_helpers.policy.logprobs.response_logprobs`: queries left-padded (position ids from the mask), the logits
    at column c scoring the token at c + 1, divided by the temperature, 0 on the response's padding; gradients must
    reach the model (PPO trains through this pass)."""
    from ..policy.logprobs import response_logprobs as reference_response_logprobs

    model = tiny_gpt2(seed=5)
    cases = _response_cases(model.config.vocab_size)
    with one_thread():
        _check_response_logprobs(fn, model, cases, reference_response_logprobs)
    passed("response_logprobs", len(cases))


def _check_response_logprobs(fn, model, cases, reference_response_logprobs) -> None:
    for case, query_ids, query_mask, response_ids, response_mask, temperature in cases:
        with torch.no_grad():
            expected = reference_response_logprobs(model, query_ids, query_mask, response_ids, response_mask,
                                                   temperature)
        answer = call(fn, model, query_ids.clone(), query_mask.clone(), response_ids.clone(), response_mask.clone(),
                      temperature, case=case)
        batch, n_response = response_ids.shape
        if isinstance(answer, torch.Tensor) and tuple(answer.shape) == (batch, n_response + 1):
            raise ExerciseFailed(
                f"response_logprobs: shape {tuple(answer.shape)}, one column too many: logits[:, P-1:] has R + 1 "
                "columns, and the last one (read after the last response token) predicts a token that was never "
                f"sampled. Take logits[:, P-1:-1], the R columns that predict the response tokens.\n  case: {case}")

        def variant(**switches):
            with torch.no_grad(), _quiet_transformers():
                return _response_logprobs_variant(model, query_ids, query_mask, response_ids, response_mask,
                                                  temperature, **switches)

        mistakes = [
            (dict(window="own"),
             "each response token's log-prob is read from its own column: the logits at column c predict the token "
             "at column c + 1, so the R response tokens (columns P … P+R-1 of [query | response]) are scored by the "
             "logits at columns P-1 … P+R-2, logits[:, P-1:-1]. Your slice (logits[:, P:], or logits[:, -R:]) "
             "scores each token with the prediction made after reading it."),
            (dict(scale="none"),
             f"the temperature is missing: the responses were sampled from softmax(logits / T) (T = {temperature} "
             "here), so their log-probs must come from logits / T too. Otherwise PPO's ratio does not start at 1 and "
             "the KL to the reference is off from the first step."),
            (dict(scale="multiply"), "you multiplied the logits by the temperature: divide them, logits / T."),
            (dict(positions=False, attention=False),
             "neither the attention mask nor position ids reach the model (model(input_ids) alone): the real tokens "
             "attend to the queries' left padding, and every position is shifted by the amount of padding. Pass "
             "attention_mask = torch.cat([query_mask, response_mask], 1) and position_ids = "
             "(attention_mask.cumsum(1) - 1).clamp(min=0)."),
            (dict(positions=False),
             "the position ids are the default 0 … P+R-1: with left-padded queries a row's first real token then "
             "sits at the position of its padding instead of 0, and GPT-2's learned position embeddings make the "
             "same text score differently depending on how much padding its batch needed. Pass position_ids = "
             "(attention_mask.cumsum(1) - 1).clamp(min=0), the attention mask being cat([query_mask, response_mask])."),
            (dict(attention=False),
             "the attention mask is not passed: the real tokens attend to the queries' left padding. Pass "
             "attention_mask = torch.cat([query_mask, response_mask], 1)."),
            (dict(normalise="softmax"),
             "these are probabilities, not log-probabilities: use torch.log_softmax (you took the softmax without "
             "the log)."),
            (dict(normalise="wrong_axis"),
             "log_softmax ran over the wrong axis (the positions, dim 1): normalise over the vocabulary, dim=-1."),
            (dict(normalise="none"),
             "these are the raw logits read at the sampled tokens: normalise them first, log_softmax(logits, dim=-1), "
             "then gather."),
            (dict(zero_padding=False),
             "the real tokens are right, but the padding is not 0: multiply by response_mask (the padding is not part "
             "of the response, and a sum of log-probs or a KL over the row would count it)."),
        ]
        # a generator: each mistake's forward pass runs only when the answer is wrong, until one matches
        expect_close(answer, expected, "response_logprobs", case=case, atol=1e-5,
                     diagnoses=((variant(**switches), message) for switches, message in mistakes))
        expect(isinstance(answer, torch.Tensor) and answer.requires_grad,
               "response_logprobs: no gradient reaches the model (a torch.no_grad(), .detach() or .item() inside?). "
               "PPO's policy pass trains through these log-probs: leave gradients to the caller, who wraps the "
               f"reference's pass in torch.no_grad().\n  case: {case}")


# ----------------------------------------------------------------------------------------------
# Exercise 5.4: the entropy of the policy
# ----------------------------------------------------------------------------------------------


def _entropy_cases(seed: int = 54):
    """(description, logits [B, T, V]): moderate logits; large ones, where softmax underflows to exactly 0 for some
    tokens while log_softmax stays finite; and tokens banned outright (logit -inf), as top-k filtering leaves them."""
    g = torch.Generator().manual_seed(seed)
    moderate = torch.randn(3, 5, 11, generator=g) * 2
    large = torch.randn(2, 4, 11, generator=g) * 60
    banned = torch.randn(3, 4, 11, generator=g) * 2
    banned[torch.rand(banned.shape, generator=g) < 0.3] = float("-inf")
    banned[..., 0] = banned[..., 0].clamp(min=0.0)  # at least one allowed token per position
    return [("B=3, T=5, V=11, logits of std 2", moderate),
            ("B=2, T=4, V=11, logits of std 60: softmax underflows to 0 for some tokens (a confident policy)", large),
            ("B=3, T=4, V=11, about 30% of the tokens banned (logit -inf), as top-k filtering leaves them", banned)]


@exercise("05", "entropy_from_logits", difficulty=2, importance=3, minutes=5)
def check_entropy_from_logits(fn) -> None:
    """`fn(logits [B, T, V]) -> [B, T]`: the entropy -sum_v p log p (nats) of each position's softmax, finite for
    large and -inf logits, as `rlhf_helpers.ppo.losses.entropy_from_logits`."""
    from ..ppo.losses import entropy_from_logits as reference_entropy

    cases = _entropy_cases()
    for case, logits in cases:
        expected = reference_entropy(logits)
        answer = call(fn, logits.clone(), case=case)
        nan = isinstance(answer, torch.Tensor) and answer.shape == expected.shape and not torch.isfinite(answer).all()
        if nan and torch.isinf(logits).any():
            raise ExerciseFailed(
                "entropy_from_logits: NaN where a token is banned (logit -inf): its p is 0 and its log p is -inf, "
                "and 0 · (-inf) is NaN, not the 0 of the convention 0 log 0 = 0. Raise log p to "
                "torch.finfo(logits.dtype).min before multiplying (or torch.where(p > 0, p * log_p, 0)): every "
                f"finite term is unchanged.\n  case: {case}")
        if nan and logits.abs().max() > 100:  # some p underflow to 0 (only there can log(softmax) be -inf)
            raise ExerciseFailed(
                "entropy_from_logits: NaN or inf on large logits. torch.log(torch.softmax(x)) underflows: a token "
                "~104 nats below the best has p = 0 in float32 and log 0 = -inf, then 0 · (-inf) = NaN. Take "
                f"torch.log_softmax(logits, -1), which stays finite.\n  case: {case}")
        log_p = torch.log_softmax(logits, -1).clamp(min=torch.finfo(logits.dtype).min)
        p = log_p.exp()
        positions = torch.log_softmax(logits, 1)
        expect_close(answer, expected, "entropy_from_logits", case=case, atol=1e-4, diagnoses=[
            (-expected, "the sign is flipped: the entropy is -sum p log p, which is >= 0 (each log p <= 0)."),
            (expected / math.log(2), "that is the entropy in bits (log base 2): PPO's statistics are in nats, "
                                     "the natural log."),
            (-(p * logits).sum(-1), "you used the logits in place of the log-probabilities: -sum p · logits misses "
                                    "the + logsumexp(logits) of log p = logits - logsumexp(logits)."),
            (-(positions.exp() * positions).sum(-1), "the softmax ran over the wrong axis (the positions, dim 1): "
                                                     "each position's distribution is over the vocabulary, dim=-1."),
        ])
    passed("entropy_from_logits", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.5: the KL estimators
# ----------------------------------------------------------------------------------------------


def _kl_cases(seed: int = 55):
    """(description, logprobs [B, T], ref_logprobs [B, T]): the two models about one nat apart per token, so that
    k1 is negative on some tokens and k1, k2, k3 all differ."""
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(4, 6, generator=g) * 4
    ref = logprobs + torch.randn(4, 6, generator=g)
    close = -torch.rand(3, 5, generator=g) * 4
    return [("B=4, T=6, policy and reference about 1 nat apart per token", logprobs, ref),
            ("B=3, T=5, the two models close (0.05 nats apart)", close,
             close + 0.05 * torch.randn(3, 5, generator=g))]


@exercise("05", "kl_penalty", difficulty=2, importance=4, minutes=10)
def check_kl_penalty(fn) -> None:
    """`fn(logprobs [B, T], ref_logprobs [B, T], estimator) -> [B, T]`: the per-token estimate of
    KL(pi || pi_ref) for tokens sampled from pi, k1 = logp - logp_ref or k3 = (r - 1) - log r with
    log r = logp_ref - logp, as `rlhf_helpers.ppo.kl.kl_penalty`."""
    count = 0
    for description, logprobs, ref in _kl_cases():
        x = ref - logprobs  # log r
        k1, k3 = -x, torch.expm1(x) - x
        for estimator in ("k1", "k3"):
            case = f"{description}, estimator {estimator!r}"
            expected = reference_kl_penalty(logprobs, ref, estimator)
            answer = call(fn, logprobs.clone(), ref.clone(), estimator, case=case)
            other = k3 if estimator == "k1" else k1
            diagnoses = [(other, f"that is {'k3' if estimator == 'k1' else 'k1'}, where estimator={estimator!r} "
                                 f"asks for {'k1 = logp - logp_ref' if estimator == 'k1' else 'k3 = (r - 1) - log r'}.")]
            if estimator == "k1":
                diagnoses += [
                    (x, "k1's sign is flipped: k1 = log pi - log pi_ref = -log r. With the sign flipped, the "
                        "penalty -β·k1 pays the policy for drifting from the reference."),
                    (k1.abs(), "that is |k1|: a single token's k1 is negative whenever the reference likes it better, "
                               "and that is fine: its mean over samples of pi is the KL. abs() biases it upwards; k3 "
                               "is the estimator that is never negative."),
                ]
            else:
                diagnoses += [
                    (torch.expm1(-x) + x, "k3's log-ratio is the wrong way round: log r = logp_ref - logp (the tokens "
                                          "were sampled from pi, so r = pi_ref / pi); exp(logp - logp_ref) - "
                                          "(logp - logp_ref) - 1 estimates KL(pi_ref || pi) instead."),
                    (0.5 * x ** 2, "that is k2 = ½ (log r)²: close to k3 when the models are close, but biased; "
                                   "k3 = (r - 1) - log r."),
                    (torch.exp(x) - x, "k3 misses its - 1: without it the estimate is 1 where the models agree."),
                    (torch.expm1(x) + x, "k3 is (r - 1) - log r: you added log r."),
                ]
            expect_close(answer, expected, f"kl_penalty (estimator {estimator!r})", case=case, atol=1e-6,
                         diagnoses=diagnoses)
            count += 1
    passed("kl_penalty", count)


# ----------------------------------------------------------------------------------------------
# Exercise 5.6: per-token rewards
# ----------------------------------------------------------------------------------------------


def _reward_cases(seed: int = 2):
    """(description, scores [B], logprobs [B, T], ref_logprobs [B, T], mask [B, T], kl_coef) with junk in the
    padding (so a penalty charged there, or a score placed on the last column, shows)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, kl_coef in [([4, 10, 7, 1], 10, 0.2), ([3, 5], 6, 0.05), ([6], 6, 1.0)]:
        mask = right_padded_mask(lengths, width)
        logprobs = -torch.rand(len(lengths), width, generator=g) * 4
        ref_logprobs = logprobs + torch.randn(len(lengths), width, generator=g) * 0.7
        logprobs = torch.where(mask.bool(), logprobs, torch.full_like(logprobs, -30.0))  # junk in the padding
        ref_logprobs = torch.where(mask.bool(), ref_logprobs, torch.full_like(ref_logprobs, -1.0))
        scores = torch.randn(len(lengths), generator=g) * 2
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, kl_coef {kl_coef}, padding log-probs -30 "
                      f"(policy) and -1 (reference)", scores, logprobs, ref_logprobs, mask, kl_coef))
    return cases


@exercise("05", "per_token_rewards", difficulty=2, importance=5, minutes=10)
def check_per_token_rewards(fn) -> None:
    """`fn(scores [B], logprobs [B, T], ref_logprobs [B, T], mask [B, T], kl_coef) -> rewards [B, T]`:
    ``-kl_coef * (logp - logp_ref)`` on real tokens (k1), the score added at each row's last real token, 0 on padding,
    as `rlhf_helpers.ppo.kl.per_token_rewards(..., estimator="k1")` (its first output)."""
    cases = _reward_cases()
    for case, scores, logprobs, ref_logprobs, mask, beta in cases:
        expected, _ = reference_per_token_rewards(scores, logprobs, ref_logprobs, mask, beta, estimator="k1")
        answer = call(fn, scores.clone(), logprobs.clone(), ref_logprobs.clone(), mask.clone(), beta, case=case)
        rows, last = torch.arange(len(scores)), _last_real(mask)
        k1 = logprobs - ref_logprobs

        def with_score(base, where=None, everywhere=False):
            out = base.clone()
            if everywhere:
                return out + scores[:, None] * mask
            out[rows, last if where is None else where] += scores
            return out

        masked_k1 = k1 * mask
        k3 = reference_kl_penalty(logprobs, ref_logprobs, "k3") * mask
        expect_close(answer, expected, "per_token_rewards", case=case, diagnoses=[
            (with_score(-beta * masked_k1, where=torch.full_like(last, mask.shape[1] - 1)),
             "the score sits on the last *column*, which is padding in the shorter rows: put it on each row's last "
             "real token, index mask.sum(1) - 1 (right padding)."),
            (with_score(beta * masked_k1), "the KL's sign is flipped: the penalty is -kl_coef * (logp - logp_ref). With "
                                           "+, moving away from the reference *earns* reward and the policy runs off."),
            (with_score(-masked_k1), "the KL is not multiplied by kl_coef (β): the penalty is -kl_coef * KL_t."),
            (with_score(-beta * k1), "the padding is charged a KL penalty: multiply the penalty by the mask "
                                     "(padding is not part of the response, its rewards must be 0)."),
            (with_score(-beta * masked_k1, everywhere=True),
             "the score is added at every token: it judges the whole response, so it comes once, at the last real token."),
            (with_score(-beta * masked_k1, where=torch.zeros_like(last)),
             "the score sits on the *first* token: put it on the last real token (index mask.sum(1) - 1)."),
            (with_score(-beta * k3), "that is the k3 estimator: this exercise asks for k1, logp - logp_ref (the "
                                     "course's default, PPOConfig.kl_estimator)."),
        ])
    passed("per_token_rewards", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.7: GAE
# ----------------------------------------------------------------------------------------------


def _plain_gae(rewards, values, mask, gamma, lam, next_offset=1, use_mask=True):
    """GAE written out, with switches for the usual mistakes (next value at t + next_offset; mask ignored)."""
    B, T = rewards.shape
    if not use_mask:
        mask = torch.ones_like(mask)
    r, v = rewards * mask, values * mask
    advantages = torch.zeros_like(r)
    for b in range(B):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            j = t + next_offset
            next_value = v[b, j] if j < n else 0.0
            delta = r[b, t] + gamma * next_value - v[b, t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
    return advantages


def _full_width_gae(rewards, values, gamma, lam):
    """GAE run over every column, padding included, with V = 0 only after the last *column* (not the last real
    token): what a loop over ``range(T)`` computes when it is handed padded tensors."""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=values.dtype)
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages


def _gae_cases(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, gamma, lam in [([5, 12, 8, 1], 12, 1.0, 0.95), ([3, 6], 7, 0.9, 0.8), ([4], 4, 1.0, 0.0)]:
        mask = right_padded_mask(lengths, width)
        rewards = torch.randn(len(lengths), width, generator=g)
        values = torch.randn(len(lengths), width, generator=g)
        rewards = torch.where(mask.bool(), rewards, torch.full_like(rewards, 7.0))  # junk in the padding
        values = torch.where(mask.bool(), values, torch.full_like(values, 9.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, gamma {gamma}, lam {lam}, padding rewards "
                      f"7.0 and values 9.0", rewards, values, mask, gamma, lam))
    return cases


@exercise("05", "compute_gae", difficulty=3, importance=5, minutes=20)
def check_compute_gae(fn) -> None:
    """`fn(rewards [B, T], values [B, T], mask [B, T], gamma, lam) -> (advantages [B, T], returns [B, T])`,
    as `rlhf_helpers.ppo.advantages.compute_gae`: 0 on padding, V = 0 after the last real token."""
    cases = _gae_cases()
    for case, rewards, values, mask, gamma, lam in cases:
        expected_adv, expected_ret = reference_compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
        answer = call(fn, rewards.clone(), values.clone(), mask.clone(), gamma, lam, case=case)
        advantages, returns = _pair(answer, "compute_gae", "advantages", "returns")
        unmasked = _plain_gae(rewards, values, mask, gamma, lam, use_mask=False)
        bootstrap = "you bootstrapped from the padding: after a row's last real token V_{t+1} = 0 and A_{t+1} = 0 " \
                    "(the response has ended). Zero the rewards and values on padding, or stop each row at its length."
        values_unmasked = _full_width_gae(rewards * mask, values, gamma, lam)
        padded_values = ("you masked the rewards but not the values, so GAE bootstraps from padded values: at a "
                         "row's last real token δ_t = r_t + γ·V_{t+1} − V_t reads V_{t+1} = values[:, t + 1], which is "
                         "padding (junk 9.0 here), and the padding's own deltas flow back through γ·λ·A_{t+1}. The "
                         "response has ended: V_{t+1} = 0 and A_{t+1} = 0 after the last real token. Multiply the "
                         "values by the mask too (values * mask), or stop each row at its length.")
        expect_close(advantages, expected_adv, "compute_gae (advantages)", case=case, diagnoses=[
            (values_unmasked * mask, padded_values),
            (values_unmasked, padded_values),
            (unmasked * mask, bootstrap),
            (unmasked, bootstrap),
            (_plain_gae(rewards, values, mask, gamma, 1.0),
             "λ is missing (that is λ = 1): A_t = δ_t + γ·λ·A_{t+1}."),
            (_plain_gae(rewards, values, mask, 1.0, lam),
             "γ is missing: δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γ·λ·A_{t+1} (it shows when γ < 1)."),
            (_plain_gae(rewards, values, mask, gamma, lam, next_offset=0),
             "off by one in the next value: δ_t uses V_{t+1}, the value of the *next* state (values[:, t + 1], "
             "0 after the last real token), not V_t."),
            (_plain_gae(rewards, values, mask, gamma, lam, next_offset=2),
             "off by one in the next value: δ_t uses V_{t+1} = values[:, t + 1], not values[:, t + 2]."),
            (_plain_gae(rewards, values, mask, gamma, gamma * lam), "you discounted the advantages by γ²·λ: the "
                                                                   "recursion is A_t = δ_t + γ·λ·A_{t+1}."),
        ])
        m = mask.bool()
        rewards_to_go = _plain_gae(rewards, torch.zeros_like(values), mask, gamma, 1.0)
        expect_close(returns, expected_ret, "compute_gae (returns)", case=case, diagnoses=[
            (expected_adv, "returns equal the advantages: the value target is A_t + V_t."),
            (torch.where(m, expected_adv - values, torch.zeros_like(values)),
             "returns are A_t − V_t: the value target is A_t + V_t."),
            (rewards_to_go, "those are the discounted rewards-to-go: the value target of GAE is A_t + V_t (equal to the "
                            "rewards-to-go only when λ = 1)."),
            (expected_adv + values, "the returns are right on real tokens but not 0 on padding: mask them."),
        ])
    passed("compute_gae", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.8: the clipped policy loss
# ----------------------------------------------------------------------------------------------


def _policy_loss_cases(seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, eps in [([6, 12, 3, 9], 12, 0.2), ([1, 5], 5, 0.1), ([8], 8, 0.3)]:
        mask = right_padded_mask(lengths, width)
        old = -torch.rand(len(lengths), width, generator=g) * 3
        new = old + (torch.rand(len(lengths), width, generator=g) - 0.5) * 1.2  # ratios from e^-0.6 to e^0.6
        advantages = torch.randn(len(lengths), width, generator=g)
        new = torch.where(mask.bool(), new, old + 2.0)  # padding: a ratio of e^2 and an advantage of 5
        advantages = torch.where(mask.bool(), advantages, torch.full_like(advantages, 5.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, clip_range {eps}, ratios 0.55-1.8 on real "
                      f"tokens, padding ratio e^2 with advantage 5", new, old, advantages, mask, eps))
    return cases


def _masked(x, mask):
    return (x * mask).sum() / mask.sum()


@exercise("05", "clipped_policy_loss", difficulty=3, importance=5, minutes=15)
def check_clipped_policy_loss(fn) -> None:
    """`fn(logprobs [B, T], old_logprobs [B, T], advantages [B, T], mask [B, T], clip_range) -> 0-d loss` to minimise,
    as the first output of `rlhf_helpers.ppo.losses.clipped_policy_loss`; its gradient must match too."""
    cases = _policy_loss_cases()
    for case, new, old, advantages, mask, eps in cases:
        reference_new = new.clone().requires_grad_(True)
        expected, _ = reference_clipped_policy_loss(reference_new, old, advantages, mask, eps)
        expected.backward()
        learner_new = new.clone().requires_grad_(True)
        answer = call(fn, learner_new, old.clone(), advantages.clone(), mask.clone(), eps, case=case)
        answer = _loss_with_gradient(answer, "clipped_policy_loss", "logprobs", case)
        ratio, backwards = torch.exp(new - old), torch.exp(old - new)
        clipped = torch.clamp(ratio, 1 - eps, 1 + eps)
        pessimistic = torch.max(-ratio * advantages, -clipped * advantages)
        expect_close(answer, expected, "clipped_policy_loss", case=case, diagnoses=[
            (_masked(torch.min(-ratio * advantages, -clipped * advantages), mask),
             "you took the min of the two *loss* terms: the loss is max(−ρ·A, −clip(ρ)·A), the negative of the "
             "objective's min(ρ·A, clip(ρ)·A). With min, the loss rewards pushing the ratio without limit."),
            (_masked(torch.min(ratio * advantages, clipped * advantages), mask),
             "that is the objective min(ρ·A, clip(ρ)·A), which PPO *maximises*: the loss to minimise is its negative."),
            (_masked(-ratio * advantages, mask), "there is no clipping: that is the plain importance-sampled loss −ρ·A."),
            (_masked(-clipped * advantages, mask),
             "you used only the clipped term −clip(ρ)·A: take the max with the unclipped −ρ·A, so that a move in the "
             "harmful direction is never clipped."),
            (pessimistic.mean(), "you averaged over every position, padding included: average over real tokens only."),
            ((pessimistic * mask).mean(), "the padding is zeroed but you divided by B*T: divide by the number of real "
                                          "tokens, mask.sum()."),
            (_masked(torch.max(-backwards * advantages, -torch.clamp(backwards, 1 - eps, 1 + eps) * advantages), mask),
             "the ratio is the wrong way round: ρ = π_new / π_old = exp(logprobs − old_logprobs)."),
            ((pessimistic * mask).sum(1).div(mask.sum(1)).mean(),
             "that is the mean of per-row means: weigh every real token equally instead."),
        ])
        answer.reshape(()).backward()
        expect(learner_new.grad is not None, "clipped_policy_loss: no gradient reached `logprobs`: compute the ratio "
                                             f"from the logprobs argument itself.\n  case: {case}")
        expect_close(learner_new.grad, reference_new.grad, "clipped_policy_loss (its gradient with respect to logprobs)",
                     case=case)
    passed("clipped_policy_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.9: the clipped value loss
# ----------------------------------------------------------------------------------------------


def _value_loss_cases(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, width, c in [([6, 12, 3, 9], 12, 0.2), ([1, 5], 5, 0.5), ([8], 8, 1.0)]:
        mask = right_padded_mask(lengths, width)
        old = torch.randn(len(lengths), width, generator=g) + 1.0  # values away from 0, so "clipped around 0" shows
        values = old + (torch.rand(len(lengths), width, generator=g) - 0.5) * 2.0
        returns = old + torch.randn(len(lengths), width, generator=g)
        values = torch.where(mask.bool(), values, torch.full_like(values, 6.0))  # junk in the padding
        returns = torch.where(mask.bool(), returns, torch.full_like(returns, -4.0))
        cases.append((f"B={len(lengths)}, T={width}, lengths {lengths}, clip_range_value {c}, padding values 6 and "
                      f"returns -4", values, old, returns, mask, c))
    return cases


@exercise("05", "clipped_value_loss", difficulty=2, importance=4, minutes=10)
def check_clipped_value_loss(fn) -> None:
    """`fn(values [B, T], old_values [B, T], returns [B, T], mask [B, T], clip_range_value) -> 0-d loss`, as the
    first output of `rlhf_helpers.ppo.losses.clipped_value_loss`; its gradient must match too."""
    cases = _value_loss_cases()
    for case, values, old, returns, mask, c in cases:
        reference_values = values.clone().requires_grad_(True)
        expected, _ = reference_clipped_value_loss(reference_values, old, returns, mask, c)
        expected.backward()
        learner_values = values.clone().requires_grad_(True)
        answer = call(fn, learner_values, old.clone(), returns.clone(), mask.clone(), c, case=case)
        answer = _loss_with_gradient(answer, "clipped_value_loss", "values", case)
        unclipped = (values - returns) ** 2
        around_old = (old + torch.clamp(values - old, -c, c) - returns) ** 2
        around_zero = (torch.clamp(values, -c, c) - returns) ** 2
        worst = torch.max(unclipped, around_old)
        expect_close(answer, expected, "clipped_value_loss", case=case, diagnoses=[
            (0.5 * _masked(torch.max(unclipped, around_zero), mask),
             "you clipped the value around 0: clip its *change*, v_clip = old_values + clip(values − old_values, −c, c)."),
            (0.5 * _masked(torch.min(unclipped, around_old), mask),
             "min instead of max: the value loss is the larger (pessimistic) of the two squared errors."),
            (_masked(worst, mask), "the ½ is missing: 0.5 * mean(max(...)) (as the historical TRL and baselines)."),
            (0.5 * _masked(unclipped, mask), "there is no clipping: that is the plain ½·(v − R)²."),
            (0.5 * _masked(around_old, mask), "you used only the clipped error: take the max with the unclipped one."),
            (0.5 * worst.mean(), "you averaged over every position, padding included: average over real tokens only."),
            (0.5 * (worst * mask).mean(), "the padding is zeroed but you divided by B*T: divide by mask.sum()."),
        ])
        answer.reshape(()).backward()
        expect(learner_values.grad is not None, "clipped_value_loss: no gradient reached `values`: compute the loss "
                                                f"from the values argument itself.\n  case: {case}")
        expect_close(learner_values.grad, reference_values.grad, "clipped_value_loss (its gradient with respect to "
                     "values)", case=case)
    passed("clipped_value_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 5.10: the adaptive KL controller
# ----------------------------------------------------------------------------------------------

#: (beta, measured KL, target, horizon, n_steps): clipped above and below, unclipped both ways, on target, KL 0
KL_CONTROLLER_CASES = [(0.2, 12.0, 6.0, 10_000, 64), (0.2, 6.6, 6.0, 10_000, 64), (0.1, 1.0, 6.0, 1_000, 256),
                       (0.05, 5.0, 6.0, 1_000, 128), (0.3, 0.0, 3.0, 500, 64), (0.2, 6.0, 6.0, 1_000, 64),
                       (0.5, 3.3, 3.0, 200, 32)]


@exercise("05", "adaptive_kl_update", difficulty=1, importance=4, minutes=5)
def check_adaptive_kl_update(fn) -> None:
    """`fn(beta, kl, target, horizon, n_steps) -> float`: the new β, as `AdaptiveKLController(beta, target,
    horizon).update(kl, n_steps)`."""
    answers, expected = [], []
    for beta, kl, target, horizon, n in KL_CONTROLLER_CASES:
        case = f"beta {beta}, kl {kl}, target {target}, horizon {horizon}, n_steps {n}"
        answer = call(fn, beta, kl, target, horizon, n, case=case)
        try:
            answers.append(float(answer))
        except (TypeError, ValueError):
            raise ExerciseFailed(f"adaptive_kl_update: return the new beta as a number, got {type(answer).__name__}."
                                 f"\n  case: {case}") from None
        expected.append(reference_adaptive_kl(beta, target, horizon).update(kl, n))

    def each(rule):
        return torch.tensor([rule(*c) for c in KL_CONTROLLER_CASES], dtype=torch.float64)

    def clip(x):
        return min(max(x, -0.2), 0.2)

    case = "; ".join(f"(beta {b}, kl {k}, target {t}, horizon {h}, n_steps {n})" for b, k, t, h, n in KL_CONTROLLER_CASES)
    expect_close(torch.tensor(answers, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 "adaptive_kl_update (the new beta of each case)", case=case, atol=1e-9, rtol=1e-7, diagnoses=[
        (each(lambda b, k, t, h, n: b * (1 + (k / t - 1) * n / h)),
         "the error is not clipped: err = clip(kl / target − 1, −0.2, 0.2), so one strange batch cannot move β far."),
        (each(lambda b, k, t, h, n: b * (1 - clip(k / t - 1) * n / h)),
         "the sign is flipped: β must *rise* when the KL is above the target (a stronger leash), and fall below it."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k / t - 1) / h)),
         "n_steps is ignored: the step is err · n_steps / horizon (a batch of n samples moves β n times as far)."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k / t - 1))),
         "the step is err alone: scale it by n_steps / horizon, β ← β·(1 + err · n_steps / horizon)."),
        (each(lambda b, k, t, h, n: b * (1 + clip(k - t) * n / h)),
         "the error is kl − target: it is proportional, kl / target − 1, then clipped to ±0.2."),
        (each(lambda b, k, t, h, n: b * (1 + clip((k / t - 1) * n / h))),
         "you clipped the whole step: clip the error kl / target − 1 to ±0.2, then multiply by n_steps / horizon."),
        (each(lambda b, k, t, h, n: 1 + clip(k / t - 1) * n / h),
         "that is the factor 1 + err · n_steps / horizon: multiply the old β by it."),
    ])
    passed("adaptive_kl_update", len(KL_CONTROLLER_CASES))
