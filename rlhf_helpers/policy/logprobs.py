"""Log-probabilities of responses under a causal language model, with padding done right.

Every RLHF stage after generation asks the same question: *how likely was this response under
that model?* PPO asks it of the policy (for the ratio) and of the frozen reference (for the KL
penalty), with one forward pass over ``[query | response]``:

    log pi(y | x) = sum_t log pi(y_t | x, y_<t)        (the per-token terms are what we return)

Two implementation details decide whether the numbers are right (Huang et al. 2023, "The N
Implementation Details of RLHF with PPO", details 2 and 3):

* **Padding.** Queries are left-padded (so that every row's last query token sits in the same
  column and generation can append to all rows at once), responses are right-padded. GPT-2 has
  *learned absolute* position embeddings, so a left-padded row must get position ids that start at
  0 on its first real token; otherwise the same text gets different logits depending on how much
  padding its batch needed. `rlhf_helpers.core.tensors.position_ids_from_mask` computes them from the mask.
* **Temperature.** If responses were sampled from ``softmax(logits / T)``, their log-probs must be
  recomputed from ``logits / T`` too, or the PPO ratio starts away from 1 and the KL estimate is off.

Tensor shapes: B = batch, P = padded query length, R = padded response length, V = vocabulary.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..core.tensors import position_ids_from_mask
from .packed import causal_lm_of, pack_responses, packable, packed_logits, unpack_responses


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)`` read at `tokens`.

    Args:
        logits: ``[B, T, V]``, the scores that predict each of the T tokens.
        tokens: ``[B, T]`` token ids.
    Returns:
        ``[B, T]`` float32 log-probabilities ``log p(tokens[b, t])``.
    """
    # float32 for the normaliser: log_softmax in bf16 loses ~3 significant digits, which is the
    # size of the PPO ratio's deviation from 1 that we care about.
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(dim=-1, index=tokens.long().unsqueeze(-1)).squeeze(-1)


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in float32; at temperature 1 the float32 logits themselves (no copy of [.., V])."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def check_response_batch(model, query_ids, query_mask, response_ids, response_mask, temperature: float) -> None:
    """The checks every response pass needs: temperature > 0, matching shapes, left-padded queries, no dropout."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query_ids.shape != query_mask.shape or response_ids.shape != response_mask.shape:
        raise ValueError(
            f"ids and masks must have equal shapes: query {tuple(query_ids.shape)} vs {tuple(query_mask.shape)}, "
            f"response {tuple(response_ids.shape)} vs {tuple(response_mask.shape)}"
        )
    if query_ids.shape[0] != response_ids.shape[0]:
        raise ValueError(f"query batch {query_ids.shape[0]} != response batch {response_ids.shape[0]}")
    if bool((query_mask[:, -1] == 0).any()):
        raise ValueError("query_ids must be left-padded: the last query column has padding in some row "
                         "(a right-padded query would put padding between the query and its response).")
    if any(isinstance(m, torch.nn.Dropout) and m.training and m.p > 0 for m in model.modules()):
        # Dropout makes every pass a different model: the PPO ratio would not start at 1 and the
        # KL to the reference would be noise (Huang et al. 2023, "Policy training implementation details").
        raise ValueError("A response pass got a model in train mode with active dropout. Call model.eval() "
                         "first (gradients still flow in eval mode) or build the model with dropout 0.")


def response_forward(model, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0,
                     response_only: bool = False):
    """One forward pass over ``[query | response]``, with the checks every response pass needs.

    Returns ``(output, window)``: the model's output (``.logits [B, P+R, V]``, and ``.values`` for a
    `PolicyWithValueHead`) and the slice of columns ``P-1 .. P+R-2``, whose outputs predict (and, for values,
    evaluate the state before) each response token: the logits at column c predict the token at column c + 1.

    ``response_only``: project only the last R + 1 positions onto the vocabulary (``logits_to_keep``; the
    other P - 1 rows of the LM head's matrix multiply are never read). ``output.logits`` is then
    ``[B, R+1, V]`` and the window is ``0 .. R-1``.
    """
    check_response_batch(model, query_ids, query_mask, response_ids, response_mask, temperature)
    n_query, n_response = query_ids.shape[1], response_ids.shape[1]
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1).long()
    positions = position_ids_from_mask(attention_mask)
    if response_only:
        output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       logits_to_keep=n_response + 1)
        return output, slice(0, n_response)
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
    return output, slice(n_query - 1, n_query + n_response - 1)


def packed_response_forward(model, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0):
    """`response_forward` on the real tokens only (`rlhf_helpers.policy.packed`): the fast path's pass.

    `model` must be `packable`. A module that takes ``packing=`` itself (``accepts_packing``, e.g. the PPO
    policy with its value head) is called through its own forward, so that a DDP wrapper sees the call.
    Returns ``(output, packing)``: ``output.logits [M, V]`` at the M real response tokens, row-major (and
    ``output.values [M]`` for a value-head policy); `unpack_responses` puts per-token results back in ``[B, R]``.
    """
    check_response_batch(model, query_ids, query_mask, response_ids, response_mask, temperature)
    packing = pack_responses(query_mask, response_mask)
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    if getattr(getattr(model, "module", model), "accepts_packing", False):
        return model(input_ids=input_ids, packing=packing), packing
    return SimpleNamespace(logits=packed_logits(causal_lm_of(model), input_ids, packing)), packing


def response_logprobs(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    return_logits: bool = False,
    response_only: bool = False,
):
    """Per-token log-probs of the responses, from one forward pass over ``[query | response]``.

    Args:
        model: a ``GPT2LMHeadModel`` or any module whose ``forward(input_ids=, attention_mask=,
            position_ids=)`` returns an object with ``.logits`` of shape ``[B, L, V]``.
        query_ids: ``[B, P]`` prompts, *left*-padded (the last column is a real token of every row).
        query_mask: ``[B, P]``, 1 on real query tokens.
        response_ids: ``[B, R]`` responses, *right*-padded (as returned by `generate`).
        response_mask: ``[B, R]``, 1 on real response tokens (up to and including EOS).
        temperature: divide the logits by this before the softmax; use the sampling temperature.
        return_logits: also return the response logits (already divided by `temperature`), e.g.
            for the entropy of the policy.
        response_only: the work at the response positions only: the same numbers up to float rounding, less
            work. A GPT-2 (`packable`) runs on its real tokens only (`packed_response_forward`) unless
            `return_logits`; other models project only the response positions onto the vocabulary.
    Returns:
        ``logprobs`` ``[B, R]`` (float32; 0 where `response_mask` is 0), or
        ``(logprobs, logits)`` with logits ``[B, R, V]`` when `return_logits` is True.

    Gradients flow if the caller has them enabled (PPO's policy pass); wrap the call in
    ``torch.no_grad()`` for the reference model. Dropout must be off (eval mode, or dropout 0 as in
    `new_policy_model`): a train-mode model with active dropout raises ValueError.
    """
    if response_only and not return_logits and packable(model):
        output, _ = packed_response_forward(model, query_ids, query_mask, response_ids, response_mask, temperature)
        tokens = response_ids[response_mask.bool()]
        logprobs = logprobs_from_logits(scale_logits(output.logits, temperature)[None], tokens[None])[0]  # [M]
        return unpack_responses(logprobs, response_mask)
    output, window = response_forward(model, query_ids, query_mask, response_ids, response_mask, temperature,
                                      response_only=response_only)
    logits = scale_logits(output.logits[:, window, :], temperature)
    logprobs = logprobs_from_logits(logits, response_ids) * response_mask
    return (logprobs, logits) if return_logits else logprobs
