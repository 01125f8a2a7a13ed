"""Mixed precision: one place that decides bf16 / fp16 / float32 for every stage.

Weights and optimiser state stay float32; matrix multiplies run in bf16 under autocast where the processor
has fast bf16 (AVX512-BF16 / AMX on CPUs, Ampere and later GPUs). On 2 CPU cores that halves the time of a
forward + backward pass of the tiny model. Log-softmax and losses are computed in float32 by the callers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp16", "no")


def resolve_mixed_precision(setting: str) -> str:
    """Turn "auto" into what `accelerate launch --mixed_precision` asked for, else "bf16" where bf16 matrix
    multiplies are fast, else "no". Other settings are returned as they are (after a check)."""
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {setting!r}.")
    if setting != "auto":
        return setting
    launched_with = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch`
    if launched_with in ("bf16", "fp16", "no"):
        return launched_with
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpu_flags = ""
    return "bf16" if ("avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags) else "no"


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved setting ("bf16" -> bfloat16, "fp16" -> float16, "no" -> None)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for `device` in `dtype`; a no-op context when `dtype` is None."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def plain_copy(model):
    """A float32 copy of `model`'s weights in a fresh module of its class, on its device.

    Why: under mixed precision, accelerate (which `transformers.Trainer` uses) patches the forward of the model it
    prepared with its own autocast, which an outer ``torch.autocast(enabled=False)`` does not undo; every
    evaluation of the course runs in float32 (`HeldOutEvaluator`), so it gets a plain copy."""
    unwrapped = getattr(model, "module", model)
    copy = type(unwrapped)(unwrapped.config).to(next(unwrapped.parameters()).device)
    copy.load_state_dict(unwrapped.state_dict())
    return copy.eval()
