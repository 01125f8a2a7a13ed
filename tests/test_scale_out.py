"""Scale-out that is true: two processes (accelerate's gloo backend on the CPU) split the work of one step and
give the 1-process result.

Each test launches tests/scale_out_worker.py with the README's CPU recipe
(``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 ...``) and compares:

* SFT and reward training: 2 processes == 1 process with the same global batch (every row weighs the same in
  the loss, so the mean over two half-batches is the mean over the batch), and == 1 process accumulating two
  micro-batches;
* PPO: 2 processes == 1 process accumulating the same two shards (`micro_batch_size`): the sampling is seeded
  per shard, so the rollouts, the losses and the trained weights are those of the 1-process run;
* a time budget with process 1 slowed down on purpose: both processes stop after the same step, cleanly;
* an interrupted 2-process run resumed on 2 processes ends where the uninterrupted one does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # launches processes

WORKER = Path(__file__).with_name("scale_out_worker.py")
CONFIGS = Path(__file__).parent.parent / "accelerate_configs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(stage: str, out: Path, processes: int, *args: str, timeout: int = 240, deepspeed: bool = False) -> list[dict]:
    """Run the worker on `processes` processes; returns each process's result (rank order).

    `deepspeed`: under accelerate_configs/deepspeed_zero2.yaml on DeepSpeed's CPU accelerator (gloo), float32."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    if deepspeed:
        env["DS_ACCELERATOR"] = "cpu"
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
                   str(CONFIGS / "deepspeed_zero2.yaml"), "--num_processes", str(processes), "--mixed_precision", "no",
                   "--main_process_port", str(free_port()), str(WORKER), stage, str(out), *args]
    elif processes == 1:
        command = [sys.executable, str(WORKER), stage, str(out), *args]
    else:
        env["ACCELERATE_USE_CPU"] = "true"
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), str(WORKER), stage, str(out), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{stage} on {processes} process(es) failed:\n{done.stderr[-4000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(processes)]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "params.pt")


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst:.3g} (tolerance {atol})"


# Reward model: the Bradley-Terry loss sees only r_chosen - r_rejected, so parameters that shift both equally
# (the final LayerNorm's bias, the attention's query bias) have a gradient that is exactly 0 in exact arithmetic
# and float noise in practice; Adam divides that noise by its own size and takes steps of ~lr in a sign that
# depends on summation order. Those weights agree to ~1e-3 (lr 3e-3); everything else to 1e-5.
@pytest.mark.parametrize("stage, half_batch, atol", [("sft", 4, 1e-5), ("reward", 6, 1e-3)])
def test_two_processes_train_what_one_trains(stage, half_batch, atol, tmp_path):
    one = launch(stage, tmp_path / "one", 1)
    accumulated = launch(stage, tmp_path / "accumulated", 1, "--micro-batch-size", str(half_batch))
    two = launch(stage, tmp_path / "two", 2)
    assert two[0]["world_size"] == 2 and two[0]["steps"] == two[1]["steps"] == 4
    # the training curve is the mean over both processes, the same on each, and the 1-process one
    assert two[0]["losses"] == two[1]["losses"]
    torch.testing.assert_close(torch.tensor(two[0]["losses"]), torch.tensor(one[0]["losses"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(accumulated[0]["losses"]), torch.tensor(one[0]["losses"]), atol=1e-4,
                               rtol=0)
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=atol)
    assert_same_weights(tmp_path / "one", tmp_path / "accumulated", atol=atol)


@pytest.mark.parametrize("path", [[], ["--fast-path"]], ids=["plain", "fast_path"])
def test_two_processes_run_the_ppo_of_one_process_with_the_same_shards(path, tmp_path):
    """The fast path too (the tiny profile's): its packed forward, KV-cache sampling and fused Adam, under DDP."""
    one = launch("ppo", tmp_path / "one", 1, "--micro-batch-size", "2", *path)  # 2 shards of each mini-batch, in turn
    two = launch("ppo", tmp_path / "two", 2, *path)  # the same 2 shards, one per process
    assert two[0]["losses"] == two[1]["losses"], "the processes logged different statistics"
    for step_one, step_two in zip(one[0]["losses"], two[0]["losses"], strict=True):
        for key in step_one:
            assert step_two[key] == pytest.approx(step_one[key], abs=1e-5), (key, step_one, step_two)
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=1e-5)


@pytest.mark.parametrize("stage", ["sft", "ppo"])
def test_a_time_budget_stops_both_processes_after_the_same_step(stage, tmp_path):
    # process 1 sleeps before every forward pass (SFT) / every reward call (PPO): its clock runs later
    results = launch(stage, tmp_path, 2, "--steps", "1000", "--max-minutes", "0.03", "--delay", "0.2")
    steps = [r["steps"] for r in results]
    assert steps[0] == steps[1], f"the processes stopped after different steps: {steps}"
    assert 1 <= steps[0] < 1000


def test_an_interrupted_two_process_run_resumes_where_it_would_have_been(tmp_path):
    straight = launch("ppo", tmp_path / "straight", 2)
    first = launch("ppo", tmp_path / "resumed", 2, "--stop-after", "2")
    assert [r["steps"] for r in first] == [2, 2]
    # every process saved its own RNG state in the checkpoint
    assert {p.name for p in (tmp_path / "resumed" / "checkpoint").glob("random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}
    resumed = launch("ppo", tmp_path / "resumed", 2)
    assert resumed[0]["steps"] == 4
    assert resumed[0]["losses"] == straight[0]["losses"]
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed", atol=1e-6)


def test_the_shipped_accelerate_configs_load():
    """accelerate reads each config file the README points to (keys, types, distributed type)."""
    from accelerate.commands.config.config_args import load_config_from_file

    root = CONFIGS
    expected = {"one_gpu.yaml": ("NO", 1), "eight_gpus_ddp.yaml": ("MULTI_GPU", 8),
                "two_machines.yaml": ("MULTI_GPU", 16), "deepspeed_zero2.yaml": ("DEEPSPEED", 8)}
    assert sorted(p.name for p in root.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes) in expected.items():
        config = load_config_from_file(str(root / name))
        assert (config.distributed_type.value, config.num_processes) == (kind, processes), name
    zero2 = load_config_from_file(str(root / "deepspeed_zero2.yaml")).deepspeed_config
    assert zero2["zero_stage"] == 2
    # the course fills these from the stage's config (core.distributed.configure_deepspeed): not set in the file
    assert not {"gradient_accumulation_steps", "gradient_clipping", "deepspeed_config_file"} & set(zero2)


def test_fsdp_and_zero3_are_refused_before_training_and_zero2_is_not():
    """FSDP and ZeRO-3 shard the weights PPO samples from: refused before any training, naming ZeRO-2 and DDP;
    ZeRO-0 too (its float32 step would apply the NaN gradient that a skipped PPO mini-batch is dropped by)."""
    from types import SimpleNamespace

    from rlhf_helpers.core.distributed import refuse_sharded_parameters
    from rlhf_helpers.core.errors import CourseError

    def state(zero_stage=None, fsdp=None):
        plugin = None if zero_stage is None else SimpleNamespace(zero_stage=zero_stage)
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin, fsdp_plugin=fsdp))

    with pytest.raises(CourseError, match="ZeRO-3 is not supported.*shards the weights.*Use ZeRO-2 "
                                          r"\(accelerate_configs/deepspeed_zero2.yaml.*or DDP"):
        refuse_sharded_parameters(state(3))
    with pytest.raises(CourseError, match="ZeRO-0 is not supported.*not finite.*Use ZeRO-2"):
        refuse_sharded_parameters(state(0))
    with pytest.raises(CourseError, match="FSDP is not supported.*DeepSpeed ZeRO-2.*or DDP"):
        refuse_sharded_parameters(state(fsdp=object()))
    for ok in (state(), state(1), state(2)):
        refuse_sharded_parameters(ok)


def test_a_batch_that_does_not_split_is_refused_with_the_fields_to_change():
    from rlhf_helpers.core.distributed import BatchSplitError, Shard, plan_shards

    assert plan_shards(64, None, 2).count == 2
    assert plan_shards(64, 8, 2).accumulation == 4
    assert [s.index for s in plan_shards(64, 8, 2, process_index=1).local_shards()] == [4, 5, 6, 7]
    with pytest.raises(BatchSplitError, match="batch_size=6 does not split.*micro_batch_size"):
        plan_shards(6, 4, 1)
    with pytest.raises(BatchSplitError, match="3 micro-batches, which 2 processes cannot share"):
        plan_shards(12, 4, 2)
    with pytest.raises(BatchSplitError, match="reward.full_batch_size"):
        Shard(0, 3).take(list(range(8)), "reward.full_batch_size")
