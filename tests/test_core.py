"""What `rlhf_helpers.core` and `rlhf_helpers.config` add: checkpoints that survive a save cut short, the one
training loop (a finished run re-run, a run resumed from a half-swapped checkpoint), padding, and stage configs.

Everything is tiny: a linear model for the loop, a 1-layer, 16-wide random GPT-2 over a 300-token BPE for SFT.
Resume equivalence of SFT itself (same losses and perplexity as an uninterrupted run) is tested in test_sft.py.
"""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.config import PROFILES, STAGES, PPOConfig, SFTConfig, SupervisedConfig, get_config
from rlhf_helpers.core.checkpoint import STATE_FILE, complete_checkpoint, load_checkpoint, save_checkpoint
from rlhf_helpers.core.tensors import last_token_index, left_pad, right_pad
from rlhf_helpers.core.training import make_optimizer, train_loop
from rlhf_helpers.data.tokenizer import train_bpe_tokenizer
from rlhf_helpers.policy.sft import train_sft

# ----------------------------------------------------------------------------------------------
# The loop on a toy problem: a linear model, batches a pure function of the step
# ----------------------------------------------------------------------------------------------

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def linear_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def loss_fn(model, step, shard, device):
    rows = shard.take(torch.arange((step * 8) % 64, (step * 8) % 64 + 8))
    prediction = model(X[rows].to(device)).squeeze(-1)
    return torch.nn.functional.mse_loss(prediction, Y[rows].to(device)), {}


def evaluate(model):
    with torch.no_grad():
        return {"eval_loss": torch.nn.functional.mse_loss(model(X).squeeze(-1), Y).item()}


def loop_config(**overrides):
    # float32 like the other training tests: exact comparisons, and one process has one accelerate state
    settings = dict(max_steps=6, warmup_steps=1, learning_rate=0.05, eval_every=100, log_every=1, checkpoint_every=2,
                    mixed_precision="no")
    return SupervisedConfig(**{**settings, **overrides})


def loop_accelerator():
    """An accelerator holding what `train_loop` checkpoints: model, optimiser, and the (registered) schedule."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="no")
    model = linear_model()
    optimizer = make_optimizer(model, loop_config())
    accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    return accelerator


def run(output_dir, steps_seen=None, **kwargs):
    """`train_loop` on the toy problem; the steps it trains are appended to `steps_seen`."""
    def recording_loss_fn(model, step, shard, device):
        if steps_seen is not None:
            steps_seen.append(step)
        return loss_fn(model, step, shard, device)

    return train_loop(linear_model(), loop_config(), output_dir, recording_loss_fn, evaluate, name="toy",
                      batch_rows=8, progress=False, **kwargs)


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 6-step run: the reference every resumed run must reproduce."""
    result = run(tmp_path_factory.mktemp("straight"))
    assert not result.interrupted and result.state["step"] == 6
    return result


# ----------------------------------------------------------------------------------------------
# core.checkpoint: a save whose swap was cut short
# ----------------------------------------------------------------------------------------------


def test_no_checkpoint_is_none(tmp_path):
    assert complete_checkpoint(tmp_path / "checkpoint") is None
    (tmp_path / "checkpoint.tmp").mkdir()  # a save killed before its state file was written: incomplete
    assert complete_checkpoint(tmp_path / "checkpoint") is None


def cut_short(output_dir, leave: str):
    """Leave the last complete checkpoint only under ``leave`` ("checkpoint.tmp" or "checkpoint.old"), as a save
    killed in the middle of its swap can."""
    checkpoint = output_dir / "checkpoint"
    assert (checkpoint / STATE_FILE).exists()
    checkpoint.rename(output_dir / leave)
    assert not checkpoint.exists()


@pytest.mark.parametrize("leave", ["checkpoint.tmp", "checkpoint.old"])
def test_a_swap_cut_short_is_found_and_resumed(leave, straight, tmp_path):
    killed = run(tmp_path, stop_after=3)
    assert killed.interrupted and killed.state["step"] == 3
    cut_short(tmp_path, leave)
    assert complete_checkpoint(tmp_path / "checkpoint") == tmp_path / leave

    steps_seen = []
    resumed = run(tmp_path, steps_seen)
    assert steps_seen == [3, 4, 5]  # continued from step 3, not started afresh
    assert not resumed.interrupted and not resumed.already_finished and resumed.state["step"] == 6
    assert resumed.state["train_log"][:3] == killed.state["train_log"]
    assert [r["loss"] for r in resumed.state["train_log"]] == pytest.approx(
        [r["loss"] for r in straight.state["train_log"]], abs=1e-6)
    for a, b in zip(weights(straight.model), weights(resumed.model)):
        torch.testing.assert_close(a, b)
    # the next saves put the checkpoint back under its own name
    assert complete_checkpoint(tmp_path / "checkpoint") == tmp_path / "checkpoint"


def test_a_finished_tmp_is_newer_than_the_old_one(tmp_path):
    """Killed between ``checkpoint -> checkpoint.old`` and ``checkpoint.tmp -> checkpoint``: both are complete,
    and the new one (tmp) must win."""
    from accelerate import Accelerator

    run(tmp_path / "new", stop_after=3)
    run(tmp_path / "old", stop_after=2)
    (tmp_path / "new" / "checkpoint").rename(tmp_path / "checkpoint.tmp")
    (tmp_path / "old" / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert complete_checkpoint(tmp_path / "checkpoint") == tmp_path / "checkpoint.tmp"

    accelerator = loop_accelerator()
    assert load_checkpoint(accelerator, tmp_path / "checkpoint")["step"] == 3


def test_a_save_killed_after_resuming_from_tmp_still_leaves_a_checkpoint(tmp_path, monkeypatch):
    """Resumed from ``checkpoint.tmp`` (the only complete copy), then killed while writing the next checkpoint:
    the step-3 checkpoint must survive (the next save must not start by deleting it)."""
    from accelerate import Accelerator

    run(tmp_path, stop_after=3)
    cut_short(tmp_path, "checkpoint.tmp")
    accelerator = loop_accelerator()
    state = load_checkpoint(accelerator, tmp_path / "checkpoint")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies while accelerate writes the new checkpoint

    monkeypatch.setattr(accelerator, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, tmp_path / "checkpoint", {**state, "step": 4})
    found = complete_checkpoint(tmp_path / "checkpoint")
    assert found is not None and json.loads((found / STATE_FILE).read_text())["step"] == 3


# ----------------------------------------------------------------------------------------------
# core.training.train_loop through train_sft: a finished run, run again
# ----------------------------------------------------------------------------------------------

SENTENCES = [
    "This movie was great, the acting was wonderful and the story was moving.",
    "This film was terrible. The plot made no sense and the actors were bored.",
    "A quiet, funny and warm story about a family and their old house.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(SENTENCES, vocab_size=300)


def tiny_gpt2(tokenizer):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                      resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0, eos_token_id=0))


def test_rerunning_a_finished_sft_run_trains_nothing_and_keeps_the_model(tokenizer, tmp_path):
    blocks = torch.randint(2, len(tokenizer), (32, 16), generator=torch.Generator().manual_seed(0))
    config = SFTConfig(block_size=16, batch_size=4, max_steps=4, warmup_steps=1, eval_every=2, checkpoint_every=2,
                       eval_blocks=4, mixed_precision="no")
    first = train_sft(tiny_gpt2(tokenizer), tokenizer, blocks, blocks[:4], config, tmp_path, progress=False)
    assert first["steps"] == 4 and not first["already_finished"]
    trained = GPT2LMHeadModel.from_pretrained(tmp_path).state_dict()

    again = train_sft(tiny_gpt2(tokenizer), tokenizer, blocks, blocks[:4], config, tmp_path, progress=False)
    assert again["already_finished"] and again["steps"] == 4
    assert again["losses"] == first["losses"] and again["history"] == first["history"]
    assert again["final_eval_perplexity"] == first["final_eval_perplexity"]
    # the files written again are the trained weights, not the fresh model handed in
    for name, tensor in GPT2LMHeadModel.from_pretrained(tmp_path).state_dict().items():
        torch.testing.assert_close(tensor, trained[name], msg=name)


# ----------------------------------------------------------------------------------------------
# core.tensors
# ----------------------------------------------------------------------------------------------


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8], [1, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_right_pad_left_aligns_rows():
    ids, mask = right_pad([[5, 6, 7], [8], [9, 10]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [9, 10, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    # the pad id may be a real token id (hub GPT-2 pads with EOS): the mask, not the id, says what is real
    ids, mask = right_pad([[0, 4], [0]], pad_id=0)
    assert ids.tolist() == [[0, 4], [0, 0]] and mask.tolist() == [[1, 1], [1, 0]]
    with pytest.raises(ValueError, match="empty"):
        right_pad([], pad_id=0)


def test_last_token_index_of_padded_rows():
    _, right = right_pad([[5, 6, 7], [8], [9, 10]], pad_id=1)
    _, left = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=1)
    assert last_token_index(right).tolist() == [2, 0, 1]
    assert last_token_index(left).tolist() == [2, 2, 2]
    # [left-padded query | right-padded response], PPO's layout, and a bool mask
    both = torch.cat([left, right], 1).bool()
    assert last_token_index(both).tolist() == [5, 3, 4]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


# ----------------------------------------------------------------------------------------------
# config.get_config: stage configs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_course_seed_reaches_every_stage(profile):
    config = get_config(profile, seed=7, ppo={"max_steps": 3})
    assert [getattr(config, stage).seed for stage in STAGES] == [7] * len(STAGES)
    assert config.ppo.max_steps == 3
    # a stage given as a whole object gets the course seed too
    config = get_config(profile, seed=5, ppo=PPOConfig(seed=99))
    assert config.ppo.seed == 5 and config.sft.seed == 5 and config.reward.seed == 5


def test_stage_overrides_merge_with_the_profile():
    ppo = get_config("gpt2", ppo={"max_steps": 3}).ppo
    assert ppo.max_steps == 3 and ppo.batch_size == 128 and ppo.learning_rate == 1.41e-5  # the rest: gpt2's
    assert get_config("gpt2", sft={"batch_size": 2}).sft.block_size == 512


@pytest.mark.parametrize("stage, field", [("ppo", "steps"), ("ppo", "cliprange"), ("sft", "grad_clip"),
                                          ("reward", "learning_rat")])
def test_unknown_stage_fields_are_rejected(stage, field):
    with pytest.raises(TypeError, match=f"Unknown {stage} field.*{field}"):
        get_config("tiny", **{stage: {field: 1}})


def test_a_sweep_card_keeps_finished_parts_and_says_what_is_left(tmp_path):
    from rlhf_helpers.core.run_card import SweepCard

    path = tmp_path / "results" / "run_card_sweep.json"
    card = SweepCard(path)
    assert card.todo(["a", "b"]) == ["a", "b"]
    card.add("a", {"rows": [1, 2]}, 12.34, gold="g")
    again = SweepCard(path)  # as a later, resumed sweep reads it
    assert again.todo(["a", "b"]) == ["b"] and again.todo(["a", "b"], redo=True) == ["a", "b"]
    assert again.data["parts"]["a"] == {"result": {"rows": [1, 2]}, "wall_seconds": 12.3}
    assert again.data["gold"] == "g" and "commit" in again.data and "mixed_precision" in again.data["machine"]
    assert not path.with_suffix(".json.partial").exists()
