import json

import pytest

from rlhf_helpers.__main__ import main


@pytest.mark.slow
def test_tokenizer_stage_writes_a_run_card(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path))
    assert main(["tokenizer", "--profile", "tiny"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["vocab_size"] == 8192
    card = json.loads((tmp_path / "tiny" / "tokenizer" / "run_card_tokenizer.json").read_text())
    assert card["config"]["name"] == "tiny" and card["seed"] == 0 and "torch" in card["versions"]
    assert (tmp_path / "tiny" / "tokenizer" / "tokenizer.json").exists()


def test_unknown_profile_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "huge", "data"])
    assert stop.value.code == 2
    assert "Available profiles: gpt2, tiny" in capsys.readouterr().err
