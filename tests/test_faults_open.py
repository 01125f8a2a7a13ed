"""The eleven faults that a 158-case probe of the command line and the API found still open, one test each (and
one for the exit status of a stopped run): nothing written outside the chosen location, no input or shipped asset
overwritten, every setting that shapes the data compared on resume, damage named and never silently replaced, a
full disk named with the space needed and the last good checkpoint intact, late checks moved before any model
loads. Each test failed on the code before the fix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from rlhf_helpers import pipeline
from rlhf_helpers.__main__ import main
from rlhf_helpers.config import SupervisedConfig, get_config
from rlhf_helpers.core import checkpoint as checkpoint_module
from rlhf_helpers.core.assets import shipped_policy_dir, shipped_reward_model_dir
from rlhf_helpers.core.checkpoint import STATE_FILE, CheckpointError, SettingsChangedError
from rlhf_helpers.core.errors import CourseError, DiskFullError
from rlhf_helpers.core.run import ResumableRun
from rlhf_helpers.core.training import train_loop


def must_not_run(*args, **kwargs):
    raise AssertionError("work started although the input was refused")


def refused(argv, capsys, code=2) -> str:
    """Run the command line; it must refuse with one `error:` line and `code`; returns the message."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def tree(path) -> dict:
    """Every file under `path` with its size and modification time (to show nothing changed)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()}


# 1. An empty path is not the current directory -------------------------------------------------------------


@pytest.mark.parametrize("argv", [["ppo", "--output-dir", ""], ["sft", "--output-dir", ""],
                                  ["sft", "--export-to", ""], ["ppo", "--output-dir="]])
def test_an_empty_path_is_refused_and_nothing_is_written(argv, tmp_path, artifacts, no_work, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused(argv, capsys)
    assert "is empty" in err and "current directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the artifacts root


def test_an_empty_output_dir_is_refused_in_the_api_too(artifacts, no_work):
    with pytest.raises(pipeline.OutputLocationError, match="empty output directory"):
        pipeline.stage_ppo(get_config("tiny"), output_dir="")


# 2. A stage cannot overwrite its own input, a shipped asset or another stage's result -------------------------


@pytest.mark.parametrize("target, words", [
    (lambda a: shipped_policy_dir("tiny"), "would overwrite the SFT policy"),
    (lambda a: shipped_reward_model_dir("tiny"), "would overwrite the reward model"),
    (lambda a: shipped_policy_dir("tiny").parent / "results", "shipped assets"),
    (lambda a: a / "tiny" / "reward_model", "is where the `reward` stage writes"),
])
def test_an_output_that_aliases_an_input_is_refused_before_anything_loads(target, words, artifacts, no_work,
                                                                           capsys):
    before = tree(shipped_policy_dir("tiny").parent)
    err = refused(["ppo", "--output-dir", str(target(artifacts)), "--ppo.max-steps", "2"], capsys)
    assert words in err and "Nothing was written" in err
    assert tree(shipped_policy_dir("tiny").parent) == before


def test_a_trained_input_is_protected_like_a_shipped_one(artifacts, no_work, capsys):
    trained = artifacts / "tiny" / "sft_policy"
    shutil.copytree(shipped_policy_dir("tiny"), trained)  # a trained SFT policy is what ppo and reward read
    for stage in ("ppo", "reward"):
        err = refused([stage, "--output-dir", str(trained / "sub")], capsys)
        assert "would overwrite the SFT policy" in err


# 3. `data` with another review filter ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("min_chars", [100, 500])
def test_data_with_another_review_filter(min_chars, artifacts):
    result = pipeline.stage_data(get_config("tiny", min_review_chars=min_chars))
    assert result["prompts_all"] == result["prompts_train"] + result["prompts_eval"]
    assert (result["prompts_all"] > 24_895) == (min_chars < 200)
    card = json.loads((artifacts / "tiny" / "data" / "run_card_data.json").read_text())
    assert card["config"]["min_review_chars"] == min_chars


def test_data_checks_the_seed_count_before_it_writes(artifacts, monkeypatch):
    """The 24,895 check holds for the seed's filter only, and runs before anything is saved."""
    import datasets

    rows = datasets.Dataset.from_dict({"text": ["x" * 300] * 10, "label": [0, 1] * 5})
    monkeypatch.setattr(pipeline, "load_imdb", lambda source: rows)
    monkeypatch.setattr(pipeline, "get_tokenizer", lambda config: None)
    monkeypatch.setattr(pipeline, "build_dataset", lambda tokenizer, config, split, dataset: [0] * 7)
    with pytest.raises(CourseError, match="Expected 24895 reviews .* got 7.*Nothing was written"):
        pipeline.stage_data(get_config("tiny"))
    assert not (artifacts / "tiny" / "data" / "prompts_all").exists()


# 4. Settings that shape the data are compared on resume -------------------------------------------------------


def toy_run(output_dir, data_settings, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    config = SupervisedConfig(max_steps=4, warmup_steps=1, checkpoint_every=1, mixed_precision="no")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))

    def loss_fn(model, step, shard, device):
        return model(x).pow(2).mean(), {}

    return train_loop(model, config, output_dir, loss_fn, lambda m: {}, name="toy", batch_rows=8, progress=False,
                      data_settings=data_settings, **kwargs)


def test_a_resume_with_other_data_settings_is_refused(tmp_path):
    data = {"prompt_min_tokens": 2, "prompt_max_tokens": 8, "min_review_chars": 200, "eval_fraction": 0.1}
    assert toy_run(tmp_path, data, stop_after=2).interrupted
    with pytest.raises(SettingsChangedError) as raised:
        toy_run(tmp_path, {**data, "prompt_min_tokens": 3, "prompt_max_tokens": 4})
    assert "data" in str(raised.value) and "'prompt_min_tokens': 3" in str(raised.value)
    resumed = toy_run(tmp_path, {**data, "eval_fraction": 0.5}, allow_changed_settings=True)
    assert resumed.state["step"] == 4 and resumed.state["settings_changes"][0]["step"] == 2


def test_every_training_stage_records_the_data_settings():
    """PPO, SFT and the reward model pass `DATA_FIELDS` of their run config to the engine."""
    import inspect

    from rlhf_helpers.policy import sft
    from rlhf_helpers.ppo import trainer
    from rlhf_helpers.reward import training

    for module in (sft, training, trainer):
        assert "data_settings_of(" in inspect.getsource(module), module.__name__
    config = get_config("tiny", prompt_min_tokens=3)
    from rlhf_helpers.config import data_settings_of

    assert data_settings_of(config.to_dict())["prompt_min_tokens"] == 3
    assert data_settings_of(config)["min_review_chars"] == 200


# 5. A damaged checkpoint is named, never silently replaced ---------------------------------------------------


def test_a_checkpoint_without_its_state_file_is_named_not_replaced(tmp_path):
    assert toy_run(tmp_path, {}, stop_after=2).interrupted
    (tmp_path / "checkpoint" / STATE_FILE).unlink()
    files = tree(tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match=f"has no {STATE_FILE}.*--no-resume"):
        toy_run(tmp_path, {})
    assert tree(tmp_path / "checkpoint") == files  # nothing trained over it


# 6. A truncated model file is an `error:` line, before any work ------------------------------------------------


@pytest.mark.parametrize("stage, which", [("ppo", "sft_policy"), ("ppo", "reward_model"),
                                          ("evaluate", "ppo_policy"), ("evaluate", "sft_policy")])
def test_a_truncated_model_file_is_refused_before_any_work(stage, which, artifacts, no_work, capsys):
    target = artifacts / "tiny" / which
    shutil.copytree(shipped_reward_model_dir("tiny") if which == "reward_model" else shipped_policy_dir("tiny"),
                    target)
    os.truncate(target / "model.safetensors", 1_000_000)
    err = refused([stage], capsys)
    assert f"{target / 'model.safetensors'}" in err and "damaged" in err and "Nothing was trained" in err


# 7. A directory that is not a model ---------------------------------------------------------------------------


def test_sft_from_a_directory_that_is_not_a_model(artifacts, no_work, capsys, tmp_path):
    not_a_model = tmp_path / "etc"
    not_a_model.mkdir()
    (not_a_model / "hosts").write_text("127.0.0.1 localhost\n")
    err = refused(["sft", "--model-name-or-path", str(not_a_model)], capsys)
    assert "is not a model directory" in err and "config.json" in err


# 8. A tokenizer path that does not exist is named as such ------------------------------------------------------


def test_a_missing_tokenizer_path_is_named(artifacts, no_work, capsys):
    err = refused(["data", "--tokenizer-name-or-path", "/nonexistent/tok"], capsys)
    assert "/nonexistent/tok: no such directory" in err
    assert "hub" not in err.split("no such directory")[0] and "--profile tiny" not in err


# 9. Checked before models load: the batch split, a batch larger than the prompts, a locked directory ------------


@pytest.mark.parametrize("argv, words", [
    (["ppo", "--ppo.batch-size", "16", "--ppo.mini-batch-size", "16", "--ppo.micro-batch-size", "5"],
     "does not split into equal micro-batches"),
    (["ppo", "--ppo.batch-size", "10000000", "--ppo.mini-batch-size", "10000000"], "more than the train prompts"),
])
def test_batch_problems_are_refused_before_models_load(argv, words, artifacts, no_work, capsys):
    assert words in refused(argv, capsys)


def test_a_locked_output_dir_is_refused_at_once(tmp_path, artifacts, no_work, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "ppo-out"
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                               "started": "now", "command": "ppo"}))
        err = refused(["ppo", "--output-dir", str(out)], capsys)
        assert "Another run is writing to" in err and str(holder.pid) in err
    finally:
        holder.kill()
        holder.wait()


# 10. A full disk is named, with the space needed; the last good checkpoint stays -------------------------------


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    assert toy_run(tmp_path, {}, stop_after=2).interrupted
    good = tree(tmp_path / "checkpoint")
    real_save_state = None

    def full_disk_save_state(self, output_dir, **kwargs):
        (tmp_path / "checkpoint.tmp" / "model.bin").write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")

    from accelerate import Accelerator

    real_save_state = Accelerator.save_state
    monkeypatch.setattr(Accelerator, "save_state", full_disk_save_state)
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(DiskFullError) as raised:
        toy_run(tmp_path, {})
    message = str(raised.value)
    assert "The last good checkpoint (step 2)" in message and "is intact" in message and "MB free" in message
    assert not (tmp_path / "checkpoint.tmp").exists() and tree(tmp_path / "checkpoint") == good
    monkeypatch.setattr(Accelerator, "save_state", real_save_state)
    assert toy_run(tmp_path, {}).state["step"] == 4  # freed: the same command resumes from step 2


def test_a_full_disk_at_the_lock_file_is_named(tmp_path, monkeypatch):
    from rlhf_helpers.core import lock

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock.os, "open", no_space)
    with pytest.raises(DiskFullError, match="is full"):
        with lock.run_lock(tmp_path / "out"):
            pass


# 11. A profile name where a config goes -----------------------------------------------------------------------


def test_build_dataset_with_a_profile_name_says_what_to_pass():
    from rlhf_helpers.data import build_dataset

    with pytest.raises(TypeError, match=r"takes a CourseConfig .* got 'tiny' .*get_config\('tiny'\)"):
        build_dataset(None, "tiny")


# The exit status of a stage stopped by a signal ---------------------------------------------------------------


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stopped_stage_exits_with_the_signal_status(signal_name, code, tmp_path, artifacts, monkeypatch):
    """A run stopped by Ctrl-C / SIGTERM saved a checkpoint but did not finish: a non-zero status (128 + the
    signal's number, as the shell reports a killed command) keeps `ppo && evaluate` from evaluating it."""
    monkeypatch.setattr(pipeline, "stage_ppo", lambda config, **kwargs: {
        "steps": 3, "interrupted": True, "signal": signal_name, "message": "interrupted; run again to resume"})
    assert main(["ppo", "--output-dir", str(tmp_path / "out")]) == code
    summary = pipeline.StageSummary("Run stopped: ...")
    summary.interrupted = signal_name
    monkeypatch.setattr(pipeline, "stage_run", lambda config, **kwargs: summary)
    assert main(["run"]) == code
    monkeypatch.setattr(pipeline, "stage_ppo", lambda config, **kwargs: {"steps": 3})
    assert main(["ppo", "--output-dir", str(tmp_path / "out")]) == 0


def test_the_engine_is_the_one_loop():
    """Both loops drive `ResumableRun`: neither file takes the lock, signals or checkpoints itself."""
    import inspect

    from rlhf_helpers.core import training
    from rlhf_helpers.ppo import trainer

    for module in (training, trainer):
        source = inspect.getsource(module)
        assert "ResumableRun(" in source
        for own in ("stop_on_signals", "save_checkpoint(self.accelerator", "load_checkpoint(", "set_seed("):
            assert own not in source, (module.__name__, own)
    assert ResumableRun.__doc__


def test_a_checkpoint_of_the_previous_layout_still_resumes(tmp_path):
    """Version 1 checkpoints (PPO's clock under "seconds", no data settings, no version) load and are converted."""
    assert toy_run(tmp_path, {"min_review_chars": 200}, stop_after=2).interrupted
    state_file = tmp_path / "checkpoint" / STATE_FILE
    state = json.loads(state_file.read_text())
    state["seconds"] = state.pop("train_seconds")
    state.pop("version")
    state["settings"].pop("data")
    state_file.write_text(json.dumps(state))
    resumed = toy_run(tmp_path, {"min_review_chars": 200})
    assert resumed.state["step"] == 4 and resumed.state["version"] == 2 and "seconds" not in resumed.state
    assert resumed.state["train_seconds"] >= state["seconds"]


def test_saved_models_are_readable_as_the_umask_says(tiny_lm, small_tokenizer, tmp_path):
    """safetensors writes 0600 whatever the umask; the stages give the files the umask's permissions."""
    from rlhf_helpers.reward.model import RewardModel, save_reward_model

    old = os.umask(0o022)
    try:
        save_reward_model(RewardModel.from_policy(tiny_lm), small_tokenizer, tmp_path / "rm")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "rm").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
