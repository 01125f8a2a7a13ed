"""Loading policies: clear errors for missing, incomplete or corrupt checkpoints and mismatched tokenizers."""

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.policy import check_tokenizer_matches, load_policy


@pytest.fixture
def saved_policy(tmp_path, small_tokenizer):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(small_tokenizer), n_positions=32, n_embd=32, n_layer=1,
                                       n_head=2, eos_token_id=0, bos_token_id=0, pad_token_id=1))
    model.save_pretrained(tmp_path)
    small_tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_round_trip(saved_policy):
    model, tokenizer = load_policy(saved_policy)
    assert not model.training and len(tokenizer) == model.config.vocab_size


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m rlhf_helpers sft"):
        load_policy(tmp_path / "nothing-here")


def test_incomplete_checkpoint(saved_policy):
    (saved_policy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_policy(saved_policy)


def test_corrupt_checkpoint(saved_policy):
    (saved_policy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="corrupt"):
        load_policy(saved_policy)


def test_tokenizer_that_does_not_match(saved_policy, imdb):
    from rlhf_helpers.data.tokenizer import train_bpe_tokenizer

    other = train_bpe_tokenizer(imdb.select(range(0, 25_000, 100))["text"], vocab_size=2000)
    model, _ = load_policy(saved_policy)
    with pytest.raises(ValueError, match="does not match"):
        check_tokenizer_matches(model, other)
