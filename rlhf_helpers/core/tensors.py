"""Padding and masks: the small tensor utilities every stage shares.

Conventions of the whole course (B = batch, L = length):

* a **mask** is ``[B, L]`` with 1 on real tokens and 0 on padding;
* **prompts are left-padded** (every row's next token goes in the same column, so generation can append to
  all rows at once) and **responses / reward-model inputs are right-padded**;
* GPT-2's position embeddings are learned and absolute, so a padded row gets position ids that count real
  tokens only (`position_ids_from_mask`); otherwise the same text would get other logits depending on how
  much padding its batch needed (Huang et al. 2023, "The N Implementation Details of RLHF with PPO",
  section "General implementation details": padding and position ids).
"""

from __future__ import annotations

import torch


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L]`` ids and mask of token-id lists, each row right-aligned (padding on the left)."""
    return _pad(rows, pad_id, left=True)


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L]`` ids and mask of token-id lists, each row left-aligned (padding on the right)."""
    return _pad(rows, pad_id, left=False)


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if len(rows) == 0:
        raise ValueError("Nothing to pad: the list of token-id rows is empty.")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[b, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[b, span] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens: ``cumsum(mask) - 1``, clamped at 0.

    Args:
        attention_mask: ``[B, L]``, 1 for real tokens, 0 for padding (left, right or both).
    Returns:
        ``[B, L]`` long tensor. The first real token of every row gets position 0, the next 1, ...;
        padding gets a harmless copy of a neighbouring position (its output is never used).

    Example: mask ``[0, 0, 1, 1, 1]`` -> positions ``[0, 0, 0, 1, 2]``.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, length], got shape {tuple(attention_mask.shape)}")
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.clamp(min=0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index ``[B]`` of the last real token of each row of a ``[B, L]`` mask (any padding side).

    The reward model reads its score there, and PPO puts the score on that token of the response.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [batch, length], got shape {tuple(mask.shape)}")
    m = mask.bool() if mask.dtype != torch.bool else mask
    empty = ~m.any(dim=1)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"Rows {rows} of the mask have no real token; every text or response needs at least one "
                         "token to carry its score. Drop empty responses (or keep the EOS token in the mask).")
    # argmax returns the first maximum; on the reversed row that is the last 1 of the original row.
    return m.shape[1] - 1 - m.flip(dims=[1]).to(torch.uint8).argmax(dim=1)


def as_bool_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Check that ``mask`` is a 0/1 tensor with the shape of ``like`` and return it as bools."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of 0/1 values, got {type(mask).__name__}.")
    if mask.shape != like.shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the values have shape {tuple(like.shape)}; "
            "build the mask for the same [batch, response tokens] layout as the values."
        )
    if mask.dtype == torch.bool:
        return mask
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 and 1 (1 = real response token, 0 = padding).")
    return mask != 0


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise a clear error unless all the named tensors have the same shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"These tensors must have the same [batch, tokens] shape: {listed}.")
