"""Every model a stage loads goes to the accelerator's device (on a GPU machine: the GPU), not to "cpu"; and the
precision each kind of device gets.

Checked on the CPU by making the process's device a stand-in and recording where each loader is asked to put
its model; the precision rules by making torch report the capabilities of other devices (a GPU with or without
native bf16, a CPU with or without bf16 instructions); fp16's loss scaler by giving accelerate a CPU GradScaler.
"""

import pytest
import torch

from rlhf_helpers import pipeline
from rlhf_helpers.config import get_config


class _State:
    device = torch.device("meta")  # no real accelerator here: any device other than "cpu" tells the two apart


def test_evaluate_loads_every_model_on_the_accelerators_device(artifacts, monkeypatch):
    placed = []

    class Scorer:
        score = None

    def load_policy(source, device="cpu"):
        placed.append(("policy", str(source), torch.device(device)))
        return object(), None

    def load_reward_model(source, device="cpu", **kwargs):
        placed.append(("reward", str(source), torch.device(device)))
        return Scorer()

    monkeypatch.setattr(pipeline, "process_state", lambda: _State())
    monkeypatch.setattr(pipeline, "load_policy", load_policy)
    monkeypatch.setattr(pipeline, "load_reward_model", load_reward_model)
    monkeypatch.setattr(pipeline, "default_judges", lambda config: {})
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [torch.tensor([1, 2])] * 3})
    monkeypatch.setattr(pipeline, "evaluate_policy", lambda *a, **k: ({"reward": 0.0}, []))
    ppo = artifacts / "tiny" / "ppo_policy"
    ppo.mkdir(parents=True)
    (ppo / "config.json").write_text("{}")
    pipeline.stage_evaluate(get_config("tiny"), n_prompts=3)
    kinds = [kind for kind, _, _ in placed]
    assert kinds.count("policy") == 3 and kinds.count("reward") == 1  # reference, SFT, PPO; the reward model
    assert all(device == torch.device("meta") for _, _, device in placed), placed


def test_ppo_loads_the_reward_model_beside_the_policy(artifacts, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def load_reward_model(source, device="cpu", **kwargs):
        seen["device"] = torch.device(device)
        raise Stop

    monkeypatch.setattr(pipeline, "process_state", lambda: _State())
    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (object(), None))
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [[1, 2]] * 64})
    monkeypatch.setattr(pipeline, "load_reward_model", load_reward_model)
    try:
        pipeline.stage_ppo(get_config("tiny"))
    except Stop:
        pass
    assert seen["device"] == torch.device("meta")


# ----------------------------------------------------------------------------------------------
# Which precision "auto" picks where (rlhf_helpers.core.precision)
# ----------------------------------------------------------------------------------------------


def fake_cuda(monkeypatch, *, native_bf16: bool, emulated_bf16: bool = True):
    """A CUDA GPU as torch reports it: with native bf16 (Ampere+), or only emulated (V100, T4: torch's default
    ``is_bf16_supported()`` still says True there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or (including_emulation and emulated_bf16))


@pytest.fixture
def not_launched(monkeypatch):
    for name in ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_is_bf16_on_gpus_with_native_bf16_and_fp16_on_the_others(native_bf16, expected, monkeypatch,
                                                                       not_launched):
    from rlhf_helpers.core import precision

    fake_cuda(monkeypatch, native_bf16=native_bf16)  # a T4 *emulates* bf16: that must not count
    assert precision.resolve_mixed_precision("auto") == expected


@pytest.mark.parametrize("flags, expected", [("fpu sse avx512f avx512_bf16", "bf16"), ("fpu amx_bf16 amx_tile", "bf16"),
                                             ("fpu sse avx2 avx512f", "no")])
def test_auto_on_a_cpu_is_bf16_with_bf16_instructions_else_float32(flags, expected, tmp_path, monkeypatch, not_launched):
    from rlhf_helpers.core import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\nflags : {flags}\n")
    assert precision.cpu_has_fast_bf16(cpuinfo) == (expected == "bf16")
    read = precision.cpu_has_fast_bf16
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: read(cpuinfo))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve_mixed_precision("auto") == expected
    # accelerate's --cpu on a GPU machine: the CPU's rule, not the GPU's
    fake_cuda(monkeypatch, native_bf16=True)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert precision.resolve_mixed_precision("auto") == expected


def test_auto_follows_the_launcher_and_an_explicit_setting_wins(monkeypatch, not_launched):
    from rlhf_helpers.core.precision import resolve_mixed_precision

    fake_cuda(monkeypatch, native_bf16=True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # `accelerate launch --mixed_precision fp16`
    assert resolve_mixed_precision("auto") == "fp16"
    assert resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve_mixed_precision("fp8")


def test_fp16_without_a_loss_scaler_is_refused(tmp_path, monkeypatch, not_launched):
    """On a CPU accelerate has no GradScaler (it would quietly train in float32 under an "fp16" run card): refused
    before accelerate starts. DeepSpeed, or a GPU, scale the loss."""
    from rlhf_helpers.config import SupervisedConfig
    from rlhf_helpers.core.errors import BadValueError
    from rlhf_helpers.core.precision import refuse_unscaled_fp16
    from rlhf_helpers.core.run import ResumableRun

    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *args, **kwargs: None)
    with pytest.raises(BadValueError, match="fp16 needs a loss scaler.*on the CPU"):
        ResumableRun(SupervisedConfig(mixed_precision="fp16"), tmp_path, name="toy", batch_rows=4, batch_field="x")
    refuse_unscaled_fp16("bf16")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    refuse_unscaled_fp16("fp16")  # DeepSpeed's own loss scaling
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *args, **kwargs: torch.device("cuda"))
    refuse_unscaled_fp16("fp16")  # a GPU: accelerate's GradScaler
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    with pytest.raises(BadValueError):
        refuse_unscaled_fp16("fp16")  # --cpu on a GPU machine


# ----------------------------------------------------------------------------------------------
# fp16's loss scaler in the loops: an overflow skips the step, it does not stop the run
# ----------------------------------------------------------------------------------------------


def scaled_run(tmp_path, monkeypatch):
    """A run whose accelerate does what it does with fp16 on a GPU: a GradScaler scales the loss, unscales before
    clipping and steps (here a CPU GradScaler; accelerate has none on a CPU)."""
    from rlhf_helpers.config import SupervisedConfig
    from rlhf_helpers.core.run import ResumableRun

    run = ResumableRun(SupervisedConfig(max_steps=4, warmup_steps=1, mixed_precision="no", max_grad_norm=1.0),
                       tmp_path, name="toy", batch_rows=4, batch_field="x")
    accelerator = run.accelerator
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    accelerator.native_amp = True
    monkeypatch.setattr(type(accelerator), "mixed_precision", property(lambda self: "fp16"))
    monkeypatch.setattr(accelerator, "autocast", lambda *args, **kwargs: torch.autocast("cpu", enabled=False))
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    wrapped, optimizer = run.prepare(model, torch.optim.AdamW(model.parameters(), lr=0.1), lambda step: 1.0)
    return run, wrapped, optimizer


def test_an_fp16_overflow_skips_the_step_and_lowers_the_scale_instead_of_raising(tmp_path, monkeypatch):
    from rlhf_helpers.core.training import _optimizer_step

    run, model, optimizer = scaled_run(tmp_path, monkeypatch)
    x = torch.ones(4, 2)
    size = {"loss": 1e36}  # finite in float32, but times the scale 65536 it overflows: inf gradients

    def loss_fn(model, step, shard, device):
        return model(x).pow(2).mean() * size["loss"], {}

    before = [p.detach().clone() for p in model.parameters()]
    loss, _ = _optimizer_step(run, model, optimizer, loss_fn, step=0)  # no NonFiniteLossError: the loss is finite
    assert loss == pytest.approx(float(model(x).pow(2).mean().detach()) * 1e36, rel=1e-5)
    assert optimizer.step_was_skipped
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "an overflowed step changed weights"
    assert run.accelerator.scaler.get_scale() == 2.0**15  # the scale was too high: halved
    size["loss"] = 1.0
    _optimizer_step(run, model, optimizer, loss_fn, step=1)
    assert not optimizer.step_was_skipped
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a good step changed nothing"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_optimizer_step_says_whether_the_weights_changed(tmp_path, monkeypatch):
    from rlhf_helpers.core.distributed import backward, optimizer_step

    run, model, optimizer = scaled_run(tmp_path, monkeypatch)
    accelerator, x = run.accelerator, torch.ones(4, 2)
    backward(accelerator, model, model(x).sum() * 1e36, 1, last=True)
    assert optimizer_step(accelerator, model, optimizer, 1.0) is False  # overflow
    backward(accelerator, model, model(x).sum(), 1, last=True)
    assert optimizer_step(accelerator, model, optimizer, 1.0) is True
    before = [p.detach().clone() for p in model.parameters()]
    # a skip (PPO's ratio threshold): the last backward is left out, the gradients dropped, the weights kept
    backward(accelerator, model, model(x).sum(), 2, last=False)
    backward(accelerator, model, model(x).sum(), 2, last=True, skip=True)
    assert optimizer_step(accelerator, model, optimizer, 1.0, skip=True) is False
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert run.accelerator.scaler.get_scale() == 2.0**15  # a skip is no overflow: the scale is untouched
