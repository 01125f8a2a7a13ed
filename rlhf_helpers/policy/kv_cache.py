"""GPT-2 decoding with a preallocated key/value cache: the fast path's sampling loop.

`rlhf_helpers.policy.generation` samples token by token, and each step feeds only the newest token: the keys
and values of the earlier ones are kept (the KV cache). `transformers`' cache grows by concatenation, and every
call of the model also rebuilds its attention mask and bookkeeping; at the tiny model's size (a step is a
handful of ``[64, 256]`` matrix multiplies) that overhead is a large share of the time. Here the cache is one
``[B, H, P + max_new_tokens, d/H]`` tensor per layer and kind, allocated once and written in place, and a step
is GPT-2's arithmetic and nothing else, with the weights cast to the compute dtype once per sampling call.

The numbers are GPT-2's up to float rounding (tests compare the sampled tokens and log-probs with the
ordinary loop's).

Shapes: B rows, P prompt columns (left-padded), C cache columns, T new columns of one call, d = n_embd, H heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .packed import gelu_tanh, layer_norm, masked_attention


class DecoderWeights:
    """A GPT-2's weights as the decoder uses them: the matrices cast once to the compute dtype.

    Under autocast, every call of a linear layer casts its float32 weight to bf16 afresh: at the tiny model's
    size those copies cost as much as the matrix multiplies of a decoding step. Sampling never changes the
    weights, so one cast per sampling call serves all its steps. Layer norms and embeddings stay in their own
    dtype (float32), and so does the residual stream, as under autocast."""

    def __init__(self, lm, dtype: torch.dtype):
        transformer = lm.transformer
        cast = lambda t: t.detach().to(dtype)  # noqa: E731
        self.dtype = dtype
        self.config = lm.config
        self.wte, self.wpe, self.ln_f = transformer.wte.weight, transformer.wpe.weight, transformer.ln_f
        self.lm_head = cast(lm.lm_head.weight)
        self.blocks = [dict(ln_1=b.ln_1, ln_2=b.ln_2,
                            attn=(cast(b.attn.c_attn.weight), cast(b.attn.c_attn.bias)),
                            attn_proj=(cast(b.attn.c_proj.weight), cast(b.attn.c_proj.bias)),
                            fc=(cast(b.mlp.c_fc.weight), cast(b.mlp.c_fc.bias)),
                            fc_proj=(cast(b.mlp.c_proj.weight), cast(b.mlp.c_proj.bias)))
                       for b in transformer.h]


class KVCache:
    """Keys and values ``[B, H, C, d/H]`` of every layer, written in place; `valid` marks the real columns."""

    def __init__(self, config, rows: int, columns: int, dtype: torch.dtype, device):
        head_dim = config.n_embd // config.n_head
        shape = (rows, config.n_head, columns, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.valid = torch.zeros(rows, columns, dtype=torch.bool, device=device)
        self.filled = 0  # columns written so far


def compute_dtype(lm, device) -> torch.dtype:
    """The dtype the linear layers compute in: autocast's when it is on for `device`, else the weights'."""
    kind = torch.device(device).type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return lm.transformer.wte.weight.dtype


def _linear(x: torch.Tensor, weight_bias, dtype) -> torch.Tensor:
    """GPT-2's ``Conv1D`` (``x @ W + b``, W stored ``[in, out]``) on ``x [..., in]`` in `dtype`."""
    weight, bias = weight_bias
    out = torch.addmm(bias, x.reshape(-1, x.shape[-1]).to(dtype), weight)
    return out.view(*x.shape[:-1], out.shape[-1])


@torch.no_grad()
def append_columns(weights: DecoderWeights, cache: KVCache, input_ids: torch.Tensor, positions: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """Run GPT-2 over T new columns, store their keys and values, return the last column's logits ``[B, V]``.

    Args:
        input_ids, positions: ``[B, T]`` (the prompt at the first call, then one sampled token per call).
        valid: ``[B, T]`` bool, False on padding (and on the columns of rows that have finished): no later
            token attends to those columns.
    """
    config, dtype = weights.config, weights.dtype
    start, new = cache.filled, input_ids.shape[1]
    end = start + new
    cache.valid[:, start:end] = valid
    heads, width = config.n_head, config.n_embd
    head_dim = width // heads
    rows = input_ids.shape[0]
    # Query column start + i sees the valid key columns <= start + i, and always itself (no NaN). The scores
    # are computed against the whole cache, unwritten columns masked (zeros, so 0 weight x value = 0): a
    # slice [:end] of it would be copied into a contiguous tensor by every matmul.
    key = torch.arange(cache.valid.shape[1], device=input_ids.device)
    query = torch.arange(start, end, device=input_ids.device)
    allowed = (key[None, :] <= query[:, None]) & cache.valid[:, None, :]
    allowed = (allowed | (key[None, :] == query[:, None]))[:, None]  # [B, 1, T, C]
    h = F.embedding(input_ids, weights.wte) + F.embedding(positions, weights.wpe)  # [B, T, d], float32
    for layer, block in enumerate(weights.blocks):
        qkv = _linear(layer_norm(h, block["ln_1"]), block["attn"], dtype)
        # the cache and the attention in float32 (`masked_attention` says why)
        q, k, v = qkv.float().view(rows, new, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, T, d/H]
        cache.keys[layer][:, :, start:end] = k
        cache.values[layer][:, :, start:end] = v
        attention = masked_attention(q, cache.keys[layer], cache.values[layer], allowed, config.scale_attn_weights)
        h = h + _linear(attention.transpose(1, 2).reshape(rows, new, width), block["attn_proj"], dtype)
        x = gelu_tanh(_linear(layer_norm(h, block["ln_2"]), block["fc"], dtype))
        h = h + _linear(x, block["fc_proj"], dtype)
    cache.filled = end
    return F.linear(layer_norm(h[:, -1], weights.ln_f).to(dtype), weights.lm_head)
