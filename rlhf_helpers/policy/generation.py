"""Batched sampling from a causal language model: the course's one generation loop.

We write the loop ourselves (no ``model.generate``) because RLHF needs to know exactly what was
sampled, from which distribution, and which tokens count:

1. Prompts are **left-padded** so that every row's next token goes in the same column; the
   attention mask hides the padding and position ids count only real tokens (GPT-2's positions are
   learned and absolute: see `rlhf_helpers.logprobs`).
2. Each step turns the last logits into a distribution: divide by the temperature, then optionally
   keep only the top-k tokens or the smallest "nucleus" of tokens whose probability reaches top-p
   (Holtzman et al. 2020), and sample one token with a seeded ``torch.Generator``.
3. The **KV cache** (``past_key_values``) keeps each layer's keys and values, so a step feeds one new
   token per row instead of the whole sequence: O(L) work per step instead of O(L^2).
4. A row that samples EOS is finished: its later columns are filled with the pad id and masked out.
   The loop stops when every row has finished, so the response may be shorter than
   ``max_new_tokens``.

The output keeps queries and responses apart (``response_ids`` never contains prompt tokens; an
old TRL bug returned prompt tokens as the "response" when generation stopped early), with masks
ready for `rlhf_helpers.policy.logprobs.response_logprobs`.

PPO samples with ``top_k=0, top_p=1.0`` (the full distribution, as the seed's recipe and TRL's
gpt2-sentiment notebook do). Top-k / top-p sample from a *truncated* distribution, while the KL
penalty is computed with the full one: the estimate is then biased and can even go negative.

Shapes: B = number of prompts, P = longest prompt, R = response length (<= max_new_tokens),
V = vocabulary.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from ..core.tensors import left_pad, position_ids_from_mask
from ..data.prompts import LengthSampler
from .kv_cache import DecoderWeights, KVCache, append_columns, compute_dtype
from .logprobs import scale_logits
from .packed import packable

MaxNewTokens = Union[int, Callable[[], int]]


# ----------------------------------------------------------------------------------------------
# Settings and output
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationOutput:
    """What `generate` returns. Queries are left-padded, responses right-padded."""

    query_ids: torch.Tensor
    """``[B, P]`` prompt tokens, left-padded with the pad id."""
    query_mask: torch.Tensor
    """``[B, P]`` 1 on real prompt tokens, 0 on padding."""
    response_ids: torch.Tensor
    """``[B, R]`` generated tokens only (never the prompt); pad id after a row's EOS."""
    response_mask: torch.Tensor
    """``[B, R]`` 1 on generated tokens up to and including the first EOS, 0 after."""
    texts: list[str]
    """Decoded responses, without padding and without the EOS."""
    prompts: list[str]
    """Decoded prompts, without padding."""
    max_new_tokens: int
    """The length limit used for this call (drawn once if `max_new_tokens` was a callable)."""
    logprobs: torch.Tensor | None = None
    """``[B, R]`` float32 log-prob of each sampled token under the distribution it was sampled
    from (after temperature, top-k, top-p); 0 where masked. Only with ``return_logprobs=True``."""

    @property
    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` of ``[query | response]``, ``[B, P + R]``: the input of reward and value models."""
        ids = torch.cat([self.query_ids, self.response_ids], dim=1)
        mask = torch.cat([self.query_mask, self.response_mask], dim=1)
        return ids, mask


# ----------------------------------------------------------------------------------------------
# Checks and prompt preparation
# ----------------------------------------------------------------------------------------------


def check_sampling_settings(max_new_tokens, temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError with a hint for settings that cannot sample anything sensible."""
    if not callable(max_new_tokens):
        check_max_new_tokens(max_new_tokens)
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}: the logits are divided by it "
                         "(inf would sample uniform noise). Use 1.0 for the model's own distribution; for greedy "
                         "decoding use top_k=1.")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k}.")
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1.0 = off), got {top_p!r}.")


def check_max_new_tokens(value) -> int:
    """The limit as an int; ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1 (or a callable returning one), got {value!r}.")
    return int(value)


def _token_id(value, prompt: int, position: int) -> int:
    """`value` as an int token id; ValueError for anything that is not a whole number (1.7, "a", None, True)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
            and float(value).is_integer():
        return int(value)  # 2.0 is token 2; 1.7 is no token at all
    raise ValueError(f"prompt {prompt}, position {position}: token id {value!r} is not an integer. Token ids are "
                     "whole numbers from the tokenizer (tokenizer(text)['input_ids']); pass strings to have them "
                     "encoded, and never round ids.")


def encode_prompts(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Turn strings / id lists / 1-D tensors into lists of token ids; reject empty prompts and non-integer ids.

    A 2-D tensor is read as a batch of unpadded rows of equal length. Float ids are accepted only when whole
    (2.0 -> 2); 1.7 raises ValueError instead of being truncated.
    """
    if isinstance(prompts, str) or (isinstance(prompts, torch.Tensor) and prompts.dim() != 2):
        raise ValueError("prompts must be a list of prompts (strings, id lists or 1-D tensors); "
                         "wrap a single prompt in a list: [prompt].")
    encoded = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        elif isinstance(prompt, torch.Tensor):
            if prompt.dim() != 1:
                raise ValueError(f"prompt {i} is a tensor of shape {tuple(prompt.shape)}; expected 1-D token ids.")
            ids = [_token_id(t, i, j) for j, t in enumerate(prompt.tolist())]
        elif isinstance(prompt, (bytes, dict)) or not hasattr(prompt, "__iter__"):
            raise ValueError(f"prompt {i} is a {type(prompt).__name__}; a prompt is a string, a list of token ids or "
                             "a 1-D tensor.")
        else:
            ids = [_token_id(t, i, j) for j, t in enumerate(prompt)]
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty ({prompt!r}): every prompt needs at least one token "
                             "(drop empty prompts, or start them with the EOS/BOS token).")
        encoded.append(ids)
    if not encoded:
        raise ValueError("prompts is empty: pass at least one prompt.")
    return encoded


def context_length(model) -> int | None:
    """The model's maximum sequence length, if its config says (GPT-2: ``n_positions``)."""
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


# ----------------------------------------------------------------------------------------------
# Turning logits into a sampling distribution
# ----------------------------------------------------------------------------------------------


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set the logits of tokens outside the top-k / top-p set to -inf.

    Args:
        logits: ``[B, V]`` (already divided by the temperature).
    Returns:
        ``[B, V]``; at least one token per row stays finite.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p: this keeps the
        # smallest prefix whose mass is >= top_p, and always the most likely token.
        mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_above >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# ----------------------------------------------------------------------------------------------
# The sampling loop
# ----------------------------------------------------------------------------------------------


def _sample_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs [B, V]``: the first index whose cumulative probability exceeds u * total,
    u ~ U[0, 1) (one uniform per row, where the generator lives). Tokens of probability 0 are never chosen
    (their cumulative sum equals the previous one). Returns ``[B, 1]``."""
    where = generator.device if generator is not None else probs.device
    cdf = probs.to(where).cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=where, dtype=cdf.dtype)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)


def _transformers_steps(model, use_cache: bool, fast: bool):
    """``next_logits(ids, mask, positions) -> [B, V]`` through the model's own forward (and its KV cache)."""
    past = None

    def next_logits(ids, mask, positions):
        nonlocal past
        if use_cache and past is not None:
            # Only the newest token is new to the model; the cache holds the keys/values of the
            # rest. The attention mask still covers the whole sequence (padding included).
            out = model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=positions[:, -1:],
                        past_key_values=past, use_cache=True)
        else:
            keep = {"logits_to_keep": 1} if fast else {}
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=use_cache, **keep)
        past = out.past_key_values if use_cache else None
        return out.logits[:, -1, :]

    return next_logits


def _preallocated_steps(model, rows: int, columns: int, device):
    """``next_logits`` for a `packable` GPT-2 with a cache of `columns` columns allocated once
    (`rlhf_helpers.policy.kv_cache`); the first call feeds the prompt, the later ones the newest token."""
    weights = DecoderWeights(model, compute_dtype(model, device))
    cache = KVCache(model.config, rows, columns, torch.float32, device)  # attention runs in float32

    def next_logits(ids, mask, positions):
        if cache.filled == 0:
            return append_columns(weights, cache, ids, positions, mask.bool())
        return append_columns(weights, cache, ids[:, -1:], positions[:, -1:], mask[:, -1:].bool())

    return next_logits


@torch.no_grad()
def _sample_batch(model, query_ids, query_mask, n_new, temperature, top_k, top_p, eos_id, pad_id,
                  generator, use_cache, fast=False):
    """Sample up to `n_new` tokens for one left-padded batch. Returns response ids, mask, log-probs.

    `fast`: for a `packable` GPT-2, the preallocated cache of `rlhf_helpers.policy.kv_cache` (other models: the
    LM head only at the last position, ``logits_to_keep=1``); and inverse-CDF sampling (`_sample_inverse_cdf`)
    instead of ``torch.multinomial``, which draws one exponential variate per vocabulary entry. The same
    distribution, another random stream.
    """
    device = query_ids.device
    batch = query_ids.shape[0]
    ids, mask = query_ids, query_mask
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    if fast and use_cache and packable(model):
        next_logits = _preallocated_steps(model, batch, query_ids.shape[1] + n_new, device)
    else:
        next_logits = _transformers_steps(model, use_cache, fast)
    new_tokens, new_masks, new_logprobs = [], [], []
    for _ in range(n_new):
        positions = position_ids_from_mask(mask)
        logits = scale_logits(next_logits(ids, mask, positions), temperature)
        logits = filter_logits(logits, top_k, top_p)
        log_probs = F.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        if fast:
            token = _sample_inverse_cdf(probs, generator).to(device)
        # Sample where the generator lives, so a CPU generator also drives a GPU model.
        elif generator is not None and probs.device != generator.device:
            token = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(device)
        else:
            token = torch.multinomial(probs, 1, generator=generator)
        token = token.squeeze(-1)

        alive = ~finished
        token = torch.where(alive, token, torch.full_like(token, pad_id))
        new_tokens.append(token)
        new_masks.append(alive.long())
        new_logprobs.append(torch.where(alive, log_probs.gather(-1, token.unsqueeze(-1)).squeeze(-1), 0.0))
        if eos_id is not None:
            finished = finished | (alive & (token == eos_id))

        ids = torch.cat([ids, token.unsqueeze(-1)], dim=1)
        # Finished rows append masked pad tokens; their outputs are thrown away.
        mask = torch.cat([mask, alive.long().unsqueeze(-1)], dim=1)
        if bool(finished.all()):
            break
    return torch.stack(new_tokens, 1), torch.stack(new_masks, 1), torch.stack(new_logprobs, 1)


def _check_rows_fit(model, rows: list[list[int]], n_new: int) -> None:
    """ValueError unless every prompt plus `n_new` tokens fits the model's context and every id is in its vocabulary."""
    longest = max(len(r) for r in rows)
    limit = context_length(model)
    if limit is not None and longest + n_new > limit:
        raise ValueError(
            f"The longest prompt ({longest} tokens) + max_new_tokens ({n_new}) = {longest + n_new} exceeds the "
            f"model's context of {limit} tokens. Shorten the prompts or lower max_new_tokens."
        )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None:
        bad = [t for r in rows for t in r if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"Prompt token id {bad[0]} is outside the model's vocabulary [0, {vocab}): "
                             "was the prompt encoded with another tokenizer?")


def _decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor, eos_id: int | None) -> list[str]:
    """The text of each ``[B, R]`` response: its unmasked tokens, without the final EOS (`eos_id`; None: keep all)."""
    texts = []
    for ids, mask in zip(response_ids.tolist(), response_mask.tolist()):
        kept = [t for t, m in zip(ids, mask) if m]
        if eos_id is not None and kept and kept[-1] == eos_id:
            kept = kept[:-1]
        texts.append(tokenizer.decode(kept))
    return texts


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence,
    max_new_tokens: MaxNewTokens = 16,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_at_eos: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
    return_logprobs: bool = False,
    fast: bool = False,
) -> GenerationOutput:
    """Sample a response for each prompt.

    Args:
        model: a ``GPT2LMHeadModel`` (or a module with the same forward: ``input_ids``,
            ``attention_mask``, ``position_ids``, ``past_key_values``, ``use_cache`` -> ``.logits``,
            ``.past_key_values``). Used in eval mode without gradients; its mode is restored after.
        tokenizer: gives the pad id (padding) and EOS id (stopping), and decodes the texts.
        prompts: list of B prompts: strings, lists of token ids, or 1-D tensors (mixed is fine).
        max_new_tokens: an int, or a callable returning one (e.g. ``LengthSampler(4, 16)``), drawn
            once per call: every row of the call gets the same limit (`sample_responses` draws one per row).
        temperature: divide the logits by this (> 0) before the softmax; recompute log-probs with the same.
        top_k: keep only the k most likely tokens; 0 = off (the PPO recipe: sample from everything).
        top_p: keep the smallest set of tokens whose probability reaches top_p; 1.0 = off (the PPO recipe).
        stop_at_eos: finish a row at its first EOS (pad + mask after it); stop when all finished.
        generator: a ``torch.Generator`` for reproducible sampling (continues its stream).
        seed: shortcut for a fresh generator seeded with this; give `generator` or `seed`, not both.
            With neither, torch's global random state is used.
        use_cache: reuse past keys/values (fast); False re-runs the whole sequence every step.
        batch_size: generate in chunks of this many prompts (memory); None = all at once.
        return_logprobs: also return the log-prob of each sampled token.
        fast: last-position logits only and inverse-CDF sampling (`_sample_batch`): the same distribution, a
            different random stream than ``torch.multinomial`` (PPO's ``fast_path``).
    Returns:
        `GenerationOutput` with ``query_ids/query_mask [B, P]``, ``response_ids/response_mask
        [B, R]`` (R <= max_new_tokens), ``texts``, ``prompts`` and optionally ``logprobs [B, R]``.
    """
    check_sampling_settings(max_new_tokens, temperature, top_k, top_p)
    if generator is not None and seed is not None:
        raise ValueError("Pass either generator= or seed=, not both.")
    if batch_size is not None and (not isinstance(batch_size, numbers.Integral) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}.")
    n_new = check_max_new_tokens(max_new_tokens() if callable(max_new_tokens) else max_new_tokens)

    eos_id = tokenizer.eos_token_id if stop_at_eos else None
    if stop_at_eos and eos_id is None:
        raise ValueError("stop_at_eos=True but the tokenizer has no eos_token_id; set one or pass stop_at_eos=False.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token id; set tokenizer.pad_token.")

    rows = encode_prompts(tokenizer, prompts)
    _check_rows_fit(model, rows, n_new)

    device = next(model.parameters()).device
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    query_ids, query_mask = left_pad(rows, pad_id)
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)

    # Remember every sub-module's mode: model.train(True) afterwards would also switch on parts
    # the caller had deliberately left in eval mode (e.g. a frozen model inside a wrapper).
    modes = [(module, module.training) for module in model.modules()]
    model.eval()  # dropout off: sampling and the later log-prob passes must see the same model
    try:
        chunks = []
        step = batch_size or len(rows)
        for start in range(0, len(rows), step):
            # Each chunk gets its own (narrower) left padding; re-padded to the common width below.
            width = max(len(r) for r in rows[start : start + step])
            chunk = slice(start, start + step)
            chunks.append(_sample_batch(
                model, query_ids[chunk, -width:], query_mask[chunk, -width:], n_new, temperature,
                top_k, top_p, eos_id, pad_id, generator, use_cache, fast))
    finally:
        for module, training in modes:
            module.training = training

    n_response = max(c[0].shape[1] for c in chunks)

    def right_pad(t, value):
        return F.pad(t, (0, n_response - t.shape[1]), value=value)

    response_ids = torch.cat([right_pad(c[0], pad_id) for c in chunks])
    response_mask = torch.cat([right_pad(c[1], 0) for c in chunks])
    logprobs = torch.cat([right_pad(c[2], 0.0) for c in chunks]) if return_logprobs else None
    texts = _decode_responses(tokenizer, response_ids, response_mask, eos_id)
    prompt_texts = [tokenizer.decode(r) for r in rows]
    return GenerationOutput(query_ids, query_mask, response_ids, response_mask, texts, prompt_texts, n_new, logprobs)


# ----------------------------------------------------------------------------------------------
# Sampling the way PPO samples: one length per response
# ----------------------------------------------------------------------------------------------


def truncate_responses(response_ids, response_mask, lengths: torch.Tensor, pad_id: int):
    """Cut row i after ``lengths[i]`` tokens (pad + mask the rest): per-response lengths.

    Sampling 16 tokens and keeping the first L is the same as sampling L tokens, so one batched
    generate call serves every length of ``LengthSampler(4, 16)``.
    """
    positions = torch.arange(response_ids.shape[1], device=response_ids.device)
    keep = positions.unsqueeze(0) < lengths.to(response_ids.device).unsqueeze(1)
    mask = response_mask * keep.to(response_mask.dtype)
    ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_id))
    width = int(mask.sum(1).max().item())
    return ids[:, :width], mask[:, :width]


@torch.no_grad()
def sample_responses(model, tokenizer, prompts, min_tokens: int = 4, max_tokens: int = 16, *, length_seed: int,
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, stop_at_eos: bool = False,
                     generator: torch.Generator | None = None, seed: int | None = None,
                     batch_size: int | None = None, fast: bool = False) -> GenerationOutput:
    """One response per prompt, each with its own length drawn from ``LengthSampler(min_tokens, max_tokens)``.

    This is how PPO samples its rollouts, how the reward model's normalisation samples the reference policy,
    and how the evaluation samples every policy: one place, so all three see the same distribution.

    Args:
        length_seed: seed of the per-response lengths.
        generator / seed: the sampling randomness (as in `generate`).
        stop_at_eos: also end a response at EOS (PPO's default: False, every response has its drawn length).
    Returns:
        `GenerationOutput` whose responses are cut to their lengths; ``texts`` are the decoded responses
        (special tokens skipped).
    """
    out = generate(model, tokenizer, prompts, max_new_tokens=max_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, stop_at_eos=stop_at_eos, generator=generator, seed=seed, batch_size=batch_size,
                   fast=fast)
    sampler = LengthSampler(min_tokens, max_tokens, seed=length_seed)
    lengths = torch.tensor([sampler() for _ in range(len(out.prompts))])
    response_ids, response_mask = truncate_responses(out.response_ids, out.response_mask, lengths,
                                                     tokenizer.pad_token_id)
    if int(response_mask.sum(1).min()) == 0:
        raise RuntimeError("A response is empty (EOS as the first token). Use responses of >= 1 token.")
    texts = tokenizer.batch_decode([ids[m.bool()] for ids, m in zip(response_ids, response_mask)],
                                   skip_special_tokens=True)
    return replace(out, response_ids=response_ids, response_mask=response_mask, texts=texts)
