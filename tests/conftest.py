"""Shared fixtures: IMDb loaded once, a small tokenizer trained once per test session, tiny random GPT-2s, an empty
artifacts root, and stages whose heavy work fails the test if reached."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.data import clean_review, load_imdb
from rlhf_helpers.data.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="session")
def imdb():
    return load_imdb("offline")


@pytest.fixture(scope="session")
def small_tokenizer(imdb):
    """A 1,000-token byte-level BPE trained on 2,000 reviews: quick, and the same kind as the course's."""
    texts = [clean_review(t) for t in imdb.select(range(0, 25_000, 12))["text"]]
    return train_bpe_tokenizer(texts, vocab_size=1000)


@pytest.fixture(scope="module")
def tiny_lm(small_tokenizer):
    """A random 2-layer, 32-wide GPT-2 on the small tokenizer, without dropout, in eval mode (one per test module)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(small_tokenizer), n_positions=48, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, eos_token_id=0, bos_token_id=0, pad_token_id=1)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tiny_gpt2_dir(small_tokenizer, tmp_path_factory):
    """A random 1-layer GPT-2 saved with its tokenizer (TRL's trainers load the policy, and the reference with
    beta > 0, from a directory)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(small_tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        initializer_range=0.5,  # large weights: log-probs far from uniform, position shifts visible
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=small_tokenizer.eos_token_id, eos_token_id=small_tokenizer.eos_token_id,
                        pad_token_id=small_tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """An empty artifacts root; its profile directory must still not exist after a refused command."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("RLHF_ARTIFACTS", str(root))
    return root


def _work_started(*args, **kwargs):
    raise AssertionError("work started although the input was refused")


@pytest.fixture
def no_work(monkeypatch):
    """Every stage's first heavy step fails the test if reached."""
    from rlhf_helpers import pipeline

    for name in ("load_imdb", "load_imdb_splits", "load_policy", "load_reward_model", "load_tokenizer",
                 "train_course_tokenizer", "get_tokenizer", "build_dataset", "train_sft", "pack_texts",
                 "evaluate_policy"):
        monkeypatch.setattr(pipeline, name, _work_started)
