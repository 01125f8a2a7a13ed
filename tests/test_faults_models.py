"""Faults where a model meets a tokenizer, a file or an input (issue 11): each refused with a message that names
the file or directory and the way out; the shipped checkpoints (saved before fingerprints existed) still load.

Models are tiny random GPT-2s over 1,000-token BPEs trained on IMDb reviews, saved in tmp_path.
"""

import copy
import json
import shutil

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

import rlhf_helpers.core.files as files_module
from rlhf_helpers.config import PPOConfig, get_config
from rlhf_helpers.core.assets import shipped_policy_dir, shipped_reward_model_dir
from rlhf_helpers.data import clean_review
from rlhf_helpers.data.tokenizer import (
    SHIPPED_TOKENIZER_FINGERPRINTS, load_tokenizer, restore_hint, tokenizer_fingerprint, train_bpe_tokenizer,
)
from rlhf_helpers.evaluation import evaluate_policy
from rlhf_helpers.policy import generate, load_policy, new_policy_model
from rlhf_helpers.policy.model import check_tokenizer_matches, record_tokenizer
from rlhf_helpers.core.reward_fn import reward_scores
from rlhf_helpers.ppo.rollout import collect_rollout
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward.model import RewardModel, RewardScorer, load_reward_model, load_reward_model_weights, save_reward_model

SHIPPED = (shipped_policy_dir("tiny") / "model.safetensors").exists() and \
    (shipped_reward_model_dir("tiny") / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# Fixtures: a tokenizer, a foreign one of the same size, a saved policy and reward model
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_tokenizer(imdb, small_tokenizer):
    """A BPE of the same size as `small_tokenizer`, trained on other reviews: same size, other ids."""
    texts = [clean_review(t) for t in imdb.select(range(5, 25_000, 12))["text"]]
    other = train_bpe_tokenizer(texts, vocab_size=len(small_tokenizer))
    assert len(other) == len(small_tokenizer)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(small_tokenizer)
    return other


def tiny_policy(tokenizer, n_positions=32, fingerprint=True):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=1,
                                       n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, eos_token_id=0,
                                       bos_token_id=0, pad_token_id=1))
    if fingerprint:
        record_tokenizer(model, tokenizer)
    return model.eval()


def save_policy(directory, tokenizer, fingerprint=True):
    tiny_policy(tokenizer, fingerprint=fingerprint).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_reward(directory, tokenizer):
    model = RewardModel.from_policy(tiny_policy(tokenizer)).eval()
    save_reward_model(model, tokenizer, directory, extra={"max_length": 32, "keep": "first"})
    return directory


@pytest.fixture
def policy_dir(tmp_path, small_tokenizer):
    return save_policy(tmp_path / "sft_policy", small_tokenizer)


@pytest.fixture
def reward_dir(tmp_path, small_tokenizer):
    return save_reward(tmp_path / "reward_model", small_tokenizer)


def replace_tokenizer(directory, tokenizer):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(directory)


def swap_two_token_ids(directory):
    """Edit tokenizer.json in place: two ordinary tokens trade ids (a same-size tokenizer with other ids)."""
    file = directory / "tokenizer.json"
    data = json.loads(file.read_text())
    vocab = data["model"]["vocab"]
    a, b = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i > 300][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    file.write_text(json.dumps(data))


def truncate_file(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The shipped tiny assets copied under a fake package assets directory (the originals are never touched)."""
    assets = tmp_path / "assets"
    shutil.copytree(shipped_policy_dir("tiny"), assets / "tiny" / "sft_policy")
    shutil.copytree(shipped_reward_model_dir("tiny"), assets / "tiny" / "reward_model")
    monkeypatch.setattr(files_module, "ASSETS_DIR", assets)
    return assets / "tiny"


# ----------------------------------------------------------------------------------------------
# The shipped checkpoints still load, and record their tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHIPPED, reason="the tiny policy / reward model are not shipped in this checkout")
def test_shipped_policy_and_reward_model_still_load_and_match():
    for directory in (shipped_policy_dir("tiny"), shipped_reward_model_dir("tiny")):
        saved = json.loads((directory / "config.json").read_text())
        assert saved["tokenizer_fingerprint"] == SHIPPED_TOKENIZER_FINGERPRINTS["tiny"]  # recorded in the assets
    model, tokenizer = load_policy("tiny")
    assert tokenizer_fingerprint(tokenizer) == SHIPPED_TOKENIZER_FINGERPRINTS["tiny"]
    assert model.config.tokenizer_fingerprint == SHIPPED_TOKENIZER_FINGERPRINTS["tiny"]  # recorded in memory
    scorer = load_reward_model("tiny")
    scorer.check_same_tokenizer(tokenizer)
    assert scorer.max_length == 256
    out = generate(model, tokenizer, ["This movie was"], max_new_tokens=3, seed=0)
    assert torch.isfinite(scorer.score([out.prompts[0] + out.texts[0]])).all()


# ----------------------------------------------------------------------------------------------
# Tokenizer identity
# ----------------------------------------------------------------------------------------------


def test_fingerprint_survives_save_and_reload_and_is_recorded_by_saves(tmp_path, small_tokenizer):
    small_tokenizer.save_pretrained(tmp_path / "tok")
    assert tokenizer_fingerprint(load_tokenizer(tmp_path / "tok")) == tokenizer_fingerprint(small_tokenizer)
    config = get_config("tiny", n_positions=32, n_embd=32, n_layer=1, n_head=2, sft={"block_size": 32},
                        reward={"max_length": 32})
    model = new_policy_model(config, small_tokenizer)
    model.save_pretrained(tmp_path / "p")
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["tokenizer_fingerprint"] == tokenizer_fingerprint(small_tokenizer)
    save_reward(tmp_path / "rm", small_tokenizer)
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["tokenizer_fingerprint"] == \
        tokenizer_fingerprint(small_tokenizer)


def test_load_policy_refuses_a_same_size_foreign_tokenizer(policy_dir, foreign_tokenizer):
    load_policy(policy_dir)  # its own tokenizer: fine
    replace_tokenizer(policy_dir, foreign_tokenizer)
    with pytest.raises(ValueError, match="same size, other vocabulary") as err:
        load_policy(policy_dir)
    message = str(err.value)
    assert str(policy_dir) in message and "python -m rlhf_helpers sft" in message
    print(message)


def test_a_policy_saved_before_fingerprints_loads_and_gets_one(tmp_path, small_tokenizer):
    directory = save_policy(tmp_path / "old", small_tokenizer, fingerprint=False)
    model, tokenizer = load_policy(directory)
    assert model.config.tokenizer_fingerprint == tokenizer_fingerprint(tokenizer)


def test_shipped_policy_with_a_swapped_tokenizer_is_refused(shipped_copy):
    swap_two_token_ids(shipped_copy / "sft_policy")
    with pytest.raises(ValueError, match="same size, other vocabulary") as err:
        load_policy(shipped_copy / "sft_policy")
    assert "git checkout rlhf_helpers/assets" in str(err.value)
    swap_two_token_ids(shipped_copy / "reward_model")
    with pytest.raises(ValueError, match="does not match") as err:
        load_reward_model(shipped_copy / "reward_model")
    assert str(shipped_copy / "reward_model") in str(err.value) and "git checkout" in str(err.value)
    print(err.value)


def test_a_copy_of_the_shipped_models_outside_the_package_still_refuses_a_swapped_tokenizer(tmp_path):
    """The shipped configs record their tokenizer's fingerprint, so a copy (exported, or moved) is protected too."""
    for name, loader in (("sft_policy", load_policy), ("reward_model", load_reward_model)):
        copy = tmp_path / name
        shutil.copytree(shipped_policy_dir("tiny") if name == "sft_policy" else shipped_reward_model_dir("tiny"), copy)
        assert json.loads((copy / "config.json").read_text())["tokenizer_fingerprint"] == "bb91b2a94feffcab"
        loader(copy)
        swap_two_token_ids(copy)
        with pytest.raises(ValueError, match="does not match"):
            loader(copy)


def test_load_reward_model_refuses_a_same_size_foreign_tokenizer(reward_dir, foreign_tokenizer):
    load_reward_model(reward_dir)
    replace_tokenizer(reward_dir, foreign_tokenizer)
    with pytest.raises(ValueError, match="same size, other vocabulary") as err:
        load_reward_model_weights(reward_dir)
    assert str(reward_dir) in str(err.value) and "python -m rlhf_helpers reward" in str(err.value)
    print(err.value)


def test_check_same_tokenizer_names_both_directories(tmp_path, reward_dir, foreign_tokenizer):
    foreign_dir = save_policy(tmp_path / "other_policy", foreign_tokenizer)
    _, policy_tokenizer = load_policy(foreign_dir)
    scorer = load_reward_model(reward_dir)
    with pytest.raises(ValueError, match="does not match") as err:
        scorer.check_same_tokenizer(policy_tokenizer)
    message = str(err.value)
    assert str(foreign_dir) in message and str(reward_dir) in message and "same size, other vocabulary" in message
    assert "python -m rlhf_helpers reward" in message
    print(message)


def test_check_tokenizer_matches_names_both_directories(tmp_path, policy_dir, foreign_tokenizer):
    model, _ = load_policy(policy_dir)
    _, other = load_policy(save_policy(tmp_path / "other", foreign_tokenizer))
    with pytest.raises(ValueError, match="does not match") as err:
        check_tokenizer_matches(model, other)
    assert str(policy_dir) in str(err.value) and str(tmp_path / "other") in str(err.value)
    assert f"load_policy('{policy_dir}')" in str(err.value)


def test_evaluate_refuses_a_foreign_tokenizer_or_reward_model(tmp_path, policy_dir, reward_dir, foreign_tokenizer):
    model, tokenizer = load_policy(policy_dir)
    prompts = [tokenizer.encode("The movie was")]
    with pytest.raises(ValueError, match="policy being evaluated") as err:
        evaluate_policy(model, model, foreign_tokenizer, prompts, max_tokens=4)
    assert str(policy_dir) in str(err.value)
    other_reward = load_reward_model(save_reward(tmp_path / "other_rm", foreign_tokenizer))
    with pytest.raises(ValueError, match="reward model's") as err:
        evaluate_policy(model, model, tokenizer, prompts, other_reward.score, max_tokens=4)
    assert str(tmp_path / "other_rm") in str(err.value)
    metrics, _ = evaluate_policy(model, model, tokenizer, prompts, load_reward_model(reward_dir).score, max_tokens=4)
    assert metrics["n"] == 1 and abs(metrics["kl"]) < 1e-5


# ----------------------------------------------------------------------------------------------
# The wrong kind of directory
# ----------------------------------------------------------------------------------------------


def test_load_policy_refuses_a_reward_model_directory(reward_dir):
    with pytest.raises(ValueError, match="holds a reward model") as err:
        load_policy(reward_dir)
    assert str(reward_dir) in str(err.value) and "load_reward_model" in str(err.value)
    print(err.value)


def test_load_reward_model_refuses_a_policy_directory(policy_dir):
    with pytest.raises(ValueError, match="holds a policy") as err:
        load_reward_model(policy_dir)
    assert str(policy_dir) in str(err.value) and "load_policy" in str(err.value)
    print(err.value)


def test_both_loaders_refuse_trl_s_sequence_classifier(tmp_path, small_tokenizer):
    settings = {k: v for k, v in tiny_policy(small_tokenizer).config.to_dict().items() if k not in ("id2label", "label2id")}
    config = GPT2Config.from_dict({**settings, "num_labels": 1})
    directory = tmp_path / "reward_model_trl"
    GPT2ForSequenceClassification(config).save_pretrained(directory)
    small_tokenizer.save_pretrained(directory)
    for loader in (load_policy, load_reward_model):
        with pytest.raises(ValueError, match="sequence-classification") as err:
            loader(directory)
        assert "from_sequence_classifier" in str(err.value) and str(directory) in str(err.value)


def test_a_policy_directory_holding_only_a_checkpoint_says_resume(tmp_path):
    directory = tmp_path / "ppo_policy"
    (directory / "checkpoint").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="only a training checkpoint") as err:
        load_policy(directory)
    assert "python -m rlhf_helpers ppo" in str(err.value)


def test_a_file_instead_of_a_directory(tmp_path):
    (tmp_path / "x").write_text("hi")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_policy(tmp_path / "x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_reward_model(tmp_path / "x")


# ----------------------------------------------------------------------------------------------
# Corrupt files: one error naming the file and the way out
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, error", [("model.safetensors", RuntimeError), ("tokenizer.json", ValueError),
                                         ("config.json", ValueError), ("tokenizer_config.json", ValueError)])
def test_corrupt_policy_files_are_named(policy_dir, name, error):
    truncate_file(policy_dir / name)
    with pytest.raises(error) as err:
        load_policy(policy_dir)
    message = str(err.value)
    assert str(policy_dir / name) in message and "python -m rlhf_helpers sft" in message
    print(type(err.value).__name__, message)


@pytest.mark.parametrize("name, error", [("model.safetensors", RuntimeError), ("tokenizer.json", ValueError),
                                         ("reward_config.json", ValueError), ("config.json", ValueError)])
def test_corrupt_reward_model_files_are_named(reward_dir, name, error):
    truncate_file(reward_dir / name)
    with pytest.raises(error) as err:
        load_reward_model(reward_dir)
    message = str(err.value)
    assert str(reward_dir / name) in message and "python -m rlhf_helpers reward" in message
    print(type(err.value).__name__, message)


def test_garbage_weights_of_the_right_size_are_refused(policy_dir):
    file = policy_dir / "model.safetensors"
    file.write_bytes(b"\0" * file.stat().st_size)
    with pytest.raises(RuntimeError, match="corrupt"):
        load_policy(policy_dir)


@pytest.mark.parametrize("stage_dir, name", [("sft_policy", "model.safetensors"), ("sft_policy", "tokenizer.json"),
                                              ("reward_model", "reward_config.json"),
                                              ("reward_model", "model.safetensors")])
def test_corrupt_shipped_files_say_restore_the_assets(shipped_copy, stage_dir, name):
    truncate_file(shipped_copy / stage_dir / name)
    loader = load_policy if stage_dir == "sft_policy" else load_reward_model
    with pytest.raises((RuntimeError, ValueError)) as err:
        loader(shipped_copy / stage_dir)
    assert str(shipped_copy / stage_dir / name) in str(err.value)
    assert "git checkout rlhf_helpers/assets" in str(err.value) and "reinstall" in str(err.value)


def test_restore_hint_reads_the_run_card(tmp_path):
    (tmp_path / "run_card_ppo.json").write_text("{}")
    assert "python -m rlhf_helpers ppo" in restore_hint(tmp_path)
    assert "python -m rlhf_helpers tokenizer" in restore_hint(tmp_path / "nothing", "tokenizer")


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), float("-inf"), "1.0", None])
def test_generate_refuses_a_temperature_that_is_not_finite_and_positive(small_tokenizer, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0 and finite"):
        generate(tiny_policy(small_tokenizer), small_tokenizer, [[5, 6]], max_new_tokens=2, temperature=temperature)


@pytest.mark.parametrize("prompt, message", [([5, 1.7], "position 1: token id 1.7 is not an integer"),
                                             (torch.tensor([5.0, 6.5]), "token id 6.5 is not an integer"),
                                             ([5, float("nan")], "is not an integer"),
                                             ([5, "6"], "is not an integer"),
                                             ([5, None], "is not an integer"),
                                             (7, "prompt 0 is a int")])
def test_generate_refuses_token_ids_that_are_not_integers(small_tokenizer, prompt, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_policy(small_tokenizer), small_tokenizer, [prompt], max_new_tokens=2, seed=0)


def test_generate_accepts_whole_float_token_ids(small_tokenizer):
    model = tiny_policy(small_tokenizer)
    as_float = generate(model, small_tokenizer, [[5.0, 6.0], torch.tensor([7.0])], max_new_tokens=3, seed=0)
    as_int = generate(model, small_tokenizer, [[5, 6], [7]], max_new_tokens=3, seed=0)
    assert torch.equal(as_float.query_ids, as_int.query_ids) and torch.equal(as_float.response_ids, as_int.response_ids)


@pytest.fixture(scope="module")
def scorer(small_tokenizer):
    return RewardScorer(RewardModel.from_policy(tiny_policy(small_tokenizer)).eval(), small_tokenizer)


@pytest.mark.parametrize("texts, message", [({"a": 1}, r"list \(or tuple\) of strings; got a dict"),
                                            ("a bare string", "wrap a single text in a list"),
                                            ({"good film"}, "got a set"),
                                            ((t for t in ["x"]), "got a generator")])
def test_score_takes_a_list_of_strings(scorer, texts, message):
    with pytest.raises(TypeError, match=message):
        scorer.score(texts)


def test_score_accepts_a_tuple(scorer):
    assert torch.equal(scorer.score(("a good film", "bad")), scorer.score(["a good film", "bad"]))


@pytest.mark.parametrize("max_length", [-3, 0, 1, 33, 2.5, True])
def test_scorer_max_length_is_checked_when_built(scorer, small_tokenizer, max_length):
    with pytest.raises(ValueError, match="max_length must be an integer from 2 to the reward model's context of 32"):
        RewardScorer(scorer.model, small_tokenizer, max_length=max_length)


def test_scorer_max_length_limits_are_accepted(scorer, small_tokenizer):
    assert RewardScorer(scorer.model, small_tokenizer, max_length=None).max_length == 32
    assert RewardScorer(scorer.model, small_tokenizer, max_length=2).max_length == 2
    with pytest.raises(ValueError, match="batch_size"):
        RewardScorer(scorer.model, small_tokenizer, batch_size=0)


@pytest.mark.parametrize("returned, error, message", [
    (["good", "bad"], TypeError, "a list of 2 str"),
    ([0.5], ValueError, "a list of 1 float .* for 2 texts"),
    (torch.zeros(3), ValueError, r"shape \(3,\) for 2 texts"),
    ([True, False], TypeError, "a list of 2 bool"),
    (None, TypeError, "a NoneType"),
    (torch.zeros(2, 2), ValueError, r"shape \(2, 2\)"),
])
def test_reward_scores_must_be_one_number_per_text(returned, error, message):
    with pytest.raises(error, match="the reward function must return one number per text; got .*" + message):
        reward_scores(returned, 2)


def test_reward_scores_accepts_the_usual_shapes():
    import numpy as np

    for returned in ([1, 2.5], (1.0, 2.0), torch.tensor([[1.0], [2.0]]), np.array([1.0, 2.0]),
                     [torch.tensor(1.0), np.float32(2.0)]):
        assert reward_scores(returned, 2).shape == (2,)


def test_ppo_rollout_names_a_reward_function_that_returns_strings(small_tokenizer):
    lm = tiny_policy(small_tokenizer, n_positions=48)
    settings = PPOConfig(max_steps=1, max_minutes=None, batch_size=2, mini_batch_size=2, response_min_tokens=2,
                         response_max_tokens=3, seed=0, mixed_precision="no")
    prompts = [small_tokenizer.encode("The movie was"), small_tokenizer.encode("I rented this")]
    for reward_fn, error in ((lambda texts: ["great"] * len(texts), TypeError),
                             (lambda texts: [1.0] * (len(texts) + 1), ValueError)):
        with pytest.raises(error, match="the reward function must return one number per text; got .* at step 0"):
            collect_rollout(PolicyWithValueHead(copy.deepcopy(lm)), lm, small_tokenizer, reward_fn, prompts, 0.1,
                            settings, step=0)


def test_evaluate_policy_refuses_no_prompts_and_bad_rewards(small_tokenizer):
    model = tiny_policy(small_tokenizer)
    with pytest.raises(ValueError, match="evaluate_policy got no prompts"):
        evaluate_policy(model, model, small_tokenizer, [])
    with pytest.raises(ValueError, match="one number per text"):
        evaluate_policy(model, model, small_tokenizer, [[5, 6], [7]], lambda texts: [1.0], max_tokens=4)
    with pytest.raises(ValueError, match="one verdict per text"):
        evaluate_policy(model, model, small_tokenizer, [[5, 6], [7]], judges={"j": lambda texts: [True]},
                        max_tokens=4)
