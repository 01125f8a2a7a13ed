"""Fault injection for the resumable stages: signals, kill -9, torn checkpoints, concurrent runs, changed settings,
finished runs run again. Each case asserts the message a user sees and that nothing already trained is lost.

The SIGINT / SIGTERM / kill -9 cases run a real subprocess (`SCRIPT`: a tiny random GPT-2 trained by `train_sft`
on random blocks, ~0.25 s a step, announcing each step); the rest run in this process. Everything is float32
and tiny (a 1-layer, 16-wide GPT-2 over a 300-token BPE).
"""

import copy
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.config import PPOConfig, SFTConfig, get_config
from rlhf_helpers.core.checkpoint import STATE_FILE, CheckpointError, SettingsChangedError
from rlhf_helpers.core.lock import LOCK_NAME, RunLockedError
from rlhf_helpers.data.tokenizer import train_bpe_tokenizer
from rlhf_helpers.policy.sft import train_sft
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.value_head import PolicyWithValueHead

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    "This movie was great, the acting was wonderful and the story was moving.",
    "This film was terrible. The plot made no sense and the actors were bored.",
    "A quiet, funny and warm story about a family and their old house.",
] * 4
MAX_STEPS = 10


def make_tokenizer():
    return train_bpe_tokenizer(SENTENCES, vocab_size=300)


def tiny_gpt2(vocab_size: int, n_positions: int = 16) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=16, n_layer=1,
                                      n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0,
                                      eos_token_id=0, pad_token_id=1))


def random_blocks(vocab_size: int) -> torch.Tensor:
    return torch.randint(2, vocab_size, (32, 16), generator=torch.Generator().manual_seed(0))


def sft_config(**overrides) -> SFTConfig:
    settings = dict(block_size=16, batch_size=4, max_steps=MAX_STEPS, warmup_steps=1, eval_every=100, log_every=1,
                    checkpoint_every=100, eval_blocks=4, mixed_precision="no")
    return SFTConfig(**{**settings, **overrides})


def count_steps(model, pause: float = 0.0, announce: bool = False) -> list:
    """Count (and optionally announce, and slow down) the training forward passes of `model`."""
    started = []

    def hook(module, args):
        if module.training:
            if announce:
                print(f"step {len(started)} started", flush=True)
            started.append(1)
            time.sleep(pause)

    model.register_forward_pre_hook(hook)
    return started


def run_sft(tokenizer, output_dir, config=None, **kwargs):
    """`train_sft` on the tiny model in this process; returns (metrics, model, steps trained in this call)."""
    model = tiny_gpt2(len(tokenizer))
    started = count_steps(model)
    blocks = random_blocks(len(tokenizer))
    metrics = train_sft(model, tokenizer, blocks, blocks[:4], config or sft_config(), output_dir, progress=False,
                        **kwargs)
    return metrics, model, len(started)


SCRIPT = """
import importlib.util, json, sys
import torch
from transformers import PreTrainedTokenizerFast

spec = importlib.util.spec_from_file_location("faults", {test_file!r})
faults = importlib.util.module_from_spec(spec)
spec.loader.exec_module(faults)
torch.set_num_threads(1)
out, checkpoint_every = sys.argv[1], int(sys.argv[2])
tokenizer = PreTrainedTokenizerFast.from_pretrained({tokenizer_dir!r})
model = faults.tiny_gpt2(len(tokenizer))
faults.count_steps(model, pause=0.25, announce=True)
blocks = faults.random_blocks(len(tokenizer))
result = faults.train_sft(model, tokenizer, blocks, blocks[:4], faults.sft_config(checkpoint_every=checkpoint_every),
                          out, progress=False)
print("RESULT " + json.dumps({{k: v for k, v in result.items() if k not in ("history", "losses")}}), flush=True)
"""


def signal_when_announced(procs: dict, targets: dict, timeout: float = 120.0) -> dict:
    """Watch every process's stdout at once; send ``targets[name] = (signal, step)`` as soon as that process
    announces that step started (so none runs on while another is being watched). Returns the stdout read."""
    selector = selectors.DefaultSelector()
    for name, proc in procs.items():
        selector.register(proc.stdout.fileno(), selectors.EVENT_READ, name)
    read, waiting, deadline = {name: "" for name in procs}, set(procs), time.monotonic() + timeout
    while waiting and selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            name, data = key.data, os.read(key.fd, 65536).decode()
            read[name] += data
            sig, step = targets[name]
            if not data or f"step {step} started\n" in read[name]:  # announced (or ended early: fails below)
                if data:
                    procs[name].send_signal(sig)
                    waiting.discard(name)
                selector.unregister(key.fd)
    for name in waiting:
        procs[name].kill()
    assert not waiting, {name: (read[name], procs[name].stderr.read()) for name in waiting}
    return read


def state_of(output_dir) -> dict:
    return json.loads((Path(output_dir) / "checkpoint" / STATE_FILE).read_text())


def digests(directory) -> dict:
    """Hashes of the files directly in `directory` (the finished model, tokenizer, run card)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(directory).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def straight(tokenizer, tmp_path_factory):
    """An uninterrupted run: the weights every resumed run must end with."""
    metrics, model, steps = run_sft(tokenizer, tmp_path_factory.mktemp("straight"))
    assert metrics["steps"] == steps == MAX_STEPS
    return model


# ----------------------------------------------------------------------------------------------
# A real process: SIGINT and SIGTERM save at the end of the step; kill -9 resumes from the last checkpoint
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_signals_and_kill_9_of_a_real_run_lose_nothing(tokenizer, straight, tmp_path, capsys):
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(test_file=__file__, tokenizer_dir=str(tmp_path / "tokenizer")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # name: (signal, checkpoint_every, the step whose start triggers it)
    cases = {"SIGINT": (signal.SIGINT, 100, 3), "SIGTERM": (signal.SIGTERM, 100, 3), "SIGKILL": (signal.SIGKILL, 2, 5)}
    procs = {name: subprocess.Popen([sys.executable, str(script), str(tmp_path / name), str(every)], cwd=REPO,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (_, every, _) in cases.items()}  # all three at once: their start-up overlaps
    before = signal_when_announced(procs, {name: (sig, step) for name, (sig, _, step) in cases.items()})
    for name, (sig, every, announced) in cases.items():
        out, err = (text.decode() for text in procs[name].communicate(timeout=60))
        out = before[name] + out
        run_dir = tmp_path / name
        checkpoint_step = state_of(run_dir)["step"]
        if sig == signal.SIGKILL:  # killed in (or after) step 5: the step-4 checkpoint (or a later one) is there
            assert procs[name].returncode == -signal.SIGKILL
            assert checkpoint_step >= 4 and checkpoint_step % every == 0
            assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == procs[name].pid  # left behind
        else:  # a clean stop after the step in progress: the result says so, the lock is released, no final model
            assert procs[name].returncode == 0, err
            assert announced + 1 <= checkpoint_step < MAX_STEPS
            result = json.loads(out.split("RESULT ", 1)[1])
            assert result == {"steps": checkpoint_step, "interrupted": True, "signal": name, "message":
                              f"SFT interrupted ({name}) at step {checkpoint_step}: checkpoint saved in "
                              f"{run_dir / 'checkpoint'}; run the same command again to resume."}
            assert f"{name} received: finishing the current step" in err
            assert not (run_dir / LOCK_NAME).exists() and not (run_dir / "config.json").exists()

        capsys.readouterr()
        metrics, resumed, steps = run_sft(tokenizer, run_dir)  # "run the same command again"
        printed = capsys.readouterr().out
        assert steps == MAX_STEPS - checkpoint_step and metrics["steps"] == MAX_STEPS
        assert f"Resuming SFT from step {checkpoint_step}" in printed
        if sig == signal.SIGKILL:
            assert f"took over the stale lock {run_dir / LOCK_NAME} (pid {procs[name].pid}" in printed
        assert not (run_dir / LOCK_NAME).exists()
        # the first steps ran in another process with one thread: equal up to float summation order
        for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------------------------
# Torn checkpoints: one message naming the file and the way out; nothing deleted
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_sft(tokenizer, tmp_path_factory):
    """A finished 4-step SFT run (checkpoint + final model files)."""
    directory = tmp_path_factory.mktemp("finished_sft")
    run_sft(tokenizer, directory, sft_config(max_steps=4, checkpoint_every=2))
    return directory


def tear(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(256))


@pytest.mark.parametrize("name, how", [("pytorch_model.bin", "truncated"), ("optimizer.bin", "truncated"),
                                       (STATE_FILE, "truncated"), ("pytorch_model.bin", "random bytes"),
                                       ("random_states_0.pkl", "truncated")])
def test_a_torn_checkpoint_file_is_named_with_the_way_out(name, how, tokenizer, finished_sft, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_sft, run_dir)
    torn = run_dir / "checkpoint" / name
    tear(torn, how)
    before = digests(run_dir)
    with pytest.raises(CheckpointError) as caught:
        run_sft(tokenizer, run_dir, sft_config(max_steps=6, checkpoint_every=2))
    message = str(caught.value)
    assert f"The checkpoint file {torn} is damaged" in message
    assert "--no-resume" in message and f"delete {run_dir / 'checkpoint'}" in message
    assert digests(run_dir) == before and torn.exists()  # the finished model and the checkpoint are untouched
    assert not (run_dir / LOCK_NAME).exists()


def test_no_resume_is_the_way_out_of_a_torn_checkpoint(tokenizer, finished_sft, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_sft, run_dir)
    tear(run_dir / "checkpoint" / "optimizer.bin", "truncated")
    metrics, _, steps = run_sft(tokenizer, run_dir, sft_config(max_steps=4, checkpoint_every=2), resume=False)
    assert steps == 4 and state_of(run_dir)["step"] == 4
    _, _, steps = run_sft(tokenizer, run_dir, sft_config(max_steps=6, checkpoint_every=2))  # and it resumes again
    assert steps == 2


# ----------------------------------------------------------------------------------------------
# Finished runs run again: reported, nothing redone, nothing rewritten
# ----------------------------------------------------------------------------------------------


def test_a_finished_sft_run_again_reports_it_and_rewrites_nothing(tokenizer, finished_sft, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_sft, run_dir)
    before = digests(run_dir)
    capsys.readouterr()
    metrics, _, steps = run_sft(tokenizer, run_dir, sft_config(max_steps=4, checkpoint_every=2))
    expected = (f"SFT already finished (step 4 of 4): the checkpoint in {run_dir / 'checkpoint'} reached max_steps, "
                "nothing to train. Raise --sft.max-steps to train further, or pass --no-resume to start afresh.")
    assert steps == 0 and metrics["already_finished"] and metrics["steps"] == 4
    assert metrics["message"] == expected and expected in capsys.readouterr().out
    assert digests(run_dir) == before


# ----------------------------------------------------------------------------------------------
# Concurrent runs: the lock file
# ----------------------------------------------------------------------------------------------


def write_lock(directory: Path, pid: int, host: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "earlier",
                                "command": "python -m rlhf_helpers sft"}))
    return lock


@pytest.fixture
def live_pid():
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def test_a_second_run_into_a_locked_directory_fails_before_writing(tokenizer, live_pid, tmp_path):
    lock = write_lock(tmp_path / "run", live_pid)
    with pytest.raises(RunLockedError, match=f"pid {live_pid} on .* holds the lock file {lock}"):
        run_sft(tokenizer, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_NAME]  # nothing written, the lock kept
    other_host = write_lock(tmp_path / "elsewhere", 1, host="another-host")  # can't be checked: respected
    with pytest.raises(RunLockedError, match="pid 1 on another-host"):
        run_sft(tokenizer, tmp_path / "elsewhere")
    assert other_host.exists()


def test_a_stale_lock_is_taken_over_with_a_note(tokenizer, tmp_path, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = write_lock(tmp_path / "run", gone.pid)
    metrics, _, steps = run_sft(tokenizer, tmp_path / "run", sft_config(max_steps=2))
    assert steps == 2 and f"took over the stale lock {lock} (pid {gone.pid}" in capsys.readouterr().out
    assert not lock.exists()


# ----------------------------------------------------------------------------------------------
# Resuming with other settings: refused unless allowed, then recorded
# ----------------------------------------------------------------------------------------------


def test_a_resume_with_other_settings_is_refused_unless_allowed(tokenizer, tmp_path):
    run_dir = tmp_path / "run"
    run_sft(tokenizer, run_dir, sft_config(max_steps=4), stop_after=2)
    for change, line in [(dict(seed=1), "seed: 0 (saved) vs 1 (now)"),
                         (dict(learning_rate=0.01), "learning_rate: 0.001 (saved) vs 0.01 (now)")]:
        with pytest.raises(SettingsChangedError) as caught:
            run_sft(tokenizer, run_dir, sft_config(max_steps=4, **change))
        assert line in str(caught.value) and "--allow-changed-settings" in str(caught.value)
        assert "--no-resume" in str(caught.value) and not (run_dir / LOCK_NAME).exists()
    assert state_of(run_dir)["step"] == 2  # nothing trained by the refused runs
    # budget fields may change freely; other fields only when allowed, and then both are recorded
    metrics, _, steps = run_sft(tokenizer, run_dir, sft_config(max_steps=5, checkpoint_every=1, eval_every=1,
                                                                 seed=1), allow_changed_settings=True)
    assert steps == 3 and metrics["settings_changes"] == [
        {"step": 2, "changed": {"seed": {"saved": 0, "now": 1}}},
        {"step": 2, "budget": {"max_steps": {"saved": 4, "now": 5}}},  # allowed without asking, but recorded
    ]
    card = json.loads((run_dir / "run_card_sft.json").read_text())
    assert card["metrics"]["settings_changes"] == metrics["settings_changes"]
    assert state_of(run_dir)["settings"]["seed"] == 1


def test_a_resume_with_a_new_budget_says_so_and_records_it(tokenizer, tmp_path, capsys):
    """Extending a run is allowed (no flag needed), but not silent: the schedule runs over the new max_steps."""
    run_dir = tmp_path / "run"
    run_sft(tokenizer, run_dir, sft_config(max_steps=4))
    capsys.readouterr()
    metrics, _, steps = run_sft(tokenizer, run_dir, sft_config(max_steps=6))
    printed = capsys.readouterr().out
    assert steps == 2 and metrics["steps"] == 6
    assert ("Resuming at step 4 with a new budget: max_steps 4 -> 6. The learning-rate schedule now runs over the new "
            "max_steps (from this step on). Recorded in the run card (settings_changes).") in printed
    card = json.loads((run_dir / "run_card_sft.json").read_text())
    assert card["metrics"]["settings_changes"] == [{"step": 4, "budget": {"max_steps": {"saved": 4, "now": 6}}}]
    assert state_of(run_dir)["budget"] == {"max_steps": 6, "max_minutes": None}


# ----------------------------------------------------------------------------------------------
# PPO: a finished run run again, changed settings, a locked directory, a torn state
# ----------------------------------------------------------------------------------------------


def letter_reward(texts):
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


def make_trainer(tokenizer, out, **overrides):
    settings = dict(max_steps=2, max_minutes=None, batch_size=4, mini_batch_size=2, ppo_epochs=1, learning_rate=1e-3,
                    response_min_tokens=2, response_max_tokens=4, checkpoint_every=1, seed=0, mixed_precision="no")
    lm = tiny_gpt2(len(tokenizer), n_positions=32).eval()
    prompts = [tokenizer.encode(t) for t in ("The movie was", "This film", "A quiet", "The plot")]
    return PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), lm, tokenizer, letter_reward, prompts,
                      PPOConfig(**{**settings, **overrides}), out)


@pytest.fixture(scope="module")
def finished_ppo(tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("finished_ppo")
    trainer = make_trainer(tokenizer, directory)
    trainer.train(progress=False)
    trainer.save()
    return directory


def test_a_finished_ppo_run_again_reports_it_and_redoes_nothing(tokenizer, finished_ppo, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_ppo, run_dir)
    before = digests(run_dir)
    trainer = make_trainer(tokenizer, run_dir)
    trainer.reward_fn = None  # a step would call it
    assert trainer.maybe_resume()
    capsys.readouterr()
    history = trainer.train(progress=False)
    assert trainer.already_finished and not trainer.interrupted and len(history) == 2
    assert trainer.message.startswith("PPO already finished (step 2 of 2)")
    assert trainer.message in capsys.readouterr().out
    trainer.save()
    assert digests(run_dir) == before and not (run_dir / LOCK_NAME).exists()


def test_ppo_refuses_other_settings_unless_allowed(tokenizer, finished_ppo, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_ppo, run_dir)
    with pytest.raises(SettingsChangedError, match=r"learning_rate: 0.001 \(saved\) vs 0.002 \(now\)"):
        make_trainer(tokenizer, run_dir, learning_rate=2e-3).maybe_resume()
    assert make_trainer(tokenizer, run_dir, max_steps=3).maybe_resume()  # a budget field: free
    trainer = make_trainer(tokenizer, run_dir, learning_rate=2e-3, max_steps=3)
    assert trainer.maybe_resume(allow_changed_settings=True)
    trainer.train(progress=False)
    assert trainer.state["step"] == 3 and trainer.state["settings_changes"][0]["changed"] == {
        "learning_rate": {"saved": 0.001, "now": 0.002}}


def test_ppo_into_a_locked_directory_fails_before_writing(tokenizer, live_pid, tmp_path):
    lock = write_lock(tmp_path / "run", live_pid)
    trainer = make_trainer(tokenizer, tmp_path / "run")
    for attempt in (trainer.maybe_resume, lambda: trainer.train(progress=False)):
        with pytest.raises(RunLockedError, match=f"pid {live_pid} on .* holds the lock file {lock}"):
            attempt()
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_NAME] and trainer.state["step"] == 0


def test_ppo_names_a_torn_state_file(tokenizer, finished_ppo, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_ppo, run_dir)
    tear(run_dir / "checkpoint" / STATE_FILE, "truncated")
    with pytest.raises(CheckpointError, match=f"The checkpoint file {run_dir / 'checkpoint' / STATE_FILE} is damaged"):
        make_trainer(tokenizer, run_dir).maybe_resume()


# ----------------------------------------------------------------------------------------------
# The reward stage run again: its normalised model is kept, nothing is normalised again
# ----------------------------------------------------------------------------------------------


def test_a_finished_reward_stage_run_again_returns_its_summary(tokenizer, tmp_path, monkeypatch, capsys):
    import rlhf_helpers.pipeline as reward_training  # the reward stage lives with the others

    good, bad = SENTENCES[0], SENTENCES[1]
    pairs = Dataset.from_dict({"chosen": [good] * 8, "rejected": [bad] * 8, "view": ["full", "snippet"] * 4})
    heldout = {"full": Dataset.from_dict({"chosen": [good] * 2, "rejected": [bad] * 2})}
    monkeypatch.setattr(reward_training, "load_policy", lambda source: (tiny_gpt2(len(tokenizer)), tokenizer))
    monkeypatch.setattr(reward_training, "course_pairs", lambda config: (pairs, heldout))
    monkeypatch.setattr(reward_training, "sample_reference_texts", lambda *a, **k: SENTENCES[:6])
    config = get_config("tiny", reward=dict(max_steps=3, full_batch_size=2, snippet_batch_size=2, max_length=16,
                                            warmup_steps=1, eval_pairs=2, mixed_precision="no"))
    first = reward_training.stage_reward(config, output_dir=tmp_path / "rm", progress=False)
    assert first["steps"] == 3 and first["normalisation"]["n_texts"] == 6
    before = digests(tmp_path / "rm")

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished reward stage must not normalise again")

    monkeypatch.setattr(reward_training, "sample_reference_texts", must_not_run)
    capsys.readouterr()
    again = reward_training.stage_reward(config, output_dir=tmp_path / "rm", progress=False)
    assert again["already_finished"] and again["normalisation"] == first["normalisation"]
    assert again["message"] == (f"The reward model in {tmp_path / 'rm'} is already trained (step 3) and normalised: "
                                "nothing to do. Raise --reward.max-steps to train further, or pass --no-resume to "
                                "start afresh.")
    assert again["message"] in capsys.readouterr().out
    assert digests(tmp_path / "rm") == before  # the normalised model was not overwritten by the checkpoint's
