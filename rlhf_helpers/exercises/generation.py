"""Checks of notebook 02's exercises: the language-modelling loss and the sampling filters (top-k, top-p)."""

from __future__ import annotations

import torch

from ..policy.generation import filter_logits
from ..policy.logprobs import logprobs_from_logits
from .checking import ExerciseFailed, as_tensor, call, exercise, expect, expect_close, passed

__all__ = ["check_next_token_loss", "check_top_k_filter", "check_top_p_filter"]

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------
# Exercise 2.1: the next-token loss (the shift)
# ----------------------------------------------------------------------------------------------


def reference_next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``−log p(input_ids[:, t + 1] | logits[:, t])`` over the ``B × (T − 1)`` predicted tokens (the package's
    `logprobs_from_logits`, shifted: what ``GPT2LMHeadModel(input_ids, labels=input_ids).loss`` computes)."""
    return -logprobs_from_logits(logits[:, :-1], input_ids[:, 1:]).mean()


def _differentiable(answer, what: str):
    expect(isinstance(answer, torch.Tensor) and answer.requires_grad,
           f"{what}: the result carries no gradient (a Python float, .item(), .detach() or numpy?): training calls "
           "loss.backward(), so return a torch tensor computed from the logits.")
    return answer


@exercise("02", "next_token_loss", difficulty=2, importance=4, minutes=10)
def check_next_token_loss(fn) -> None:
    """`fn(logits [B, T, V], input_ids [B, T]) -> 0-d tensor`: the mean next-token cross-entropy."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for b, t, v in [(3, 9, 13), (1, 2, 5), (2, 33, 50)]:
        cases.append((f"B={b}, T={t}, V={v}", torch.randn(b, t, v, generator=g) * 2,
                      torch.randint(0, v, (b, t), generator=g)))
    for case, logits, ids in cases:
        expected = reference_next_token_loss(logits, ids)
        leaf = logits.clone().requires_grad_(True)
        answer = _differentiable(call(fn, leaf, ids.clone(), case=case), "next_token_loss")
        expect(answer.dim() == 0 or answer.numel() == 1,
               f"next_token_loss: shape {tuple(answer.shape)}; the loss is one number (a 0-d tensor): average "
               f"over every predicted token.\n  case: {case}")
        no_shift = -logprobs_from_logits(logits, ids).mean()
        expect_close(answer, expected, "next_token_loss", case=case, diagnoses=[
            (no_shift, "no shift: logits[:, t] predicts the *next* token, input_ids[:, t + 1]; compare "
                       "logits[:, :-1] with input_ids[:, 1:]."),
            (-logprobs_from_logits(logits[:, 1:], ids[:, :-1]).mean(),
             "shifted the wrong way round: the logits at position t predict token t + 1, so drop the *last* "
             "logits and the *first* tokens (logits[:, :-1] vs input_ids[:, 1:])."),
            (-expected, "the sign is flipped: that is the mean log-likelihood; the loss is its negative."),
            (expected * ids[:, 1:].numel(), "that is the sum over tokens: take the mean (so the loss does not grow "
                                            "with the batch or the length)."),
            (expected.exp(), "that is the perplexity, exp(loss): return the loss itself."),
        ])
        # the gradient is the reference's (softmax − one-hot, on the shifted positions, divided by the count)
        reference_leaf = logits.clone().requires_grad_(True)
        reference_next_token_loss(reference_leaf, ids).backward()
        answer.reshape(()).backward()
        expect_close(leaf.grad, reference_leaf.grad, "next_token_loss (its gradient)", case=case, atol=1e-6)
    passed("next_token_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercises 2.2 and 2.3: top-k and top-p filtering
# ----------------------------------------------------------------------------------------------


def _filter_cases(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("B=4, V=50, random logits (scale 2)", torch.randn(4, 50, generator=g) * 2),
        ("B=2, V=8, one very likely token per row", torch.tensor([[9.0, 1, 0.5, 0, -1, -2, 0.2, 0.1],
                                                                  [0.3, 0.1, -4, 12.0, 2, 1, 0, -1]])),
        ("B=3, V=1000, random logits (scale 3)", torch.randn(3, 1000, generator=g) * 3),
    ]


def _unchanged(original: torch.Tensor, passed_in: torch.Tensor, name: str, case: str) -> None:
    expect(torch.equal(original, passed_in), f"{name}: your function changed its input `logits` in place "
                                             f"(masked_fill_, x[...] = ...): return a new tensor instead; the caller "
                                             f"still needs its logits.\n  case: {case}")


def _as_filtered(answer, what: str) -> torch.Tensor:
    answer = as_tensor(answer, what)
    if answer.is_floating_point():
        return answer.float()
    raise ExerciseFailed(f"{what}: returned a {answer.dtype} tensor; return the logits (float), with -inf where a "
                         "token is removed.")


@exercise("02", "top_k_filter", difficulty=2, importance=3, minutes=10)
def check_top_k_filter(fn) -> None:
    """`fn(logits [B, V], k) -> [B, V]`: logits below the k-th largest of their row set to -inf (ties at the k-th
    value are kept); ``k = 0``: unchanged."""
    g = torch.Generator().manual_seed(1)
    cases = [(case, logits, k) for (case, logits), k in zip(_filter_cases(1), (5, 2, 40))]
    ties = torch.randint(0, 4, (3, 12), generator=g).float()  # few distinct values: ties at the k-th value
    cases += [("B=3, V=12, integer logits (ties at the k-th value)", ties, 4),
              ("B=4, V=50, k=1 (greedy)", cases[0][1], 1),
              ("B=4, V=50, k=V (nothing removed)", cases[0][1], 50),
              ("B=4, V=50, k=0 (filtering off)", cases[0][1], 0)]
    for case, logits, k in cases:
        case = f"{case}, k={k}"
        expected = filter_logits(logits, top_k=k)
        given = logits.clone()
        answer = _as_filtered(call(fn, given, k, case=case), "top_k_filter")
        _unchanged(logits, given, "top_k_filter", case)
        removed = torch.isinf(expected)
        diagnoses = [
            (torch.where(removed, torch.zeros_like(logits), logits),
             "removed tokens got 0, but 0 is an ordinary logit (softmax gives it weight e^0 = 1): fill with "
             "float('-inf'), whose probability is exactly 0."),
            (filter_logits(logits, top_k=k + 1) if 0 < k < logits.shape[-1] else expected,
             "one token too many per row: keep the k largest (the threshold is the k-th largest value, "
             "torch.topk(logits, k).values[:, -1:], not the (k+1)-th)."),
            (filter_logits(logits, top_k=k - 1) if k > 1 else expected,
             "one token too few per row: the k-th largest logit itself stays (drop only logits *below* it: <, not <=)."),
            (filter_logits(logits, top_k=k).softmax(-1), "you returned probabilities; return the filtered *logits* "
                                                         "(the sampler applies the softmax)."),
            (torch.where(removed, logits, torch.full_like(logits, NEG_INF)),
             "the mask is inverted: you removed the k best tokens and kept the rest."),
        ]
        if k == 0:
            expect(torch.isfinite(answer).all() and answer.shape == logits.shape,
                   f"top_k_filter: k = 0 means 'no top-k filtering': return the logits unchanged.\n  case: {case}")
        if not _same(answer, expected):
            finite = torch.isfinite(answer)
            exactly_k = bool((finite.sum(-1) == k).all()) and bool((finite <= ~removed).all())
            if exactly_k and int((~removed).sum()) > finite.sum():
                raise ExerciseFailed(
                    "top_k_filter: in a tie at the k-th value you kept exactly k tokens, breaking the tie by position; "
                    "the package keeps every token tied with the k-th largest (compare with that value: "
                    f"logits < kth → -inf), so no tied token is favoured.\n  case: {case}")
        expect_close(answer, expected, "top_k_filter", case=case, diagnoses=diagnoses)
    passed("top_k_filter", len(cases))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=1e-5, rtol=1e-4, equal_nan=True))


def _top_p_drop_crossing(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Wrong: keeps only tokens whose cumulative probability (themselves included) stays <= p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = torch.zeros_like(cumulative, dtype=torch.bool).scatter(-1, order, cumulative > p)
    return logits.masked_fill(drop, NEG_INF)


def _top_p_unsorted(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Wrong: accumulates probability in vocabulary order instead of from the most likely token down."""
    probs = logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, NEG_INF)


def _top_p_on_logits(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Wrong: accumulates the (sorted) logits themselves instead of their probabilities."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    finite = torch.where(torch.isfinite(sorted_logits), sorted_logits, torch.zeros_like(sorted_logits))
    drop_sorted = finite.cumsum(-1) - finite >= p
    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), NEG_INF)


def _top_p_ascending(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Wrong: sorted from the least likely token up."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    probs = sorted_logits.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), NEG_INF)


@exercise("02", "top_p_filter", difficulty=3, importance=3, minutes=15)
def check_top_p_filter(fn) -> None:
    """`fn(logits [B, V], p) -> [B, V]`: keep the smallest set of most likely tokens whose probability reaches p (the
    token that crosses p is kept, and always the most likely one); -inf elsewhere; ``p = 1``: unchanged."""
    base = _filter_cases(2)
    cases = [(case, logits, p) for (case, logits), p in zip(base, (0.9, 0.5, 0.95))]
    cases += [("B=4, V=50, p=0.3", base[0][1], 0.3),
              ("B=2, V=8, p=0.01 (only the most likely token survives)", base[1][1], 0.01),
              ("B=4, V=50, after top-k=10 (the row already holds -inf)", filter_logits(base[0][1], top_k=10), 0.8),
              ("B=4, V=50, p=1.0 (filtering off)", base[0][1], 1.0)]
    for case, logits, p in cases:
        case = f"{case}, p={p}"
        expected = filter_logits(logits, top_p=p)
        given = logits.clone()
        answer = _as_filtered(call(fn, given, p, case=case), "top_p_filter")
        _unchanged(logits, given, "top_p_filter", case)
        removed = torch.isinf(expected) & torch.isfinite(logits)
        expect_close(answer, expected, "top_p_filter", case=case, diagnoses=[
            (torch.where(removed, torch.zeros_like(logits), logits),
             "removed tokens got 0, but 0 is an ordinary logit: fill with float('-inf') (probability exactly 0)."),
            (_top_p_drop_crossing(logits, p),
             "you dropped the token whose cumulative probability crosses p (cumsum > p → drop): keep it, so the kept "
             "set reaches p. Drop a token when the mass *above* it (cumsum − its own probability) already reaches p."),
            (_top_p_unsorted(logits, p),
             "the cumulative sum runs in vocabulary order: sort the probabilities from the most likely down first "
             "(torch.sort(..., descending=True)), then map the decision back with the sort's indices (scatter)."),
            (_top_p_ascending(logits, p),
             "sorted from the least likely up: sort descending, so the nucleus is made of the most likely tokens."),
            (_top_p_on_logits(logits, p),
             "you accumulated logits; top-p is about probability mass: apply the softmax to the sorted logits, "
             "then take the cumulative sum."),
        ])
    passed("top_p_filter", len(cases))
