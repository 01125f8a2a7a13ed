import pytest

from rlhf_helpers.config import PROFILES, artifacts_root, get_config


def test_tiny_is_the_offline_default(monkeypatch):
    monkeypatch.delenv("RLHF_PROFILE", raising=False)
    config = get_config()
    assert config.name == "tiny"
    assert config.dataset_source == "offline"
    assert config.model_name_or_path is None and config.tokenizer_name_or_path is None


def test_gpt2_profile_uses_the_hub():
    config = get_config("gpt2")
    assert (config.dataset_source, config.model_name_or_path, config.n_layer) == ("hub", "gpt2", 12)


def test_profile_from_environment_variable(monkeypatch):
    monkeypatch.setenv("RLHF_PROFILE", "gpt2")
    assert get_config().name == "gpt2"
    assert get_config("tiny").name == "tiny"  # an argument wins over the variable


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(ValueError) as err:
        get_config("huge")
    for name in PROFILES:
        assert name in str(err.value)


def test_overrides_and_unknown_fields():
    assert get_config("tiny", seed=7).seed == 7
    with pytest.raises(TypeError, match="Unknown config field"):
        get_config("tiny", learning_rat=1.0)


@pytest.mark.parametrize("low, high", [(5, 4), (0, 3), (-1, 2)])
def test_empty_or_reversed_prompt_bounds(low, high):
    with pytest.raises(ValueError, match="empty or reversed"):
        get_config("tiny", prompt_min_tokens=low, prompt_max_tokens=high)


def test_artifacts_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path))
    assert artifacts_root() == tmp_path.resolve()
    assert get_config("gpt2").artifacts_dir == tmp_path.resolve() / "gpt2"
