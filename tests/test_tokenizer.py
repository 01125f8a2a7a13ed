import pytest

from rlhf_helpers.data.tokenizer import EOS_TOKEN, PAD_TOKEN, load_tokenizer, train_bpe_tokenizer


def test_trained_tokenizer_round_trips_any_text(small_tokenizer):
    text = "The movie was a unique experience because… naïve 🎬 <3"
    ids = small_tokenizer.encode(text, add_special_tokens=False)
    assert small_tokenizer.decode(ids) == text  # byte-level: nothing is ever unknown
    assert len(small_tokenizer) == 1000


def test_special_tokens(small_tokenizer):
    assert small_tokenizer.eos_token == EOS_TOKEN and small_tokenizer.eos_token_id == 0
    assert small_tokenizer.pad_token == PAD_TOKEN and small_tokenizer.pad_token_id == 1
    assert small_tokenizer.pad_token_id != small_tokenizer.eos_token_id


def test_training_is_deterministic(imdb):
    texts = imdb.select(range(0, 25_000, 50))["text"]
    assert train_bpe_tokenizer(texts, 500).get_vocab() == train_bpe_tokenizer(texts, 500).get_vocab()


def test_save_and_load(small_tokenizer, tmp_path):
    small_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.get_vocab() == small_tokenizer.get_vocab()
    assert loaded.pad_token_id == 1


def test_too_small_vocabulary():
    with pytest.raises(ValueError, match="too small"):
        train_bpe_tokenizer(["a b c"], vocab_size=100)


def test_loading_an_empty_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
