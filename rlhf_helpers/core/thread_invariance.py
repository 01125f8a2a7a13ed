"""The same bits at any CPU thread count: the two kernels whose rounding follows it, computed as the full count would.

`core.threads` gives a run fewer threads when other processes are busy. That must not change the result: a seed
should train the same policy on an idle and on a busy machine. Checked op by op (tests/test_thread_invariance.py),
one forward and backward of the course's GPT-2 at 1 and at 2 threads agree bit for bit everywhere — matmuls,
embeddings, scaled-dot-product attention, the log-softmax over the vocabulary, the optimiser — except in two
backward kernels:

* **LayerNorm** (gain and bias gradients). PyTorch's CPU kernel splits the rows (batch x positions) into one
  contiguous block per thread, sums each block's ``dY * x_hat`` (gain) and ``dY`` (bias) row after row into its
  own buffer, and then adds the buffers in order. A float32 sum taken in two blocks rounds differently from the
  same sum taken in one. The remedy, `layer_norm`: with fewer threads than the `reference` count (the cores the
  run would use idle), the backward is computed block by block as that many threads would split the rows
  (``ceil(rows / reference)`` rows each), one PyTorch call per block, and the blocks' sums are added in the same
  order. A block computed alone is exactly what one thread of the full team computes.
* **the softmax of the fast path's attention** (`rlhf_helpers.policy.packed.masked_attention`; keys not a multiple
  of the vector width). Measured, not explained: a row that an OpenMP worker thread computes rounds differently
  from the same row computed by the calling thread, alone or after others. That cannot be reproduced from
  outside the kernel, so `softmax_last_dim` runs the backward at the reference count for its one small call.

150 steps of sampling grow such last bits into a different run. With all threads free nothing changes at all
(PyTorch's own kernels run), so an idle run's numbers are the same with or without this module.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_aten = torch.ops.aten
_original_layer_norm = F.layer_norm
_lock = threading.Lock()
_reference_threads = 0  # 0: not installed


def reference_threads() -> int:
    """The thread count whose LayerNorm sums every run reproduces (0: none, PyTorch's own kernel always)."""
    return _reference_threads


def numerics_threads() -> int:
    """The thread count whose numbers this process computes: its own, or the reference count it reproduces.

    What a run card records as its machine's threads: two runs compare bit for bit when this (and the
    precision) agree, whatever their actual thread counts were."""
    return max(torch.get_num_threads(), _reference_threads)


def install(reference: int) -> None:
    """From now on, LayerNorm's backward on the CPU sums as `reference` threads would (the largest count asked)."""
    global _reference_threads
    with _lock:
        if reference > _reference_threads:
            _reference_threads = reference
        if F.layer_norm is not layer_norm:
            F.layer_norm = layer_norm


def uninstall() -> None:
    """PyTorch's own `layer_norm` again (tests)."""
    global _reference_threads
    with _lock:
        _reference_threads = 0
        F.layer_norm = _original_layer_norm


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """`torch.nn.functional.layer_norm`, with a backward that does not depend on the thread count (see module)."""
    partitions = _reference_threads
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias))
    if (partitions <= 1 or not needs_grad or input.device.type != "cpu"
            or torch.get_num_threads() >= partitions or torch.overrides.has_torch_function((input,))):
        return _original_layer_norm(input, normalized_shape, weight, bias, eps)
    # the CPU autocast leaves layer_norm alone (no cast either way), so calling the kernel directly is the same
    return _LayerNormSummedInBlocks.apply(input, weight, bias, list(normalized_shape), eps, partitions)


class _LayerNormSummedInBlocks(torch.autograd.Function):
    """LayerNorm whose gain and bias gradients are summed in `partitions` row blocks, in order."""

    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape, eps, partitions):
        # the same kernel as F.layer_norm's forward (each row on its own: no sum across rows, so no thread effect)
        y, mean, rstd = _aten.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.normalized_shape, ctx.partitions = normalized_shape, partitions
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        shape, features = ctx.normalized_shape, 1
        for size in shape:
            features *= size
        rows = x.numel() // features
        want = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                bias is not None and ctx.needs_input_grad[2]]
        x2, g2 = x.reshape(rows, *shape), grad_y.reshape(rows, *shape)
        mean2, rstd2 = mean.reshape(rows, 1), rstd.reshape(rows, 1)
        blocks = min(ctx.partitions, rows)
        size = -(-rows // blocks)  # at::parallel_for's split: ceil(rows / threads) rows per thread
        grads_x, grad_w, grad_b = [], None, None
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # one block = one thread's buffer: summed by a single thread, row after row
        try:
            for start in range(0, rows, size):
                block = slice(start, min(rows, start + size))
                dx, dw, db = _aten.native_layer_norm_backward(
                    g2[block], x2[block], shape, mean2[block], rstd2[block], weight, bias, want)
                grads_x.append(dx)
                # the kernel adds the buffers to a zero, in thread order: 0 + b0 + b1 + ... (0 + b0 == b0 exactly);
                # a gradient not wanted is None in every block
                grad_w = dw if grad_w is None else grad_w + dw
                grad_b = db if grad_b is None else grad_b + db
        finally:
            torch.set_num_threads(before)
        grad_x = torch.cat(grads_x).reshape(x.shape) if want[0] else None
        return grad_x, grad_w, grad_b, None, None, None


def softmax_last_dim(scores: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(scores, dim=-1)`` whose backward gives the same bits at any thread count: with fewer threads
    than `reference_threads`, the backward runs with that many threads for its one call (see module; it is small:
    ``B * H * T * T`` numbers)."""
    if (_reference_threads <= 1 or scores.device.type != "cpu" or torch.get_num_threads() >= _reference_threads
            or not (torch.is_grad_enabled() and scores.requires_grad)):
        return torch.softmax(scores, dim=-1)
    return _SoftmaxBackwardAtReferenceThreads.apply(scores)


class _SoftmaxBackwardAtReferenceThreads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores):
        probabilities = torch.softmax(scores, dim=-1)  # row by row: no thread effect
        ctx.save_for_backward(probabilities)
        ctx.input_dtype = scores.dtype
        return probabilities

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (probabilities,) = ctx.saved_tensors
        before = torch.get_num_threads()
        torch.set_num_threads(max(before, _reference_threads))
        try:
            return torch._softmax_backward_data(grad, probabilities, -1, ctx.input_dtype)
        finally:
            torch.set_num_threads(before)
