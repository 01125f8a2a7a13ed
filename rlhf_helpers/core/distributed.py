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

What must be *the same* on every process is decided once and shared (`agree`): the time budget is read off the
main process's clock, a stop signal or a non-finite loss on any process stops all of them after the same
step, and logged statistics are averaged over processes. Only the main process writes files.
"""

from __future__ import annotations

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
    `Accelerator` reads it, so here it is passed on explicitly.
    """
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))


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


def refuse_sharded_parameters(accelerator) -> None:
    """Stop before training under FSDP or DeepSpeed, which this course's loops do not support (yet).

    FSDP and ZeRO-3 shard the weights, but rollouts sample from ``accelerator.unwrap_model(policy)``, which needs
    every parameter on every process. ZeRO-1/2 keep the weights whole, but under DeepSpeed ``accelerator.backward``
    steps the engine at every backward pass, so the loops' own micro-batch accumulation, ratio-threshold skip,
    NaN check and gradient clipping would not run as they do under DDP; and ``prepare`` without a DataLoader
    leaves DeepSpeed's ``train_micro_batch_size_per_gpu`` unset. DDP runs every loop as written.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if getattr(accelerator.state, "fsdp_plugin", None) is not None or plugin is not None:
        what = "FSDP" if plugin is None else f"DeepSpeed (ZeRO-{plugin.zero_stage})"
        raise BadValueError(f"{what} is not supported by this course's training loops: they accumulate micro-batches, "
                            "skip runaway updates and clip gradients themselves, and PPO samples from the whole "
                            "policy on every process. Use DDP (accelerate_configs/one_gpu.yaml, "
                            "eight_gpus_ddp.yaml, two_machines.yaml); a 124 M GPT-2 with its reference and reward "
                            "model fits on one GPU.")
