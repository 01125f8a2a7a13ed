"""The SFT loop: packing, schedule, perplexity, and resume after an interruption."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.config import SFTConfig
from rlhf_helpers.core.training import batch_indices, lr_at
from rlhf_helpers.policy.sft import evaluate_perplexity, pack_texts, train_sft


def tiny_model(vocab):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                      resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0, eos_token_id=0))


def test_pack_texts_joins_reviews_with_eos(small_tokenizer):
    blocks = pack_texts(["A fine film.<br />Yes.", "Bad."], small_tokenizer, block_size=4)
    stream = blocks.flatten().tolist()
    expected = small_tokenizer.encode("A fine film. Yes.") + [0] + small_tokenizer.encode("Bad.") + [0]
    assert stream == expected[: len(stream)] and len(stream) == len(expected) // 4 * 4


def test_learning_rate_schedule():
    config = SFTConfig(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.55)  # half-way through the cosine
    assert lr_at(110, config) == pytest.approx(0.1)


def test_batches_are_a_pure_function_of_the_step():
    assert batch_indices(7, 100, 8, seed=0).tolist() == batch_indices(7, 100, 8, seed=0).tolist()
    epoch = torch.cat([batch_indices(s, 100, 10, seed=0) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))


def test_uniform_model_has_perplexity_equal_to_the_vocabulary():
    model = tiny_model(50)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # all logits 0: the uniform distribution
    blocks = torch.randint(0, 50, (4, 16))
    assert evaluate_perplexity(model, blocks) == pytest.approx(50, rel=1e-4)


@pytest.fixture
def blocks(small_tokenizer, imdb):
    train = pack_texts(imdb.select(range(0, 25_000, 500))["text"], small_tokenizer, 32, max_blocks=64)
    held_out = pack_texts(imdb.select(range(1, 25_000, 500))["text"], small_tokenizer, 32, max_blocks=8)
    return train, held_out


@pytest.mark.slow
def test_training_lowers_perplexity(small_tokenizer, blocks, tmp_path):
    config = SFTConfig(block_size=32, batch_size=8, max_steps=30, warmup_steps=3, learning_rate=3e-3,
                       eval_every=30, checkpoint_every=30, mixed_precision="no")
    metrics = train_sft(tiny_model(len(small_tokenizer)), small_tokenizer, *blocks, config, tmp_path, progress=False)
    assert metrics["final_eval_perplexity"] < 0.6 * metrics["initial_eval_perplexity"]
    assert len(metrics["losses"]) == 30 and (tmp_path / "model.safetensors").exists()


def test_resume_after_interruption_matches_an_uninterrupted_run(small_tokenizer, blocks, tmp_path):
    config = SFTConfig(block_size=32, batch_size=8, max_steps=8, warmup_steps=2, eval_every=4, checkpoint_every=4,
                       mixed_precision="no")
    straight = train_sft(tiny_model(len(small_tokenizer)), small_tokenizer, *blocks, config, tmp_path / "a", progress=False)

    killed = train_sft(tiny_model(len(small_tokenizer)), small_tokenizer, *blocks, config, tmp_path / "b",
                       progress=False, stop_after=5)
    assert killed == {"steps": 5, "interrupted": True}
    resumed = train_sft(tiny_model(len(small_tokenizer)), small_tokenizer, *blocks, config, tmp_path / "b", progress=False)
    assert resumed["steps"] == 8
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-4)
    assert resumed["final_eval_perplexity"] == pytest.approx(straight["final_eval_perplexity"], rel=1e-5)
    assert math.isfinite(resumed["final_eval_perplexity"])
