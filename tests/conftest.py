"""Shared fixtures: IMDb loaded once, a small tokenizer trained once per test session."""

import pytest

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
