"""Scaling out: how one optimiser step's batch is split over processes and micro-batches, and what is agreed.

A training step works on a **global batch** (a config field: ``batch_size``, PPO's ``mini_batch_size``). It is
cut into ``S`` equal **shards**; each of the ``N`` processes (``accelerate launch --num_processes N``) owns
``A = S / N`` consecutive shards and runs them one after the other (gradient accumulation), and the gradients of
all shards are averaged (accelerate's DDP all-reduce across processes, division by ``A`` within one). So

    gradient = (1 / S) * sum over shards s of  grad(mean loss of shard s)

whatever ``N``: a run on 2 processes computes exactly what a run on 1 process with 2 accumulation steps
computes (tests/test_scale_out.py checks it with two gloo processes on the CPU). When every row weighs the
same in the loss (packed SFT blocks, reward pairs), it is also the 1-process, no-accumulation gradient.

``S`` follows from the config: ``S = global batch / micro_batch_size`` (rows per forward pass), or ``S = N``
when ``micro_batch_size`` is None. Randomness that belongs to a shard (PPO's sampling) is seeded by
(seed, step, shard), so it does not depend on which process runs the shard.

Under DeepSpeed ZeRO-1/2 the same arithmetic runs in DeepSpeed's engine, which the loops drive themselves (one
``engine.step()`` per optimiser step: `backward`, `optimizer_step`), its batch settings filled from the config
(`configure_deepspeed`); FSDP and ZeRO-3, which shard the weights, are refused (`refuse_sharded_parameters`).

What must be *the same* on every process is decided once and shared (`agree`): the time budget is read off the
main process's clock, a stop signal or a non-finite loss on any process stops all of them after the same
step, and logged statistics are averaged over processes. Only the main process writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

from .errors import BadValueError, CourseError


def is_main_process() -> bool:
    """False on the non-main processes of ``accelerate launch`` (read from the launcher's ``RANK``; no process
    group is started). Files, prints and evaluations that happen once belong to the main process."""
    return int(os.environ.get("RANK", "0")) == 0


def process_state():
    """accelerate's `PartialState` (the process group), started the way `Accelerator` starts it.

    ``PartialState()`` alone ignores ``ACCELERATE_USE_CPU`` (the CPU launch recipe) and would see one process;
    `Accelerator` reads it, so here it is passed on explicitly; and so is `process_group_kwargs`.
    """
    from accelerate import PartialState

    return PartialState(cpu=launched_on_cpu(), **process_group_kwargs())


def launched_on_cpu() -> bool:
    """Whether accelerate was told to run on the CPU (``accelerate launch --cpu``: ``ACCELERATE_USE_CPU``), GPU or
    not."""
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def launched_with_deepspeed() -> bool:
    """Whether ``accelerate launch`` runs the processes under DeepSpeed (``ACCELERATE_USE_DEEPSPEED``)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


def process_group_kwargs() -> dict:
    """What accelerate must be told to start the process group: ``backend="gloo"`` for DeepSpeed without a GPU.

    accelerate picks the backend from the device (nccl on CUDA...) and finds none on a CPU-only machine; it then
    lets DeepSpeed start the process group with its own choice (gloo for DeepSpeed's CPU accelerator, which
    ``DS_ACCELERATOR=cpu`` selects) but records "no backend" and so one process (accelerate 1.15,
    ``PartialState.__init__``: "No backend == no distributed training") — every process would believe it is
    process 0 of 1. Naming the backend makes it read the real rank and world size. Nothing otherwise.
    """
    if launched_with_deepspeed() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return {"backend": "gloo"}
    return {}


def accelerator_kwargs() -> dict:
    """`process_group_kwargs` as the ``kwargs_handlers`` an `Accelerator` takes."""
    from accelerate.utils import InitProcessGroupKwargs

    kwargs = process_group_kwargs()
    return {"kwargs_handlers": [InitProcessGroupKwargs(**kwargs)]} if kwargs else {}


def wait_for_everyone() -> None:
    """A barrier across the processes of ``accelerate launch`` (nothing on one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        process_state().wait_for_everyone()


class BatchSplitError(CourseError, ValueError):
    """A global batch that cannot be cut into equal shards for this number of processes."""


@dataclass(frozen=True)
class Shard:
    """One equal part of a step's global batch: part `index` of `count`."""

    index: int
    count: int

    def take(self, rows, what: str = "the batch"):
        """This shard's slice of a global batch (a list or tensor whose length `count` divides).

        >>> Shard(1, 2).take([10, 11, 12, 13])
        [12, 13]
        """
        size = len(rows) // self.count
        if size * self.count != len(rows):
            raise BatchSplitError(f"{what} ({len(rows)} rows) does not split into {self.count} equal micro-batches "
                                  "(the processes times the micro-batches of each): choose a multiple of "
                                  f"{self.count}, or another micro_batch_size / number of processes.")
        return rows[self.index * size : (self.index + 1) * size]


@dataclass(frozen=True)
class ShardPlan:
    """Which shards of every step this process runs: ``accumulation`` consecutive ones (`local_shards`)."""

    count: int
    """S: shards per step, over all processes."""
    num_processes: int
    process_index: int

    @property
    def accumulation(self) -> int:
        """A: shards (micro-batches) per process per optimiser step."""
        return self.count // self.num_processes

    def local_shards(self) -> list[Shard]:
        first = self.process_index * self.accumulation
        return [Shard(first + k, self.count) for k in range(self.accumulation)]


def plan_shards(global_rows: int, micro_batch_size: int | None, num_processes: int, process_index: int = 0,
                where: str = "batch_size", micro_flag: str = "micro_batch_size") -> ShardPlan:
    """Cut `global_rows` rows per step into equal shards of `micro_batch_size` rows, a whole number per process.

    Raises `BatchSplitError`, naming the fields and what would work, before any training starts.
    """
    if micro_batch_size is None:
        micro_batch_size, how = global_rows // max(num_processes, 1), "the batch per process"
    else:
        how = f"{micro_flag}={micro_batch_size}"
    if micro_batch_size < 1 or global_rows % micro_batch_size:
        raise BatchSplitError(
            f"{where}={global_rows} does not split into equal micro-batches of {how} on {num_processes} "
            f"process(es): choose {where} divisible by {num_processes} and {micro_flag} dividing {where} // "
            f"{num_processes}.")
    count = global_rows // micro_batch_size
    if count % num_processes:
        raise BatchSplitError(
            f"{where}={global_rows} in micro-batches of {micro_batch_size} gives {count} micro-batches, which "
            f"{num_processes} processes cannot share equally: choose {micro_flag} so that {where} / {micro_flag} "
            f"is a multiple of {num_processes}.")
    return ShardPlan(count, num_processes, process_index)


def shard_plan(accelerator, global_rows: int, micro_batch_size: int | None, where: str = "batch_size",
               micro_flag: str = "micro_batch_size") -> ShardPlan:
    """`plan_shards` for the processes of `accelerator`."""
    return plan_shards(global_rows, micro_batch_size, accelerator.num_processes, accelerator.process_index,
                       where, micro_flag)


def shard_seed(base: int, shard: Shard) -> int:
    """A seed for `shard`'s own randomness; shard 0 keeps `base` (one process: the seeds of a 1-shard run)."""
    return base + shard.index * 1_000_000_007


# ----------------------------------------------------------------------------------------------
# Agreeing across processes
# ----------------------------------------------------------------------------------------------


def agree(accelerator, *, seconds: float, stop: bool = False, bad: bool = False) -> tuple[float, bool, bool]:
    """One collective call per step: the main process's clock, and whether any process wants to stop / failed.

    Every process must call it at the same point of every step. Returns ``(seconds, stop, bad)`` identical on
    all processes: ``seconds`` from the main process (so a time budget ends every process after the same step),
    ``stop`` / ``bad`` true when true on any process.
    """
    if accelerator.num_processes == 1:
        return seconds, stop, bad
    flags = torch.tensor([seconds if accelerator.is_main_process else 0.0, float(stop), float(bad)],
                         dtype=torch.float64, device=accelerator.device)
    summed = accelerator.reduce(flags, reduction="sum")
    return float(summed[0].item()), bool(summed[1].item() > 0), bool(summed[2].item() > 0)


def mean_over_processes(accelerator, values: dict[str, float]) -> dict[str, float]:
    """The mean of each float over processes (the same keys on every process; a no-op on one process)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    tensor = accelerator.reduce(tensor, reduction="mean")
    return {k: float(v) for k, v in zip(keys, tensor.tolist())}


def sum_over_processes(accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over processes (a no-op on one process)."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor.clone(), reduction="sum")


# ----------------------------------------------------------------------------------------------
# One optimiser step over accumulated micro-batches: DDP (or one process), or DeepSpeed ZeRO-1/2
# ----------------------------------------------------------------------------------------------
#
# Both loops run a step the same way: for each of the process's micro-batches, a forward pass, the loss, then
# (before the *last* micro-batch's backward) one decision agreed by every process — go on, skip the step (PPO's
# ratio threshold), or stop (a non-finite loss); then the backward passes, then one optimiser step. The three
# functions below carry that out on whatever runs the processes:
#
# * DDP / one process: gradients stay local under ``no_sync`` until the last micro-batch, whose backward
#   all-reduces them; the loop's own clipping and ``optimizer.step()``. A skip leaves out the last backward (no
#   process runs it, so no all-reduce waits) and zeroes the gradients. Under fp16, accelerate's GradScaler scales
#   the loss, unscales before clipping, and skips the step itself when the gradients overflowed (``inf`` there is
#   normal: the scale was too high, and it is lowered) — the loops' NaN check looks at the loss, never at the
#   scaled gradients, so an overflow is a skipped step, not an error.
# * DeepSpeed (ZeRO-1/2): accelerate's ``accelerator.backward`` would call ``engine.step()`` after *every*
#   backward, so the loops drive the engine themselves, as DeepSpeed documents for manual accumulation
#   (``engine.set_gradient_accumulation_boundary``): every micro-batch's backward goes through
#   ``engine.backward`` (ZeRO-2 reduces and partitions gradients as they come), the last one marks the boundary,
#   and one ``engine.step()`` clips (``gradient_clipping``), steps and zeroes. ZeRO keeps the accumulated
#   gradients in its own partitioned buffers, which no public call empties; what empties them is the engine's
#   own overflow path (``step()`` finds non-finite gradients, drops them and leaves the weights and the optimiser
#   state alone). So a skip sends the last micro-batch's backward with a NaN loss: the step is dropped by
#   DeepSpeed's own code, and ``engine.was_step_applied()`` confirms it. Under fp16 that path would also lower
#   the loss scale; a skip of ours is no overflow, so the scaler's state is put back.


def is_deepspeed(accelerator) -> bool:
    """Whether `accelerator` runs the model in a DeepSpeed engine (stand-ins without ``distributed_type``: no)."""
    from accelerate.utils import DistributedType

    return getattr(accelerator, "distributed_type", None) == DistributedType.DEEPSPEED


def deepspeed_engine(accelerator):
    """The ``DeepSpeedEngine`` that `accelerator.prepare` built (the wrapped model)."""
    return accelerator.deepspeed_engine_wrapped.engine


def micro_batch(accelerator, model, last: bool):
    """The context of one micro-batch's forward and backward: gradients stay local (``no_sync``) until the last.

    Under DeepSpeed a null context: ZeRO-2 reduces every micro-batch's gradients into their partitions as they come
    (DeepSpeed's own ``no_sync`` refuses ZeRO-2), and the last backward is marked by `backward`."""
    if last or is_deepspeed(accelerator):
        return contextlib.nullcontext()
    return accelerator.no_sync(model)


def backward(accelerator, model, loss: torch.Tensor, count: int, *, last: bool, skip: bool = False) -> None:
    """The backward pass of one micro-batch's mean loss, one of `count` this process accumulates for a step.

    The gradient of the step is the mean over micro-batches (``loss / count``; DDP then averages over processes).
    `skip` (on the last micro-batch, the same on every process): the step will not be taken — DDP leaves this
    backward out; DeepSpeed runs it on a NaN loss so that the engine drops the step (see above).
    """
    if not is_deepspeed(accelerator):
        if not skip:
            accelerator.backward(loss / count)
        return
    engine = deepspeed_engine(accelerator)
    engine.set_gradient_accumulation_boundary(last)
    if skip:
        loss = loss * float("nan")
    # scale_wrt_gas=False: divided here, as under DDP, whatever gradient_accumulation_steps says
    engine.backward(loss / count, scale_wrt_gas=False)


def optimizer_step(accelerator, model, optimizer, max_grad_norm: float | None, *, skip: bool = False) -> bool:
    """Clip to `max_grad_norm` (0 / None: no clipping), step, zero the gradients. Returns whether the weights
    changed: False for a `skip` (agreed by every process before the last backward) and for an fp16 step whose
    gradients overflowed (dropped by the loss scaler, which lowers its scale).

    Under DeepSpeed the clipping is the engine's (``gradient_clipping``, filled from `max_grad_norm` by
    `configure_deepspeed`), and so is the overflow check.
    """
    if is_deepspeed(accelerator):
        return _deepspeed_step(deepspeed_engine(accelerator), skip)
    if skip:
        optimizer.zero_grad(set_to_none=True)
        return False
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)  # unscales first under fp16
    optimizer.step()  # under fp16: the GradScaler's step, which skips a step whose gradients are not finite
    applied = not getattr(optimizer, "step_was_skipped", False)  # accelerate's AcceleratedOptimizer says so
    optimizer.zero_grad(set_to_none=True)
    return applied


def _deepspeed_step(engine, skip: bool) -> bool:
    """``engine.step()`` at the boundary; for a `skip` (the last backward's loss was NaN) with the loss scaler's
    state kept and DeepSpeed's "OVERFLOW! Skipping step" notice silenced, since no overflow happened."""
    if not skip:
        engine.step()
        return engine.was_step_applied()
    scaler = getattr(engine.optimizer, "loss_scaler", None)
    saved = dict(vars(scaler)) if scaler is not None else None
    ds_logger = logging.getLogger("DeepSpeed")
    level = ds_logger.level
    ds_logger.setLevel(logging.ERROR)
    try:
        engine.step()
    finally:
        ds_logger.setLevel(level)
        if saved is not None:
            vars(scaler).update(saved)
    if engine.was_step_applied():  # DeepSpeed stepped on a NaN gradient: never go on silently
        raise RuntimeError("DeepSpeed applied a step that was to be skipped (its overflow check did not catch the "
                           "NaN gradient: zero_optimization.compute_grad_norm=false?); the weights are no longer "
                           "trustworthy. Use the ZeRO-2 config in accelerate_configs/ as it is.")
    return False


# ----------------------------------------------------------------------------------------------
# DeepSpeed's configuration, filled from the course's
# ----------------------------------------------------------------------------------------------


def deepspeed_settings(plan: ShardPlan, global_rows: int, max_grad_norm: float | None) -> dict:
    """The DeepSpeed config entries that follow from a stage's config and its shard plan.

    * ``train_micro_batch_size_per_gpu``: rows of one micro-batch (a shard): ``global_rows / S``;
    * ``gradient_accumulation_steps``: micro-batches per process per step (``A = S / N``);
    * ``train_batch_size``: the step's global batch (= micro-batch x A x N, which DeepSpeed checks);
    * ``gradient_clipping``: the stage's ``max_grad_norm`` (0: none), applied by the engine at ``step()``.

    >>> deepspeed_settings(plan_shards(16, 4, 2), 16, 1.0)
    {'train_micro_batch_size_per_gpu': 4, 'gradient_accumulation_steps': 2, 'train_batch_size': 16, \
'gradient_clipping': 1.0}
    """
    return {"train_micro_batch_size_per_gpu": global_rows // plan.count,
            "gradient_accumulation_steps": plan.accumulation,
            "train_batch_size": global_rows,
            "gradient_clipping": float(max_grad_norm or 0.0)}


def configure_deepspeed(accelerator, plan: ShardPlan, global_rows: int, max_grad_norm: float | None,
                        where: str = "batch_size", clip_flag: str = "max_grad_norm") -> dict | None:
    """Write `deepspeed_settings` into the DeepSpeed config of `accelerator` before ``prepare`` (None: not DeepSpeed).

    ``prepare(model, optimizer)`` without a DataLoader cannot fill ``train_micro_batch_size_per_gpu: auto``
    itself; the course's loops cut their batches themselves, so the numbers come from the stage's config. A value
    a DeepSpeed config file sets explicitly must agree (the loops would compute something else than the file
    says): a different one is refused, naming both; "auto" or absent is filled in.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return None
    config = plugin.deepspeed_config
    wanted = deepspeed_settings(plan, global_rows, max_grad_norm)
    fields = {"train_micro_batch_size_per_gpu": f"{where} / micro-batches", "train_batch_size": where,
              "gradient_accumulation_steps": "micro-batches per process", "gradient_clipping": clip_flag}
    for key, value in wanted.items():
        given = config.get(key, "auto")
        if given not in ("auto", None, "none", "None") and float(given) != float(value):
            raise BadValueError(f"The DeepSpeed config sets {key}={given}, but this run needs {value} (from "
                                f"{fields[key]}): set it to \"auto\" (filled from the course's config) or change "
                                f"{fields[key]}.")
        config[key] = value
    return wanted


def refuse_sharded_parameters(accelerator) -> None:
    """Stop before training under FSDP or DeepSpeed ZeRO-3 (ZeRO-0 too), which this course's loops do not support.

    FSDP and ZeRO-3 shard the weights, but rollouts sample from ``accelerator.unwrap_model(policy)``, which needs
    every parameter on every process. ZeRO-1 and ZeRO-2 keep the weights whole and shard the optimiser state (and
    ZeRO-2 the gradients): the loops drive their engine themselves (`backward`, `optimizer_step`). ZeRO-0 (plain
    DeepSpeed data parallelism) is refused too: in float32 its step does not drop a NaN gradient, which a skipped
    step relies on; DDP does the same job.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        raise BadValueError("FSDP is not supported by this course's training loops: it shards the weights, and PPO "
                            "samples from the whole policy on every process. Use DeepSpeed ZeRO-2 "
                            "(accelerate_configs/deepspeed_zero2.yaml: optimiser state and gradients sharded, weights "
                            "whole) or DDP (one_gpu.yaml, eight_gpus_ddp.yaml, two_machines.yaml).")
    if plugin is not None and int(plugin.zero_stage) not in (1, 2):
        why = ("shards the weights, and PPO samples from the whole policy on every process"
               if int(plugin.zero_stage) == 3 else "does not drop a step whose gradient is not finite in float32")
        raise BadValueError(f"DeepSpeed ZeRO-{plugin.zero_stage} is not supported by this course's training loops: "
                            f"it {why}. Use ZeRO-2 (accelerate_configs/deepspeed_zero2.yaml: optimiser state and "
                            "gradients sharded, weights whole), or DDP (eight_gpus_ddp.yaml); a 124 M GPT-2 with its "
                            "reference and reward model fits on one GPU.")
