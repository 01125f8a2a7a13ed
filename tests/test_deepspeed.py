"""DeepSpeed ZeRO-2 for the course's loops (rlhf_helpers.core.distributed, rlhf_helpers.core.precision).

Fast, without DeepSpeed: the DeepSpeed config the course fills from a stage's config (micro-batch, accumulation,
global batch, clipping, precision), the refusal of values a config file sets otherwise, and how the loops drive the
engine (one ``engine.step()`` per optimiser step, the boundary on the last micro-batch, a skipped step dropped by
DeepSpeed's own overflow path, the loss scaler left alone), against a recording stand-in engine.

Slow, with DeepSpeed installed (``pip install deepspeed``; skipped otherwise): two processes on DeepSpeed's CPU
accelerator under accelerate_configs/deepspeed_zero2.yaml train what two DDP processes train — PPO with micro-batch
accumulation and skipped mini-batches, and SFT (tests/scale_out_worker.py, float32).
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DeepSpeedPlugin, DistributedType

from rlhf_helpers.config import get_config
from rlhf_helpers.core import distributed
from rlhf_helpers.core.distributed import (
    backward, configure_deepspeed, deepspeed_settings, is_deepspeed, optimizer_step, plan_shards,
    process_group_kwargs,
)
from rlhf_helpers.core.errors import BadValueError
from rlhf_helpers.core.precision import configure_deepspeed_precision, deepspeed_precision_settings


def zero2_accelerator(**config):
    """What `ResumableRun` sees after ``Accelerator()`` under ``accelerate launch`` with deepspeed_zero2.yaml: the
    plugin accelerate builds from the launcher's environment (every batch value "auto"), plus `config`."""
    plugin = DeepSpeedPlugin(zero_stage=2)
    plugin.deepspeed_config.update(config)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, device=torch.device("cpu"),
                           state=SimpleNamespace(deepspeed_plugin=plugin), autocast=None)


@pytest.mark.parametrize("stage, processes, micro, expected", [
    # the tiny profile's PPO on 2 processes: a mini-batch of 16 in 2 shards of 8, no accumulation
    ("ppo", 2, None, {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1, "train_batch_size": 16}),
    # ... with --ppo.micro-batch-size 2: 8 shards, 4 accumulated per process
    ("ppo", 2, 2, {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4, "train_batch_size": 16}),
    # SFT's 16 blocks on 4 processes in micro-batches of 2
    ("sft", 4, 2, {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "train_batch_size": 16}),
    # the reward model's 16 full + 32 snippet rows on 2 processes
    ("reward", 2, None, {"train_micro_batch_size_per_gpu": 24, "gradient_accumulation_steps": 1,
                         "train_batch_size": 48}),
])
def test_deepspeeds_batch_settings_follow_the_stage_config(stage, processes, micro, expected):
    config = getattr(get_config("tiny", **{stage: {"micro_batch_size": micro, "max_grad_norm": 0.5}}), stage)
    plan = plan_shards(config.batch_rows, config.micro_batch_size, processes)
    settings = deepspeed_settings(plan, config.batch_rows, config.max_grad_norm)
    assert settings == {**expected, "gradient_clipping": 0.5}
    # what DeepSpeed asserts at start-up
    assert settings["train_batch_size"] == (settings["train_micro_batch_size_per_gpu"]
                                            * settings["gradient_accumulation_steps"] * processes)


def test_the_config_is_filled_before_prepare_so_accelerate_needs_no_dataloader():
    accelerator = zero2_accelerator()
    plugin = accelerator.state.deepspeed_plugin
    plan = plan_shards(16, 2, 2)
    assert configure_deepspeed(accelerator, plan, 16, 0.0) is not None
    config = plugin.deepspeed_config
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["train_batch_size"], config["gradient_clipping"]) == (2, 4, 16, 0.0)
    # accelerate's `_prepare_deepspeed` raises "requires you to pass at least one of training or evaluation
    # dataloaders" only while the micro-batch is "auto"
    assert not plugin.is_auto("train_micro_batch_size_per_gpu") and not plugin.is_auto("gradient_accumulation_steps")
    # not DeepSpeed: nothing to fill
    assert configure_deepspeed(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), plan, 16, 1.0) is None


def test_a_config_file_that_says_otherwise_is_refused_naming_both():
    plan = plan_shards(16, 2, 2)
    configure_deepspeed(zero2_accelerator(gradient_clipping=1.0, gradient_accumulation_steps=4), plan, 16, 1.0)
    with pytest.raises(BadValueError, match=r"gradient_clipping=0.5, but this run needs 1.0 \(from --ppo.max-grad-norm"):
        configure_deepspeed(zero2_accelerator(gradient_clipping=0.5), plan, 16, 1.0, clip_flag="--ppo.max-grad-norm")
    with pytest.raises(BadValueError, match="train_micro_batch_size_per_gpu=4, but this run needs 2"):
        configure_deepspeed(zero2_accelerator(train_micro_batch_size_per_gpu=4), plan, 16, 1.0)


def test_deepspeed_precision_keeps_float32_weights_under_bf16_and_scales_the_loss_under_fp16():
    bf16 = deepspeed_precision_settings("bf16")
    assert bf16["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    assert not bf16["bf16"]["enabled"] and not bf16["fp16"]["enabled"]  # no bf16 weights
    fp16 = deepspeed_precision_settings("fp16")
    assert fp16["fp16"] == {"enabled": True, "loss_scale": 0}  # 0: dynamic loss scaling
    assert "torch_autocast" not in fp16 and "torch_autocast" not in deepspeed_precision_settings("no")

    accelerator = zero2_accelerator(fp16={"enabled": False, "auto_cast": True, "loss_scale_window": 500})
    configure_deepspeed_precision(accelerator, "fp16")
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    assert config["fp16"] == {"enabled": True, "auto_cast": True, "loss_scale_window": 500, "loss_scale": 0}
    # the loops' autocast is on (accelerate leaves it to DeepSpeed, whose engine autocasts its own forward only)
    accelerator = zero2_accelerator()
    configure_deepspeed_precision(accelerator, "bf16")
    with accelerator.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, autocast="accelerate's")
    configure_deepspeed_precision(ddp, "bf16")
    assert ddp.autocast == "accelerate's"


def test_the_process_group_is_named_for_deepspeed_without_a_gpu(monkeypatch):
    """accelerate 1.15 finds no backend on a CPU-only machine and, under DeepSpeed, records one process."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert process_group_kwargs() == {"backend": "gloo"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert process_group_kwargs() == {}  # accelerate picks nccl itself
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert process_group_kwargs() == {}  # DDP on the CPU: accelerate's own gloo


# ----------------------------------------------------------------------------------------------
# How the loops drive the engine
# ----------------------------------------------------------------------------------------------


class RecordingEngine:
    """The calls the loops make on a ``DeepSpeedEngine``; `step` drops a NaN gradient as ZeRO's overflow path does
    (and lowers the loss scale, as fp16's dynamic scaler does on an overflow)."""

    def __init__(self, drops_nan: bool = True):
        self.calls, self.drops_nan, self.nan = [], drops_nan, False
        self.optimizer = SimpleNamespace(loss_scaler=SimpleNamespace(cur_scale=2.0**16, cur_iter=7))
        self.applied = None

    def set_gradient_accumulation_boundary(self, is_boundary):
        self.calls.append(("boundary", is_boundary))

    def backward(self, loss, scale_wrt_gas=True):
        self.calls.append(("backward", float(loss), scale_wrt_gas))
        self.nan = self.nan or math.isnan(float(loss))

    def step(self):
        self.calls.append(("step",))
        self.applied = not (self.nan and self.drops_nan)
        if not self.applied:
            self.optimizer.loss_scaler.cur_scale /= 2
        self.nan = False

    def was_step_applied(self):
        return self.applied


def engine_accelerator(engine):
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                           deepspeed_engine_wrapped=SimpleNamespace(engine=engine))


def test_one_engine_step_per_optimiser_step_with_the_boundary_on_the_last_micro_batch():
    engine = RecordingEngine()
    accelerator = engine_accelerator(engine)
    assert is_deepspeed(accelerator) and not is_deepspeed(SimpleNamespace(num_processes=1))
    # no `no_sync` under ZeRO-2 (DeepSpeed's refuses it: ZeRO-2 reduces every micro-batch into its partitions)
    assert isinstance(distributed.micro_batch(accelerator, None, last=False), contextlib.nullcontext)
    backward(accelerator, None, torch.tensor(3.0), 2, last=False)
    backward(accelerator, None, torch.tensor(5.0), 2, last=True)
    assert optimizer_step(accelerator, None, None, 1.0) is True
    # the mean over micro-batches, divided here (scale_wrt_gas=False) exactly as under DDP
    assert engine.calls == [("boundary", False), ("backward", 1.5, False), ("boundary", True),
                            ("backward", 2.5, False), ("step",)]


def test_a_skipped_step_is_dropped_by_deepspeed_and_leaves_the_loss_scale_alone():
    engine = RecordingEngine()
    accelerator = engine_accelerator(engine)
    backward(accelerator, None, torch.tensor(3.0), 2, last=False)
    backward(accelerator, None, torch.tensor(5.0), 2, last=True, skip=True)
    assert math.isnan(engine.calls[-1][1])  # the last backward carries a NaN: DeepSpeed's overflow path drops all
    assert optimizer_step(accelerator, None, None, 1.0, skip=True) is False
    assert engine.optimizer.loss_scaler.cur_scale == 2.0**16  # a skip is no overflow: the scale is put back
    # a DeepSpeed that applied the NaN step anyway: never go on silently
    engine = RecordingEngine(drops_nan=False)
    accelerator = engine_accelerator(engine)
    backward(accelerator, None, torch.tensor(5.0), 1, last=True, skip=True)
    with pytest.raises(RuntimeError, match="applied a step that was to be skipped"):
        optimizer_step(accelerator, None, None, 1.0, skip=True)


# ----------------------------------------------------------------------------------------------
# Two processes under ZeRO-2 train what two DDP processes train
# ----------------------------------------------------------------------------------------------


def _needs_deepspeed():
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed): ZeRO-2 not run")


@pytest.mark.slow
@pytest.mark.parametrize("path", [[], ["--fast-path"]], ids=["plain", "fast_path"])
def test_zero2_runs_the_ppo_of_ddp_with_accumulation_and_skipped_mini_batches(path, tmp_path):
    """2 processes x 2 accumulated micro-batches per mini-batch, and a ratio threshold that skips most mini-batches
    after the first of each step: the skips must drop the accumulated gradients in ZeRO's buffers too. The fast path
    too (the tiny profile's: packed forward, KV-cache sampling, fused Adam under ZeRO's optimizer)."""
    _needs_deepspeed()
    from tests.test_scale_out import assert_same_weights, launch

    args = ("--micro-batch-size", "1", "--ratio-threshold", "1.002", *path)
    zero2 = launch("ppo", tmp_path / "zero2", 2, *args, deepspeed=True)
    ddp = launch("ppo", tmp_path / "ddp", 2, *args)
    assert zero2[0]["world_size"] == 2 and zero2[0]["steps"] == zero2[1]["steps"] == 4
    assert zero2[0]["losses"] == zero2[1]["losses"], "the processes logged different statistics"
    skipped = [step["skipped_minibatches"] for step in ddp[0]["losses"]]
    assert 0 < sum(skipped) < 4 * 4, f"the threshold should skip some mini-batches, not all: {skipped}"
    for step_zero2, step_ddp in zip(zero2[0]["losses"], ddp[0]["losses"], strict=True):
        for key in step_ddp:
            assert step_zero2[key] == pytest.approx(step_ddp[key], abs=1e-5), (key, step_zero2, step_ddp)
    assert_same_weights(tmp_path / "zero2", tmp_path / "ddp", atol=1e-5)


@pytest.mark.slow
def test_zero2_runs_the_sft_of_ddp(tmp_path):
    _needs_deepspeed()
    from tests.test_scale_out import assert_same_weights, launch

    zero2 = launch("sft", tmp_path / "zero2", 2, "--micro-batch-size", "2", deepspeed=True)
    ddp = launch("sft", tmp_path / "ddp", 2, "--micro-batch-size", "2")
    assert zero2[0]["steps"] == zero2[1]["steps"] == 4
    torch.testing.assert_close(torch.tensor(zero2[0]["losses"]), torch.tensor(ddp[0]["losses"]), atol=1e-4, rtol=0)
    assert_same_weights(tmp_path / "zero2", tmp_path / "ddp", atol=1e-5)
