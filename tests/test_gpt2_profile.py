"""The `gpt2` profile's code path, offline: a tiny random GPT-2 in a temp dir stands in for hub `gpt2`."""

import pytest
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhf_helpers import pipeline
from rlhf_helpers.config import get_config
from rlhf_helpers.data import build_dataset
from rlhf_helpers.data.tokenizer import get_tokenizer
from rlhf_helpers.policy import load_policy


@pytest.fixture(scope="module")
def fake_hub_gpt2(tmp_path_factory, small_tokenizer):
    """A directory laid out like hub `gpt2`: GPT-2 weights and a tokenizer with EOS but *no* pad token."""
    directory = tmp_path_factory.mktemp("fake-gpt2")
    gpt2_like = PreTrainedTokenizerFast(tokenizer_object=small_tokenizer.backend_tokenizer,
                                        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    gpt2_like.save_pretrained(directory)
    config = GPT2Config(vocab_size=len(gpt2_like), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def fake_gpt2_config(fake_hub_gpt2, **overrides):
    # the hub is off in tests, so the data comes from the offline source: same rows
    return get_config("gpt2", model_name_or_path=str(fake_hub_gpt2), tokenizer_name_or_path=str(fake_hub_gpt2),
                      dataset_source="offline", n_positions=64, **overrides)


@pytest.fixture
def gpt2_config(fake_hub_gpt2, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path))
    return fake_gpt2_config(fake_hub_gpt2)


def test_gpt2_tokenizer_gets_a_pad_token(gpt2_config):
    tokenizer = get_tokenizer(gpt2_config)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # hub GPT-2 has no pad: EOS stands in


def test_gpt2_prompts(gpt2_config, imdb):
    prompts = build_dataset(get_tokenizer(gpt2_config), gpt2_config, split="eval", dataset=imdb)
    assert 2_400 < len(prompts) < 2_500
    assert all(2 <= len(ids) <= 8 for ids in prompts[:200]["input_ids"])


def test_gpt2_sft_fine_tunes_and_reloads(gpt2_config, fake_hub_gpt2, tmp_path):
    config = fake_gpt2_config(fake_hub_gpt2, sft=dict(block_size=32, batch_size=4, max_steps=3, eval_blocks=4,
                                                      max_train_blocks=64, warmup_steps=1, mixed_precision="no"))
    result = pipeline.stage_sft(config, output_dir=tmp_path / "sft")
    assert result["steps"] == 3
    model, tokenizer = load_policy(tmp_path / "sft")
    assert model.config.n_layer == 2 and (tmp_path / "sft" / "run_card_sft.json").exists()
