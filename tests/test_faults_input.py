"""Bad input is refused up front, before any model loads, with one message that says what is allowed.

Issue 11, "bad input accepted silently": config values (in code and as flags), output locations that cannot be
written (a file in the way, a read-only directory), the gpt2 profile with the hub switched off, and the
``--allow-changed-settings`` flag reaching the training functions. Nothing here trains a model: where a stage
would start work, the function it would call first is replaced by one that fails the test.
"""

import inspect
import math
import os

import pytest

from rlhf_helpers.core.errors import CourseError
import torch

from rlhf_helpers import pipeline
from rlhf_helpers.__main__ import main
from rlhf_helpers.config import (PROFILES, CourseConfig, PPOConfig, RewardConfig, SFTConfig, TrainConfig,
                                 check_n_prompts, finalize, get_config)


def must_not_run(*args, **kwargs):
    raise AssertionError("work started although the input was refused")


# ----------------------------------------------------------------------------------------------
# Config values: one message each, naming the field, its flag and what is allowed
# ----------------------------------------------------------------------------------------------

BAD_VALUES = [
    # (overrides, error, words the message must hold)
    (dict(ppo={"max_steps": 0}), ValueError, ["ppo.max_steps", "--ppo.max-steps", "an integer >= 1", "got 0"]),
    (dict(ppo={"max_steps": -3}), ValueError, ["ppo.max_steps", "an integer >= 1", "got -3"]),
    (dict(sft={"max_steps": 0}), ValueError, ["sft.max_steps", "--sft.max-steps", "an integer >= 1"]),
    (dict(reward={"max_steps": -1}), ValueError, ["reward.max_steps", "an integer >= 1"]),
    (dict(ppo={"max_steps": 3.5}), TypeError, ["ppo.max_steps", "an integer >= 1", "got 3.5"]),
    (dict(ppo={"max_steps": True}), TypeError, ["ppo.max_steps", "an integer >= 1", "got True"]),
    (dict(ppo={"max_minutes": -1.0}), ValueError, ["ppo.max_minutes", "a finite number > 0 or None", "got -1.0"]),
    (dict(ppo={"max_minutes": 0}), ValueError, ["ppo.max_minutes", "a finite number > 0 or None"]),
    (dict(ppo={"max_minutes": math.nan}), ValueError, ["ppo.max_minutes", "a finite number > 0 or None", "got nan"]),
    (dict(ppo={"max_minutes": math.inf}), ValueError, ["ppo.max_minutes", "a finite number > 0 or None", "got inf"]),
    (dict(sft={"max_minutes": "5"}), TypeError, ["sft.max_minutes", "a finite number > 0 or None", "'5' (a str)"]),
    (dict(ppo={"mini_batch_size": 0}), ValueError, ["ppo.mini_batch_size", "an integer >= 1"]),
    (dict(ppo={"checkpoint_every": 0}), ValueError, ["ppo.checkpoint_every", "an integer >= 1"]),
    (dict(sft={"checkpoint_every": 0}), ValueError, ["sft.checkpoint_every", "an integer >= 1"]),
    (dict(ppo={"ppo_epochs": 0}), ValueError, ["ppo.ppo_epochs", "an integer >= 1"]),
    (dict(ppo={"batch_size": 0}), ValueError, ["ppo.batch_size", "an integer >= 1"]),
    (dict(ppo={"batch_size": 10, "mini_batch_size": 4}), ValueError,
     ["ppo.batch_size=10", "ppo.mini_batch_size=4", "divides"]),
    (dict(sft={"batch_size": 0}), ValueError, ["sft.batch_size", "an integer >= 1"]),
    (dict(reward={"full_batch_size": -1}), ValueError, ["reward.full_batch_size", "an integer >= 0"]),
    (dict(reward={"full_batch_size": 0, "snippet_batch_size": 0}), ValueError,
     ["reward.full_batch_size", "reward.snippet_batch_size", "both 0"]),
    (dict(reward={"max_length": 1}), ValueError, ["reward.max_length", "an integer >= 2"]),
    (dict(reward={"max_length": -3}), ValueError, ["reward.max_length", "an integer >= 2", "got -3"]),
    (dict(reward={"keep": "middle"}), ValueError, ["reward.keep", "one of 'first', 'last'", "'middle'"]),
    (dict(ppo={"temperature": 0.0}), ValueError, ["ppo.temperature", "a finite number > 0"]),
    (dict(ppo={"temperature": -1.0}), ValueError, ["ppo.temperature", "a finite number > 0"]),
    (dict(ppo={"temperature": math.inf}), ValueError, ["ppo.temperature", "a finite number > 0", "got inf"]),
    (dict(ppo={"temperature": math.nan}), ValueError, ["ppo.temperature", "a finite number > 0", "got nan"]),
    (dict(ppo={"top_p": 0.0}), ValueError, ["ppo.top_p", "a finite number in (0, 1]"]),
    (dict(ppo={"top_p": 1.5}), ValueError, ["ppo.top_p", "a finite number in (0, 1]"]),
    (dict(ppo={"top_k": -1}), ValueError, ["ppo.top_k", "an integer >= 0"]),
    (dict(ppo={"learning_rate": 0.0}), ValueError, ["ppo.learning_rate", "a finite number > 0"]),
    (dict(sft={"learning_rate": math.nan}), ValueError, ["sft.learning_rate", "a finite number > 0"]),
    (dict(ppo={"learning_rate": "1e-4"}), TypeError, ["ppo.learning_rate", "a finite number > 0", "'1e-4' (a str)"]),
    (dict(ppo={"mixed_precision": "bf32"}), ValueError,
     ["ppo.mixed_precision", "one of 'auto', 'bf16', 'fp16', 'no'", "'bf32'"]),
    (dict(ppo={"kl_estimator": "k2"}), ValueError, ["ppo.kl_estimator", "one of 'k1', 'k3'"]),
    (dict(ppo={"init_kl_coef": -0.1}), ValueError, ["ppo.init_kl_coef", "a finite number >= 0"]),
    (dict(ppo={"response_min_tokens": 0}), ValueError, ["ppo.response_min_tokens", "an integer >= 1"]),
    (dict(ppo={"response_min_tokens": 9, "response_max_tokens": 5}), ValueError, ["empty or reversed"]),
    (dict(sft={"betas": (0.9, 1.0)}), ValueError, ["sft.betas", "a pair of numbers, each in [0, 1)"]),
    (dict(sft={"block_size": 512}), ValueError, ["sft.block_size=512", "n_positions=256"]),
    (dict(seed=-1), ValueError, ["seed", "--seed", "an integer in [0, 4294967295]", "got -1"]),
    (dict(seed="x"), TypeError, ["seed", "--seed", "an integer in [0, 4294967295]", "'x' (a str)"]),
    (dict(seed=1.5), TypeError, ["seed", "an integer"]),
    (dict(n_positions=0), ValueError, ["n_positions", "--n-positions", "an integer >= 2", "got 0"]),
    (dict(vocab_size=-5), ValueError, ["vocab_size", "--vocab-size", "an integer >= 300", "got -5"]),
    (dict(n_head=3), ValueError, ["n_embd=256", "n_head=3"]),
    (dict(prompt_max_tokens=500), ValueError,
     ["prompt_max_tokens=500", "ppo.response_max_tokens=16", "n_positions=256", "must fit"]),
    (dict(eval_fraction=0.0), ValueError, ["eval_fraction", "a finite number in (0, 1)"]),
    (dict(eval_fraction=1.0), ValueError, ["eval_fraction", "a finite number in (0, 1)"]),
    (dict(dataset_source="web"), ValueError, ["dataset_source", "one of 'offline', 'hub'"]),
    (dict(min_review_chars=-1), ValueError, ["min_review_chars", "an integer >= 0"]),
    (dict(model_name_or_path=3), TypeError, ["model_name_or_path", "a string or None"]),
]


@pytest.mark.parametrize("overrides, error, words", BAD_VALUES, ids=lambda v: str(v)[:60])
def test_bad_config_values_are_refused_with_what_is_allowed(overrides, error, words):
    with pytest.raises(error) as raised:
        get_config("tiny", **overrides)
    message = str(raised.value)
    assert isinstance(raised.value, error) and isinstance(raised.value, CourseError)
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message  # one line: the command line prints it as `error: ...`


@pytest.mark.parametrize("overrides", [
    dict(ppo={"max_minutes": None}), dict(ppo={"max_minutes": 0.01, "top_p": 1.0, "top_k": 5}),
    dict(sft={"max_grad_norm": 0.0, "warmup_steps": 0}), dict(reward={"snippet_batch_size": 0, "keep": "last"}),
    dict(ppo={"kl_estimator": "k3", "missing_eos_penalty": 1.0, "score_clip": 3}), dict(seed=2**32 - 1),
    dict(ppo={"learning_rate": 1}),  # an int where a float is expected is a fine number
])
def test_good_values_pass(overrides):
    get_config("tiny", **overrides)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_is_valid(profile):
    config = get_config(profile)
    config.validate()
    for stage in (config.sft, config.reward, config.ppo):
        stage.validate()


def test_empty_profile_names_the_profiles(monkeypatch):
    with pytest.raises(ValueError) as raised:
        get_config("")
    assert "Unknown profile ''" in str(raised.value) and "Available profiles: gpt2, tiny" in str(raised.value)
    monkeypatch.setenv("RLHF_PROFILE", "")  # an empty variable is not silently the default either
    with pytest.raises(ValueError) as raised:
        get_config()
    assert "RLHF_PROFILE" in str(raised.value) and "Available profiles: gpt2, tiny" in str(raised.value)


def test_stage_configs_validate_on_their_own():
    with pytest.raises(ValueError, match=r"^ppo\.mini_batch_size must be an integer >= 1, got 0"):
        PPOConfig(mini_batch_size=0).validate()
    with pytest.raises(ValueError, match=r"^sft\.max_steps must be an integer >= 1"):
        SFTConfig(max_steps=0).validate()
    with pytest.raises(ValueError, match=r"^reward\.keep must be one of"):
        RewardConfig(keep="all").validate()
    with pytest.raises(ValueError, match=r"^max_steps must be an integer >= 1"):  # no stage: no prefix
        TrainConfig(max_steps=0).validate()
    # PPOTrainer's call: responses must fit in the policy's context beside a prompt
    PPOConfig().validate(256)
    with pytest.raises(ValueError, match="response_max_tokens=60 plus an 8-token prompt exceeds the model's context "
                                         "of 64 tokens"):
        PPOConfig(response_max_tokens=60).validate(64)


def test_finalize_checks_a_config_changed_after_get_config():
    config = get_config("tiny")
    config.ppo.max_steps = 0
    with pytest.raises(ValueError, match="ppo.max_steps"):
        finalize(config)
    with pytest.raises(TypeError, match="ppo must be a PPOConfig"):
        finalize(CourseConfig(ppo={"max_steps": 3}))


@pytest.mark.parametrize("stage", ["stage_tokenizer", "stage_data", "stage_sft", "stage_ppo", "stage_evaluate",
                                   "stage_run"])
def test_stages_check_a_config_changed_after_get_config(stage, artifacts, no_work):
    config = get_config("tiny")
    config.ppo.max_minutes = float("nan")
    with pytest.raises(ValueError, match=r"ppo\.max_minutes must be a finite number > 0 or None, got nan"):
        getattr(pipeline, stage)(config)
    assert not artifacts.exists()


@pytest.mark.parametrize("value, error", [(0, ValueError), (-5, ValueError), ("7", TypeError), (True, TypeError)])
def test_n_prompts_must_be_at_least_one(value, error):
    with pytest.raises(error, match=r"evaluation.n_prompts must be an integer >= 1, got .*\(flag --evaluation.n-prompts\)"):
        check_n_prompts(value)
    assert check_n_prompts(1) == 1


def test_more_prompts_than_held_out_evaluates_all_and_says_so(artifacts, monkeypatch, capsys):
    import json

    import torch

    class Scorer:
        score = None

    seen = {}

    def fake_evaluate(model, reference, tokenizer, prompts, *args, **kwargs):
        seen["prompts"] = prompts
        return {"reward": 0.0}, []

    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (object(), None))
    monkeypatch.setattr(pipeline, "load_reward_model", lambda source, **kwargs: Scorer())
    monkeypatch.setattr(pipeline, "default_judges", lambda config: {})
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [torch.tensor([1, 2])] * 3})
    monkeypatch.setattr(pipeline, "evaluate_policy", fake_evaluate)
    result = pipeline.stage_evaluate(get_config("tiny"), n_prompts=10, policies={"sft": "tiny"})
    assert len(seen["prompts"]) == 3
    assert "note: n_prompts=10 exceeds the 3 held-out prompts: evaluating all 3." in capsys.readouterr().err
    card = json.loads((artifacts / "tiny" / "evaluation" / "run_card_evaluate.json").read_text())
    assert card["n_prompts"] == 3 and result["sft"] == {"reward": 0.0}


def test_stage_evaluate_and_run_refuse_bad_n_prompts_before_loading(artifacts, no_work, monkeypatch):
    monkeypatch.setattr(pipeline, "stage_tokenizer", must_not_run)
    for stage in (pipeline.stage_evaluate, pipeline.stage_run):
        with pytest.raises(ValueError, match="n_prompts must be an integer >= 1, got -5"):
            stage(get_config("tiny"), n_prompts=-5)
    assert not artifacts.exists()


# ----------------------------------------------------------------------------------------------
# The command line: status 2, one `error:` line, nothing started
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["ppo", "--ppo.max-steps", "0"], ["ppo.max_steps", "--ppo.max-steps", "an integer >= 1, got 0"]),
    (["ppo", "--ppo.max-steps", "-3"], ["ppo.max_steps", "an integer >= 1, got -3"]),
    (["ppo", "--ppo.max-minutes", "nan"], ["ppo.max_minutes", "a finite number > 0 or None, got nan"]),
    (["ppo", "--ppo.max-minutes", "-1"], ["ppo.max_minutes", "a finite number > 0 or None, got -1.0"]),
    (["ppo", "--ppo.mini-batch-size", "0"], ["ppo.mini_batch_size", "an integer >= 1"]),
    (["ppo", "--ppo.batch-size", "64", "--ppo.mini-batch-size", "10"], ["divides"]),
    (["ppo", "--ppo.temperature", "inf"], ["ppo.temperature", "a finite number > 0, got inf"]),
    (["sft", "--sft.max-steps", "0"], ["sft.max_steps", "an integer >= 1"]),
    (["reward", "--reward.keep", "middle"], ["reward.keep", "one of 'first', 'last'"]),
    (["data", "--seed", "-1"], ["seed", "an integer in [0, 4294967295], got -1"]),
    (["data", "--prompt-max-tokens", "500"], ["prompt_max_tokens=500", "n_positions=256"]),
    (["evaluate", "--evaluation.n-prompts", "-5"], ["evaluation.n_prompts must be an integer >= 1, got -5", "--evaluation.n-prompts"]),
    (["evaluate", "--evaluation.n-prompts", "0"], ["evaluation.n_prompts must be an integer >= 1, got 0"]),
    (["run", "--evaluation.n-prompts", "0"], ["evaluation.n_prompts must be an integer >= 1, got 0"]),
    (["--profile", "", "data"], ["Unknown profile ''", "Available profiles: gpt2, tiny"]),
])
def test_cli_refuses_bad_values_before_any_work(argv, words, artifacts, no_work, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert not artifacts.exists()  # nothing was written: no stage started


def test_cli_refuses_a_bad_value_for_an_output_dir_stage_without_creating_it(tmp_path, artifacts, capsys):
    out = tmp_path / "ppo-out"
    with pytest.raises(SystemExit) as stop:
        main(["ppo", "--output-dir", str(out), "--ppo.checkpoint-every", "0"])
    assert stop.value.code == 2 and "ppo.checkpoint_every" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# Output locations: checked before training, one error naming the path and the way out
# ----------------------------------------------------------------------------------------------


def test_check_writable_dir_accepts_a_new_dir_and_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert pipeline.check_writable_dir(target) == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []  # the probe file is gone too
    (tmp_path / "c").mkdir()
    pipeline.check_writable_dir(tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_artifacts_root_that_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("RLHF_ARTIFACTS", str(blocker))
    config = get_config("tiny")
    with pytest.raises(pipeline.OutputLocationError) as raised:
        pipeline.check_writable_dir(config.artifacts_dir / "sft_policy")
    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert f"Cannot write to {blocker}/tiny/sft_policy: {blocker} is a file" in message
    assert "Set RLHF_ARTIFACTS to a writable directory" in message


def test_output_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "model.bin"
    blocker.write_text("x")
    with pytest.raises(pipeline.OutputLocationError) as raised:
        pipeline.check_writable_dir(blocker, "Choose another --output-dir.")
    assert str(raised.value) == f"Cannot write to {blocker}: {blocker} is a file. Choose another --output-dir."


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions (the file-in-the-way cases run as root)")
def test_read_only_artifacts_dir(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    monkeypatch.setenv("RLHF_ARTIFACTS", str(root))
    try:
        with pytest.raises(pipeline.OutputLocationError) as raised:
            pipeline.check_writable_dir(get_config("tiny").artifacts_dir / "ppo_policy")
        assert f"{root} is not writable" in str(raised.value) and "RLHF_ARTIFACTS" in str(raised.value)
    finally:
        root.chmod(0o755)


def test_an_unwritable_artifacts_dir_as_root_too(tmp_path, monkeypatch):
    """Root ignores permission bits, so the read-only directory is simulated where the probe file is created
    (the error a read-only mount or a directory without write permission gives)."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(pipeline.OutputLocationError) as raised:
        pipeline.check_writable_dir(get_config("tiny").artifacts_dir / "ppo_policy")
    assert str(raised.value) == (f"Cannot write to {tmp_path / 'tiny' / 'ppo_policy'}: {tmp_path} is not writable "
                                 f"(Permission denied). Set RLHF_ARTIFACTS to a writable directory (the artifacts "
                                 f"root is now {tmp_path}), or choose another --output-dir.")


@pytest.mark.parametrize("stage", ["stage_tokenizer", "stage_data", "stage_sft", "stage_ppo", "stage_evaluate",
                                   "stage_run"])
def test_every_stage_checks_its_output_location_first(stage, tmp_path, monkeypatch, no_work):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RLHF_ARTIFACTS", str(blocker))
    with pytest.raises(pipeline.OutputLocationError, match="RLHF_ARTIFACTS"):
        getattr(pipeline, stage)(get_config("tiny"))


@pytest.mark.parametrize("stage", ["stage_sft", "stage_ppo"])
def test_an_output_dir_that_is_a_file_stops_a_training_stage(stage, tmp_path, artifacts, no_work):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(pipeline.OutputLocationError, match="is a file. Choose another --output-dir"):
        getattr(pipeline, stage)(get_config("tiny"), output_dir=blocker)


def test_run_checks_every_place_it_writes_before_its_first_stage(artifacts, no_work, monkeypatch):
    monkeypatch.setattr(pipeline, "stage_tokenizer", must_not_run)
    (artifacts / "tiny").mkdir(parents=True)
    (artifacts / "tiny" / "evaluation").write_text("in the way")
    with pytest.raises(pipeline.OutputLocationError, match="evaluation is a file"):
        pipeline.stage_run(get_config("tiny"))


@pytest.mark.parametrize("argv, words", [
    (["sft", "--output-dir", "{file}"], ["Cannot write to {file}: {file} is a file", "Choose another --output-dir"]),
    (["ppo", "--output-dir", "{file}"], ["{file} is a file", "--output-dir"]),
    (["reward", "--output-dir", "{file}/sub"], ["{file} is a file, so {file}/sub cannot be created"]),
    (["sft", "--export-to", "{file}"], ["{file} is a file", "Choose another --export-to"]),
    (["reward", "--trl", "--export-to", "{file}"], ["{file} is a file", "--export-to"]),
])
def test_cli_output_locations(argv, words, tmp_path, artifacts, no_work, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as stop:
        main([a.format(file=blocker) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    for word in words:
        assert word.format(file=blocker) in err, err


@pytest.mark.parametrize("argv", [["reward"], ["reward", "--trl"], ["sft"], ["ppo"], ["tokenizer"], ["data"],
                                  ["evaluate"], ["run"]])
def test_cli_artifacts_root_that_is_a_file(argv, tmp_path, monkeypatch, no_work, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RLHF_ARTIFACTS", str(blocker))
    monkeypatch.setattr(pipeline, "stage_run", must_not_run)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Cannot write to {blocker}/tiny") and f"{blocker} is a file" in err
    assert "Set RLHF_ARTIFACTS to a writable directory" in err


# ----------------------------------------------------------------------------------------------
# The gpt2 profile with the hub off: fail fast, naming the offline profile
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def hub_off(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pipeline, "_in_hub_cache", lambda kind, ref: False)  # whatever this machine has cached
    monkeypatch.setattr(pipeline, "hub_reachable", must_not_run)  # the flag says enough: no network probe


@pytest.mark.parametrize("stage, needs", [("tokenizer", "gpt2"), ("data", "stanfordnlp/imdb, gpt2"),
                                          ("sft", "stanfordnlp/imdb, gpt2"), ("reward", "stanfordnlp/imdb"),
                                          ("reward_trl", "stanfordnlp/imdb"), ("ppo", "stanfordnlp/imdb"),
                                          ("evaluate", "stanfordnlp/imdb"), ("run", "stanfordnlp/imdb, gpt2")])
def test_gpt2_profile_offline_names_the_offline_profile(stage, needs, hub_off):
    with pytest.raises(pipeline.HubUnavailableError) as raised:
        pipeline.require_hub(get_config("gpt2"), stage)
    message = str(raised.value)
    assert message.startswith(f"The 'gpt2' profile's {stage} stage needs ")
    for ref in needs.split(", "):
        assert ref in message, (ref, message)
    assert "the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" in message
    # every way out: the offline rows, local directories, the caches, the offline profile
    assert ("--dataset-source offline" in message) == ("stanfordnlp/imdb" in needs)
    assert "local caches" in message and "--profile tiny (get_config('tiny'))" in message


def test_gpt2_offline_with_everything_local_or_cached_passes(hub_off, monkeypatch, tmp_path):
    # local directories (as in test_gpt2_profile) and the offline IMDb: no hub at all
    local = get_config("gpt2", model_name_or_path=str(tmp_path), tokenizer_name_or_path=str(tmp_path),
                       dataset_source="offline")
    for stage in ("tokenizer", "data", "sft", "ppo", "run"):
        pipeline.require_hub(local, stage)
    # a hub id already in the local cache needs no network
    monkeypatch.setattr(pipeline, "_in_hub_cache", lambda kind, ref: True)
    pipeline.require_hub(get_config("gpt2"), "tokenizer")


def test_tiny_never_asks_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(pipeline, "hub_reachable", must_not_run)
    for stage in ("tokenizer", "data", "sft", "reward", "reward_trl", "ppo", "evaluate", "run"):
        pipeline.require_hub(get_config("tiny"), stage)


def test_gpt2_profile_unreachable_hub(monkeypatch):
    monkeypatch.setattr(pipeline, "hub_is_offline", lambda: False)
    monkeypatch.setattr(pipeline, "_in_hub_cache", lambda kind, ref: False)
    monkeypatch.setattr(pipeline, "hub_reachable", lambda: False)
    with pytest.raises(pipeline.HubUnavailableError, match=r"cannot be reached\. Ways out: .*--profile tiny"):
        pipeline.require_hub(get_config("gpt2"), "ppo")
    monkeypatch.setattr(pipeline, "hub_reachable", lambda: True)
    pipeline.require_hub(get_config("gpt2"), "ppo")  # online: nothing to say


@pytest.mark.parametrize("stage", ["tokenizer", "data", "sft", "reward", "ppo", "evaluate", "run"])
def test_cli_gpt2_offline_fails_fast(stage, artifacts, hub_off, no_work, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "stage_run", must_not_run)
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "gpt2", stage])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: The 'gpt2' profile's {stage} stage needs") and "--profile tiny" in err
    assert not artifacts.exists()


# ----------------------------------------------------------------------------------------------
# --allow-changed-settings reaches the training functions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage, function", [("sft", "stage_sft"), ("reward", "stage_reward"),
                                             ("ppo", "stage_ppo")])
@pytest.mark.parametrize("flag", [True, False])
def test_cli_passes_allow_changed_settings(stage, function, flag, tmp_path, artifacts, monkeypatch, capsys):
    seen = {}

    def fake_stage(config, **kwargs):
        seen.update(kwargs)
        return {"dir": str(tmp_path / "out")}

    monkeypatch.setattr(pipeline, function, fake_stage)
    assert main([stage, "--output-dir", str(tmp_path / "out")] + ["--allow-changed-settings"] * flag) == 0
    assert seen["allow_changed_settings"] is flag


def test_stage_sft_passes_allow_changed_settings_to_train_sft(tmp_path, artifacts, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "load_imdb_splits", lambda config: {"train": {"text": []}, "eval": {"text": []}})
    monkeypatch.setattr(pipeline, "get_tokenizer", lambda config: None)
    monkeypatch.setattr(pipeline, "pack_texts", lambda *args, **kwargs: [])
    monkeypatch.setattr(pipeline, "new_policy_model", lambda config, tokenizer: None)
    monkeypatch.setattr(pipeline, "train_sft", lambda *args, **kwargs: seen.update(kwargs) or {})
    pipeline.stage_sft(get_config("tiny"), output_dir=tmp_path / "sft", allow_changed_settings=True)
    assert seen["allow_changed_settings"] is True


def test_stage_ppo_passes_allow_changed_settings_to_maybe_resume(tmp_path, artifacts, monkeypatch):
    seen = {}

    class Scorer:
        score = None

        def check_same_tokenizer(self, tokenizer):
            pass

    class Trainer:
        state = {"step": 0, "train_seconds": 0.0}
        interrupted, already_finished = False, False

        def __init__(self, *args, **kwargs):
            pass

        def maybe_resume(self, **kwargs):
            seen.update(kwargs)
            return False

        def train(self, progress=True):
            return []

        def save(self, output_dir):
            pass

    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (object(), None))
    monkeypatch.setattr(pipeline, "load_reward_model", lambda source, **kwargs: Scorer())
    monkeypatch.setattr(pipeline, "build_dataset", lambda *args, **kwargs: {"input_ids": [[1, 2]] * 64})
    monkeypatch.setattr(pipeline, "PolicyWithValueHead", lambda lm: lm)
    monkeypatch.setattr(pipeline, "PPOTrainer", Trainer)
    pipeline.stage_ppo(get_config("tiny"), output_dir=tmp_path / "ppo", allow_changed_settings=True)
    assert seen == {"allow_changed_settings": True}


def test_the_training_functions_take_allow_changed_settings():
    """The resume check lives in the training functions; the stages and the CLI only pass the choice on."""
    from rlhf_helpers.policy.sft import train_sft
    from rlhf_helpers.ppo.trainer import PPOTrainer
    from rlhf_helpers.pipeline import stage_reward
    from rlhf_helpers.reward.training import train_reward_model

    for function in (train_sft, train_reward_model, stage_reward, PPOTrainer.maybe_resume):
        parameter = inspect.signature(function).parameters.get("allow_changed_settings")
        assert parameter is not None and parameter.default is False, function.__qualname__


@pytest.mark.parametrize("what", ["nothing", "only a checkpoint"])
def test_evaluate_says_up_front_that_ppo_is_skipped(what, artifacts, monkeypatch, capsys):
    """`evaluate` before any `ppo` (or after a killed first run) evaluates SFT and says why PPO was skipped."""
    import json

    import torch

    class Scorer:
        score = None

    evaluated = []
    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (object(), None))
    monkeypatch.setattr(pipeline, "load_reward_model", lambda source, **kwargs: Scorer())
    monkeypatch.setattr(pipeline, "default_judges", lambda config: {})
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [torch.tensor([1, 2])] * 3})
    monkeypatch.setattr(pipeline, "evaluate_policy", lambda *a, **k: (evaluated.append(1) or {"reward": 0.0}, []))
    ppo_dir = artifacts / "tiny" / "ppo_policy"
    if what == "only a checkpoint":
        (ppo_dir / "checkpoint").mkdir(parents=True)
        (ppo_dir / "checkpoint" / "trainer_state.json").write_text('{"step": 20}')
    result = pipeline.stage_evaluate(get_config("tiny"), n_prompts=3)
    why = (f"{ppo_dir} holds only a training checkpoint: its run stopped before it saved the final policy. Run "
           "`python -m rlhf_helpers ppo` again to resume and finish it, then evaluate." if what != "nothing" else
           f"no trained policy in {ppo_dir}: run `python -m rlhf_helpers ppo` first, then evaluate.")
    assert f"note: ppo skipped: {why}" in capsys.readouterr().err
    assert result["skipped"] == {"ppo": why} and "ppo" not in result and len(evaluated) == 1
    card = json.loads((artifacts / "tiny" / "evaluation" / "run_card_evaluate.json").read_text())
    assert card["skipped"] == {"ppo": why}


@pytest.mark.parametrize("error", [
    "SettingsChangedError", "CheckpointError", "RunLockedError", "NonFiniteLossError", "BadValueError",
])
def test_cli_prints_a_refusal_without_a_traceback(error, tmp_path, artifacts, monkeypatch, capsys):
    """A stage's own refusal (its message says what to do) is printed as one error line, exit status 1;
    RLHF_TRACEBACK=1 shows the traceback instead."""
    from rlhf_helpers.core import checkpoint, errors, lock

    kinds = {"SettingsChangedError": checkpoint.SettingsChangedError, "CheckpointError": checkpoint.CheckpointError,
             "RunLockedError": lock.RunLockedError, "NonFiniteLossError": errors.NonFiniteLossError,
             "BadValueError": errors.BadValueError}

    def refusing_stage(config, **kwargs):
        raise kinds[error]("what is wrong, and what to do")

    monkeypatch.setattr(pipeline, "stage_sft", refusing_stage)
    monkeypatch.delenv("RLHF_TRACEBACK", raising=False)
    assert main(["sft", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == "error: what is wrong, and what to do\n(set RLHF_TRACEBACK=1 for the traceback)\n"
    monkeypatch.setenv("RLHF_TRACEBACK", "1")
    with pytest.raises(kinds[error], match="what is wrong"):
        main(["sft", "--output-dir", str(tmp_path / "out")])


class _InterruptedTrainer:
    """Stands in for `PPOTrainer`: a `train` that a SIGINT ended after 3 steps (its checkpoint written)."""

    def __init__(self, *args, **kwargs):
        self.state = {"step": 3, "train_seconds": 4.0}
        self.interrupted, self.already_finished, self.signal = False, False, None
        self.message, self.saved = None, False

    def maybe_resume(self, allow_changed_settings=False):
        return False

    def train(self, progress=True):
        self.interrupted, self.signal = True, "SIGINT"
        self.message = "PPO interrupted (SIGINT) at step 3: checkpoint saved in D; run the same command again to resume."
        return [{"score": 0.1, "kl": 0.0}]

    def save(self, directory):
        raise AssertionError("an interrupted PPO run must not save a final policy")


def test_an_interrupted_ppo_stage_saves_no_final_policy_and_run_stops(artifacts, monkeypatch):
    """A final policy beside a half-trained checkpoint would be evaluated as if PPO had finished."""
    class Scorer:
        def score(self, texts):
            return [0.0] * len(texts)

        def check_same_tokenizer(self, tokenizer):
            pass

    monkeypatch.setattr(pipeline, "load_policy", lambda source, **kwargs: (torch.nn.Linear(1, 1), None))
    monkeypatch.setattr(pipeline, "load_reward_model", lambda source, **kwargs: Scorer())
    monkeypatch.setattr(pipeline, "build_dataset", lambda *a, **k: {"input_ids": [[1, 2]] * 64})
    monkeypatch.setattr(pipeline, "PolicyWithValueHead", lambda lm: lm)
    monkeypatch.setattr(pipeline, "PPOTrainer", _InterruptedTrainer)
    result = pipeline.stage_ppo(get_config("tiny"))
    assert result["interrupted"] is True and result["signal"] == "SIGINT" and result["steps"] == 3
    assert "run the same command again" in result["message"]

    monkeypatch.setattr(pipeline, "stage_tokenizer", lambda config: {})
    monkeypatch.setattr(pipeline, "stage_data", lambda config: {})
    monkeypatch.setattr(pipeline, "stage_evaluate", must_not_run)
    assert pipeline.stage_run(get_config("tiny")) == "Run stopped: " + result["message"]


@pytest.mark.parametrize("error", [ValueError, TypeError, FloatingPointError, KeyError])
def test_cli_keeps_the_traceback_of_a_bug(error, tmp_path, artifacts, monkeypatch):
    """Only the package's refusals (`CourseError`) become one `error:` line; any other exception is a bug and
    propagates with its traceback, even a plain ValueError."""
    def buggy_stage(config, **kwargs):
        raise error("a bug")

    monkeypatch.setattr(pipeline, "stage_sft", buggy_stage)
    monkeypatch.delenv("RLHF_TRACEBACK", raising=False)
    with pytest.raises(error, match="a bug"):
        main(["sft", "--output-dir", str(tmp_path / "out")])
