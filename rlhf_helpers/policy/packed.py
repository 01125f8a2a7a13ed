"""GPT-2's forward pass on the real tokens only: PPO's fast path for the response passes.

A PPO batch is mostly padding. Prompts are 2–8 tokens, left-padded to the longest; responses are 4–16 tokens,
right-padded to the longest; so a ``[B, P + R]`` batch of the course's defaults is about 40% padding, and the
ordinary forward pass multiplies every padded position through every layer and the LM head. Its outputs are
then thrown away.

Almost all of GPT-2's work is position-wise: the layer norms, the query/key/value projection, the attention's
output projection, the MLP and the LM head treat each token on its own. Only attention mixes tokens. So
`packed_hidden_states` keeps the hidden states as one ``[N, d]`` matrix of the N real tokens (padding removed,
as sequence-packing does: Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination") and
scatters them into the padded ``[B, T]`` layout only for attention, which is cheap at these lengths
(``B * T^2`` scores per head). And the LM head, the largest matrix of the tiny model, projects only the M
positions whose outputs are read: those that predict a response token.

The numbers are GPT-2's (`transformers`' ``GPT2LMHeadModel`` in eval mode) up to float rounding; the tests
compare both. One difference in the arithmetic: GPT-2's "gelu_new" is computed by the fused
``F.gelu(approximate="tanh")``, the same formula in one pass instead of six.

Shapes: B rows, T = P + R columns, N real tokens, M = the response tokens (the outputs we keep), d = n_embd,
H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.tensors import position_ids_from_mask
from ..core.thread_invariance import softmax_last_dim


@dataclass
class Packing:
    """Where the real tokens of a padded ``[B, T]`` batch are, and which outputs to keep."""

    token_index: torch.Tensor
    """``[N]`` flat indices (into ``B * T``, row-major) of the tokens computed: the real ones but each row's
    last (then padding positions up to a rounded count)."""
    positions: torch.Tensor
    """``[N]`` their position ids (counting real tokens of their row from 0)."""
    allowed: torch.Tensor
    """``[B, 1, T, T]`` bool: query column i may attend to key column j (causal, real keys; and itself, so
    that a padded query row has one finite score and no NaN reaches the gradient)."""
    output_index: torch.Tensor
    """``[M']`` indices into the packed tokens of the outputs to keep: the M wanted, then repeats of the first
    up to a multiple of `multiple` (sliced off by `packed_logits`)."""
    outputs: int
    """M, the number of outputs wanted."""
    rows: int
    columns: int


def pack_responses(query_mask: torch.Tensor, response_mask: torch.Tensor, multiple: int = 32) -> Packing:
    """The packing of ``[query | response]`` that keeps the outputs predicting each real response token.

    Args:
        query_mask: ``[B, P]``, left-padded (its last column is real in every row).
        response_mask: ``[B, R]``, right-padded.
        multiple: round the packed tokens and the outputs up to a multiple of this. Why: on CPUs, oneDNN
            builds a bf16 matrix-multiply kernel for every new shape (~20-40 ms for the LM head's, against
            ~3 ms to run it), and the number of real tokens changes with every mini-batch. Rounding keeps the
            shapes to a few, each built once. The extra tokens are padding positions (their outputs are never
            read; real tokens never attend to them), the extra outputs repeats of the first.
    Returns:
        `Packing` whose M outputs are, row-major, the columns ``P - 1 + j`` of the real response tokens j:
        the logits at column c predict the token at column c + 1 (`rlhf_helpers.policy.logprobs`).
    """
    mask = torch.cat([query_mask, response_mask], dim=1).bool()
    rows, columns = mask.shape
    # Each row's last response token predicts nothing we read, and no other token attends to it (attention is
    # causal): it is left out of the work like padding.
    last = query_mask.shape[1] + response_mask.long().sum(1) - 1
    needed = mask.clone()
    needed[torch.arange(rows, device=mask.device), last] = False
    flat = needed.reshape(-1)
    real = flat.nonzero().squeeze(-1)
    rank = flat.long().cumsum(0) - 1  # flat index -> its place among the needed tokens
    extra = min(_round_up(len(real), multiple), flat.numel()) - len(real)
    token_index = torch.cat([real, (~flat).nonzero().squeeze(-1)[:extra]])  # needed tokens first: rank holds
    positions = position_ids_from_mask(mask.long()).reshape(-1)[token_index]
    row, column = response_mask.bool().nonzero(as_tuple=True)
    wanted = rank[row * columns + query_mask.shape[1] - 1 + column]
    output_index = torch.cat([wanted, wanted[:1].expand(_round_up(len(wanted), multiple) - len(wanted))])
    causal = torch.ones(columns, columns, dtype=torch.bool, device=mask.device).tril()
    itself = torch.eye(columns, dtype=torch.bool, device=mask.device)
    allowed = ((causal & needed[:, None, :]) | itself)[:, None]
    return Packing(token_index, positions, allowed, output_index, len(wanted), rows, columns)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def unpack_responses(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``[M, ...]`` per-response-token values back to ``[B, R, ...]``, 0 on padding (differentiable)."""
    mask = response_mask.bool()
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    where = mask.reshape(*mask.shape, *([1] * (values.dim() - 1))).expand_as(out)
    return out.masked_scatter(where, values)


def packable(model) -> bool:
    """Whether `packed_hidden_states` computes what this GPT-2's own forward computes.

    `model`: a ``GPT2LMHeadModel`` (or a module with one as ``.lm``), possibly wrapped by DDP (``.module``).
    Variants with other attention arithmetic (layer-scaled or upcast attention, cross-attention) or another
    activation fall back to the ordinary forward.
    """
    lm = causal_lm_of(model)
    config = getattr(lm, "config", None)
    return (getattr(config, "model_type", None) == "gpt2" and hasattr(lm, "transformer")
            and config.activation_function in ("gelu_new", "gelu_pytorch_tanh")
            and not config.scale_attn_by_inverse_layer_idx and not config.reorder_and_upcast_attn
            and not config.add_cross_attention)


def causal_lm_of(model):
    """The ``GPT2LMHeadModel`` inside `model` (unwrapping DDP's ``.module`` and a value head's ``.lm``)."""
    model = getattr(model, "module", model)
    return getattr(model, "lm", model)


def _attention(block, x: torch.Tensor, packing: Packing, scale: bool) -> torch.Tensor:
    """Causal self-attention of one GPT-2 block: ``[N, d]`` -> ``[N, d]`` (before the output projection).

    Query, key and value are projected on the N real tokens, then scattered into the padded ``[B, H, T, d/H]``
    layout for the scores, whose masked entries get the most negative float (as GPT-2's own attention does).
    """
    attn = block.attn
    heads, width = attn.num_heads, attn.embed_dim
    head_dim = width // heads
    qkv = conv1d(attn.c_attn, x)
    padded = qkv.new_zeros(packing.rows * packing.columns, 3 * width).index_copy(0, packing.token_index, qkv)
    padded = padded.float().view(packing.rows, packing.columns, 3, heads, head_dim)
    q, k, v = padded.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, T, d/H]
    out = masked_attention(q, k, v, packing.allowed, scale)
    out = out.transpose(1, 2).reshape(packing.rows * packing.columns, width)
    return out.index_select(0, packing.token_index)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                     scale: bool) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d/H), masked) v`` in float32: ``q [B, H, T, d/H]``, ``k, v [B, H, C, d/H]``,
    ``allowed [B, 1, T, C]`` bool; masked scores get the most negative float, as GPT-2's own attention does.

    Float32 under autocast too: on CPUs these many tiny batched matrix multiplies (``B * H`` of ``[T, C]``)
    run about 3x faster in float32 than in bf16, and round less."""
    with torch.autocast(q.device.type, enabled=False):  # autocast would cast the matmuls back to bf16
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2))
        if scale:
            scores = scores * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
        return torch.matmul(softmax_last_dim(scores), v.float())


def layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """``norm(x)`` for a GPT-2 ``nn.LayerNorm`` `norm`, as a function call (autocast treats both alike)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def conv1d(layer, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``Conv1D`` (a linear layer stored as ``[in, out]``): ``x @ W + b`` for ``x [..., in]``.

    `torch.addmm` on the weight itself, as ``Conv1D`` does: under autocast, the bf16 copy of a weight is then
    made once per autocast region, not once per call."""
    out = torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight)
    return out.view(*x.shape[:-1], out.shape[-1])


def mlp_block(block, h: torch.Tensor) -> torch.Tensor:
    """The second half of a GPT-2 block, without its residual: ``MLP(ln_2(h))``, ``[..., d]``."""
    return conv1d(block.mlp.c_proj, gelu_tanh(conv1d(block.mlp.c_fc, layer_norm(h, block.ln_2))))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's "gelu_new": ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, by torch's fused kernel."""
    return F.gelu(x, approximate="tanh")


def packed_hidden_states(lm, input_ids: torch.Tensor, packing: Packing) -> torch.Tensor:
    """GPT-2's final hidden states (after ``ln_f``) at the packing's outputs: ``[M', d]`` (the first M wanted).

    Args:
        lm: a ``GPT2LMHeadModel`` (`packable`), in eval mode or with dropout 0 (no dropout is applied here).
        input_ids: ``[B, T]``, padded as `packing` describes.
    """
    transformer, config = lm.transformer, lm.config
    h = transformer.wte(input_ids.reshape(-1)[packing.token_index]) + transformer.wpe(packing.positions)  # [N, d]
    for block in transformer.h:
        attended = _attention(block, layer_norm(h, block.ln_1), packing, config.scale_attn_weights)
        h = h + conv1d(block.attn.c_proj, attended)
        h = h + mlp_block(block, h)
    # ln_f is position-wise too: apply it to the kept outputs only
    return layer_norm(h.index_select(0, packing.output_index), transformer.ln_f)


def packed_logits(lm, input_ids: torch.Tensor, packing: Packing, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """The LM head at the packing's M outputs: ``[M, V]`` next-token scores (`hidden`: `packed_hidden_states`
    if already computed). The matrix multiply runs on all M' rows, so that its shape is a rounded one."""
    hidden = packed_hidden_states(lm, input_ids, packing) if hidden is None else hidden
    return lm.lm_head(hidden)[: packing.outputs]
