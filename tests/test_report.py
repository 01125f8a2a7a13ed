"""The end-of-run report: table, sample continuations, figure and summary, on hand-made fake results."""

import math

import pytest

from rlhf_helpers.config import get_config

from rlhf_helpers.evaluation.report import before_after_samples, format_run_summary, report_figure, summary_table

SFT = {"reward": -0.12, "positive_rate/bag_of_words": 0.523, "positive_rate/vader": 0.41, "kl": 0.0,
       "ref_perplexity": 48.7, "distinct_1": 0.41, "distinct_2": 0.812, "response_length": 10.0, "n": 256}
PPO = {"reward": 0.91, "positive_rate/bag_of_words": 0.804, "positive_rate/vader": 0.66, "kl": 3.27,
       "ref_perplexity": 61.2, "distinct_1": 0.33, "distinct_2": 0.655, "response_length": 10.0, "n": 256}
RESULTS = {"dir": "/tmp/artifacts/tiny/evaluation", "sft": SFT, "ppo": PPO}
QUERIES = ["This film was", "I went to see this movie because", "The acting in this one", "Worst plot ever, but"]
SFT_SAMPLES = [{"query": q, "response": f" sft continuation {i}", "kl": 0.0, "reward": -0.5 + 0.1 * i,
                "bag_of_words": i % 2 == 0, "vader": False} for i, q in enumerate(QUERIES)]
PPO_SAMPLES = [{"query": q, "response": f" ppo continuation {i}", "kl": 2.0, "reward": 1.0 + (0.5 if i == 3 else 0.0),
                "bag_of_words": True, "vader": i != 1} for i, q in enumerate(QUERIES)]
HISTORY = [{"step": s, "score": -0.2 + 0.02 * s + 0.1 * math.sin(s), "kl": 0.08 * s, "samples": ["x"]}
           for s in range(1, 61)]
PPO_RUN = {"dir": "/tmp/ppo", "steps": 60, "seconds": 301.4, "resumed": False, "first_score": -0.18, "last_score": 1.02}


def _row(table: str, label: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(label))


def test_summary_table_has_both_columns_and_formatted_numbers():
    table = summary_table(RESULTS)
    assert "256 held-out prompts" in table.splitlines()[0]
    header = table.splitlines()[1].split()
    assert header == ["metric", "SFT", "PPO", "change"]
    assert _row(table, "positive, bag of words").split()[-4:] == ["52.3%", "80.4%", "+28.1", "pts"]
    assert "41.0%" in _row(table, "positive, VADER") and "66.0%" in _row(table, "positive, VADER")
    assert _row(table, "reward-model score").split()[-3:] == ["-0.12", "0.91", "+1.03"]
    assert _row(table, "KL to SFT").split()[-3:] == ["0.00", "3.27", "+3.27"]
    assert "48.7" in _row(table, "perplexity under SFT") and "0.812" in _row(table, "distinct-2")
    assert "10.0" in _row(table, "mean response length")
    assert len({len(line) for line in table.splitlines()[1:10]}) == 1  # aligned
    assert "never saw" in table  # the note on how to read it


def test_summary_table_without_ppo_shows_only_sft_and_survives_missing_keys():
    table = summary_table({"sft": {"reward": 0.1, "positive_rate/vader": 0.5}})
    assert table.splitlines()[1].split() == ["metric", "SFT"]
    assert "PPO" not in table and "change" not in table
    assert "50.0%" in _row(table, "positive, VADER") and _row(table, "KL to SFT").split()[-1] == "-"
    assert "held-out prompts" in table.splitlines()[0]
    assert summary_table({}) == "No evaluation results."


def test_before_after_samples_shows_queries_and_both_responses():
    text = before_after_samples(SFT_SAMPLES, PPO_SAMPLES, n=3, note=get_config("tiny").sample_note)
    for i in range(3):
        assert QUERIES[i] in text and f"sft continuation {i}" in text and f"ppo continuation {i}" in text
    assert QUERIES[3] not in text and "first" in text and "--profile gpt2" in text
    assert "reward +1.00" in text and "bag of words: positive" in text and "VADER: negative" in text
    gain = before_after_samples(SFT_SAMPLES, PPO_SAMPLES, n=1, pick="gain")
    assert QUERIES[3] in gain and "rose most" in gain  # the largest gain: row 3
    sft_only = before_after_samples(SFT_SAMPLES, None, n=2, pick="gain", note=get_config("gpt2").sample_note)
    assert "sft continuation 1" in sft_only and "PPO" not in sft_only and "--profile" not in sft_only
    with pytest.raises(ValueError):
        before_after_samples(SFT_SAMPLES, PPO_SAMPLES, pick="best")


@pytest.mark.parametrize("history, results", [(HISTORY, RESULTS), ([], {"sft": SFT})])
def test_report_figure_writes_a_png(tmp_path, history, results):
    import matplotlib.image

    path = report_figure(history, results, tmp_path / "sub" / "report.png", kl_target=3.0)
    assert path == tmp_path / "sub" / "report.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 1000  # ~12 x 3.6 in at 120 dpi


def test_format_run_summary_has_everything_and_the_paths(tmp_path):
    text = format_run_summary(RESULTS, SFT_SAMPLES, PPO_SAMPLES, PPO_RUN, tmp_path / "report.png",
                              tmp_path / "run_card_evaluate.json")
    assert text.startswith("PPO: 60 steps in 5.0 min")
    assert "52.3%" in text and QUERIES[0] in text and "ppo continuation 0" in text
    assert str(tmp_path / "report.png") in text and str(tmp_path / "run_card_evaluate.json") in text
    no_ppo = format_run_summary({"sft": SFT}, SFT_SAMPLES, [], None, None, "card.json")
    assert "PPO: not run." in no_ppo and "card.json" in no_ppo and "Figure" not in no_ppo
