"""Mixed precision: one place that decides bf16 / fp16 / float32 for every stage.

Weights and optimiser state stay float32 (DDP; under DeepSpeed the engine keeps a float32 master copy of its
bf16 / fp16 weights); matrix multiplies run in the half type under autocast. Log-softmax and losses are computed in
float32 by the callers. What ``mixed_precision="auto"`` picks (`resolve_mixed_precision`):

=====================================================  ==========  ==============================================
where                                                  picks       why
=====================================================  ==========  ==============================================
``accelerate launch --mixed_precision X`` / a config   X           the launcher's choice (``ACCELERATE_MIXED_PRECISION``)
CUDA GPU with native bf16 (Ampere and later)           ``bf16``    float32's range: no loss scaling needed
CUDA GPU without it (V100, T4, ...)                    ``fp16``    tensor cores; a loss scaler keeps the gradients
                                                                   from underflowing (accelerate's GradScaler;
                                                                   DeepSpeed's dynamic loss scale)
CPU with AVX512-BF16 or AMX                            ``bf16``    halves a forward + backward of the tiny model
                                                                   on 2 cores
other CPUs                                             ``no``      float32: no fast half type, and no loss scaler
=====================================================  ==========  ==============================================

"Native" bf16 on a GPU: ``torch.cuda.is_bf16_supported(including_emulation=False)``. By default torch also says
yes where it can only *emulate* bf16 (a V100, a T4), which would be slower than float32. The CPU counts as the
device when ``ACCELERATE_USE_CPU`` is set (accelerate's ``--cpu``), GPU or not.

Under fp16, a step whose (scaled) gradients overflow is normal: the scaler drops that step and lowers its scale.
The loops' NaN check looks at the loss (float32), never at the scaled gradients, so such a step is skipped, not
an error (`rlhf_helpers.core.distributed.optimizer_step`). fp16 without a scaler is refused (`refuse_unscaled_fp16`):
accelerate has none on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .distributed import is_deepspeed, launched_on_cpu, launched_with_deepspeed
from .errors import BadValueError

PRECISIONS = ("auto", "bf16", "fp16", "no")


def resolve_mixed_precision(setting: str) -> str:
    """Turn "auto" into what `accelerate launch --mixed_precision` asked for, else the device's best (the table in
    the module's docstring): "bf16" where bf16 is native, "fp16" on a CUDA GPU without it, "no" on a CPU without
    fast bf16. Other settings are returned as they are (after a check)."""
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {setting!r}.")
    if setting != "auto":
        return setting
    launched_with = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch`
    if launched_with in ("bf16", "fp16", "no"):
        return launched_with
    if torch.cuda.is_available() and not launched_on_cpu():
        return "bf16" if cuda_has_native_bf16() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "no"


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA GPU computes in bf16 natively (compute capability 8.0+: A100, H100, RTX 30xx...),
    not by emulation."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument (< 2.3) did not count emulation
        return torch.cuda.is_bf16_supported()


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), read from ``/proc/cpuinfo`` (Linux; elsewhere
    no)."""
    try:
        cpu_flags = Path(cpuinfo).read_text()
    except OSError:
        cpu_flags = ""
    return "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags


def refuse_unscaled_fp16(mixed_precision: str) -> None:
    """Refuse fp16 where nothing would scale the loss, before accelerate starts: accelerate keeps its GradScaler for
    accelerators (CUDA, XPU, MPS...); on a CPU it would quietly train in float32 under an "fp16" run card.
    DeepSpeed scales the loss itself."""
    if mixed_precision != "fp16" or launched_with_deepspeed():
        return
    if launched_on_cpu() or not _has_accelerator():
        raise BadValueError("mixed_precision=fp16 needs a loss scaler, which accelerate has only on a GPU (this "
                            "process runs on the CPU): use bf16 (where the CPU has bf16 instructions), no, or auto.")


def _has_accelerator() -> bool:
    current = getattr(getattr(torch, "accelerator", None), "current_accelerator", None)
    return current() is not None if current is not None else torch.cuda.is_available()


def deepspeed_precision_settings(mixed_precision: str) -> dict:
    """The DeepSpeed config entries for a resolved precision, as the course's loops need them.

    * "bf16": DeepSpeed's ``torch_autocast`` — weights (and their gradients) stay float32, the engine's forward
      runs under ``torch.autocast(bfloat16)`` — the arithmetic of the DDP path. DeepSpeed's own ``bf16`` mode would
      cast the weights to bf16, which the PPO fast path's float32 attention and the float32 reference do not
      expect (``mat1 and mat2 must have the same dtype``), and which would save bf16 models.
      ``lower_precision_safe_modules: []``: every gradient is reduced in float32, as under DDP.
    * "fp16": DeepSpeed's ``fp16`` mode — fp16 weights, float32 master weights in the ZeRO optimiser and DeepSpeed's
      dynamic loss scaling (``loss_scale: 0``; its ``torch_autocast`` has a loss scaler only without ZeRO).
    * "no": float32.
    """
    if mixed_precision == "bf16":
        return {"bf16": {"enabled": False}, "fp16": {"enabled": False},
                "torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}}
    if mixed_precision == "fp16":
        return {"bf16": {"enabled": False}, "fp16": {"enabled": True, "loss_scale": 0}}
    return {"bf16": {"enabled": False}, "fp16": {"enabled": False}}


def configure_deepspeed_precision(accelerator, mixed_precision: str) -> None:
    """Under DeepSpeed: its precision entries (`deepspeed_precision_settings`, before ``prepare``), and the loops'
    autocast turned on.

    accelerate leaves mixed precision to DeepSpeed, so ``accelerator.autocast()`` is a no-op there, and the engine
    autocasts inside its own forward only; but the loops also run the unwrapped policy (sampling) and the frozen
    reference under ``accelerator.autocast()``, and PPO's ratio compares those passes with the engine's: they must
    compute in the same precision. So the accelerator's autocast becomes the course's `autocast` in that precision.
    """
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    for key, value in deepspeed_precision_settings(mixed_precision).items():
        config[key] = {**config.get(key, {}), **value} if key == "fp16" else value
    dtype, device = autocast_dtype(mixed_precision), accelerator.device
    accelerator.autocast = lambda autocast_handler=None: autocast(device, dtype)


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
