"""Your own preferences (`rlhf_helpers.reward.labelling`): the labels file, the widget driven from code, the scripted
stand-in, agreement, Bradley–Terry on a frozen transformer's features, and the label-noise curve."""

import json

import numpy as np
import pytest
import torch

from rlhf_helpers.core.errors import BadValueError
from rlhf_helpers.reward.labelling import (
    CHOICES, FrozenFeatureRewardModel, LabelPair, LabellingSession, agreement_matrix, bootstrap_accuracy,
    draw_label_pairs, fit_head, flip_mask, label_noise_curve, pair_accuracy_of, pair_batch, preference_pairs,
    reward_model_step, scripted_labeller, verdicts,
)

PAIRS = [LabelPair("The film", " was wonderful", " was awful"), LabelPair("I", " hated it", " loved it"),
         LabelPair("It", " is a film", " is a movie")]


def never_draw():
    raise AssertionError("a session that has a file must not draw new pairs")


# -- the labels file -------------------------------------------------------------------------------


def test_every_label_is_saved_at_once_and_a_new_session_resumes(tmp_path):
    path = tmp_path / "my_labels" / "labels.json"
    session = LabellingSession.open(path, lambda: PAIRS, meta={"seed": 3, "profile": "tiny"})
    assert path.exists() and json.loads(path.read_text())["labels"] == [None, None, None]
    session.label(0, "A")
    session.label(1, "b")  # lower case is accepted, stored canonical
    data = json.loads(path.read_text())
    assert data["labels"] == ["A", "B", None] and data["seed"] == 3
    assert data["pairs"][1] == {"prompt": "I", "a": " hated it", "b": " loved it"}
    assert [p.name for p in path.parent.iterdir()] == ["labels.json"]  # no temporary file left behind

    resumed = LabellingSession.open(path, never_draw)
    assert resumed.pairs == PAIRS and resumed.labels == ["A", "B", None]
    assert resumed.next_unlabelled() == 2 and resumed.n_labelled == 2
    resumed.label(2, "tie")
    assert resumed.next_unlabelled() is None
    resumed.label(0, None)  # cleared
    assert LabellingSession.load(path).labels == [None, "B", "tie"]


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "labels.json"
    session = LabellingSession.open(path, lambda: PAIRS)
    session.label(0, "A")
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)  # the rename that makes the new file the file
    with pytest.raises(OSError, match="disk full"):
        session.label(1, "B")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"pairs": []}', "no 'labels'"),
    ('{"pairs": [{"prompt": "a", "a": "b", "b": "c"}], "labels": ["A", "B"]}', "2 labels for 1 pairs"),
    ('{"pairs": [{"prompt": "a", "a": "b", "b": "c"}], "labels": ["maybe"]}', "a label is one of"),
])
def test_a_broken_labels_file_is_refused_with_the_way_out(tmp_path, content, message):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(BadValueError, match=message):
        LabellingSession.open(path, never_draw)


def test_a_bad_label_or_index_is_refused(tmp_path):
    session = LabellingSession(PAIRS, tmp_path / "labels.json")
    with pytest.raises(BadValueError, match="a label is one of"):
        session.label(0, "C")
    with pytest.raises(BadValueError, match="pair 3 does not exist"):
        session.label(3, "A")
    assert session.labels == [None, None, None]


# -- the widget, clicked from code -----------------------------------------------------------------


def test_the_widget_saves_each_click_and_moves_to_the_next_unlabelled_pair(tmp_path):
    path = tmp_path / "labels.json"
    session = LabellingSession.open(path, lambda: PAIRS)
    session.label(1, "B")  # labelled before: the widget starts at the first unlabelled pair, 0
    ui = session.widget()
    assert ui.position == 0 and "1 of 3 labelled" in ui.progress.value
    assert "wonderful" in ui.pair.value and "The film" in ui.pair.value
    ui.buttons["A"].click()
    assert json.loads(path.read_text())["labels"] == ["A", "B", None]
    assert ui.position == 2 and "2 of 3 labelled" in ui.progress.value  # pair 1 is done: skipped
    ui.buttons["tie"].click()
    assert session.labels == ["A", "B", "tie"] and "every pair labelled" in ui.progress.value
    ui.buttons["previous"].click()
    ui.buttons["previous"].click()
    assert ui.position == 0 and CHOICES["A"] in ui.pair.value  # your answer is shown
    ui.buttons["B"].click()  # a change of mind
    assert json.loads(path.read_text())["labels"] == ["B", "B", "tie"]
    ui.buttons["next"].click()
    assert ui.position == 1


def test_the_widget_escapes_the_texts(tmp_path):
    session = LabellingSession([LabelPair("<b>x</b>", " <script>", " &")], tmp_path / "labels.json")
    html = session.widget().pair.value
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x" in html


# -- the stand-in and agreement --------------------------------------------------------------------


def lexicon(texts):
    return np.array([t.count("wonderful") + t.count("loved") - t.count("awful") - t.count("hated") for t in texts],
                    dtype=float)


def test_the_scripted_labeller_follows_its_judge_says_tie_when_close_and_flips_a_share():
    assert scripted_labeller(lexicon, noise=0.0)(PAIRS) == ["A", "B", "tie"]
    assert scripted_labeller(lexicon, noise=1.0)(PAIRS) == ["B", "A", "tie"]  # ties are not flipped
    many = [LabelPair("", " wonderful", " awful")] * 1000
    flipped = scripted_labeller(lexicon, noise=0.2, seed=1)(many).count("B") / 1000
    assert 0.16 < flipped < 0.24
    assert scripted_labeller(lexicon, noise=0.2, seed=1)(many) == scripted_labeller(lexicon, noise=0.2, seed=1)(many)


def test_completed_fills_only_the_missing_labels_and_says_who(tmp_path):
    session = LabellingSession(PAIRS, tmp_path / "labels.json", labels=["B", None, None])
    labels, who = session.completed(scripted_labeller(lexicon, noise=0.0))
    assert labels == ["B", "B", "tie"] and who == ["you", "stand-in", "stand-in"]
    assert session.labels == ["B", None, None]


def test_agreement_counts_only_pairs_both_decided():
    raters = {"you": ["A", "A", "tie", "B", "B"], "judge": ["A", "B", "A", "B", "tie"]}
    agree, n = agreement_matrix(raters)
    assert n.loc["you", "judge"] == 3 and agree.loc["you", "judge"] == pytest.approx(2 / 3)
    assert n.loc["you", "you"] == 4 and agree.loc["you", "you"] == 1.0
    assert agree.equals(agree.T)
    with pytest.raises(BadValueError, match="same pairs"):
        agreement_matrix({"a": ["A"], "b": ["A", "B"]})


def test_verdicts_and_preference_pairs():
    assert verdicts([1.0, 0.0, 2.0], [0.5, 0.0, 3.0]) == ["A", "tie", "B"]
    chosen, rejected = preference_pairs(PAIRS, ["A", "B", "tie"])
    assert chosen == ["The film was wonderful", "I loved it"] and rejected == ["The film was awful", "I hated it"]


# -- Bradley–Terry on a frozen transformer's features ----------------------------------------------


def test_frozen_features_ignore_padding_and_are_computed_once(tiny_lm, small_tokenizer):
    model = FrozenFeatureRewardModel(tiny_lm.transformer)
    torch.nn.init.normal_(model.head.weight)
    ids = small_tokenizer("a fine film", add_special_tokens=False)["input_ids"]
    n = len(ids)
    alone = model(torch.tensor([ids]), torch.ones(1, n, dtype=torch.long))
    padded = model(torch.tensor([[5, 5] + ids + [7]]), torch.tensor([[0, 0] + [1] * n + [0]]))
    assert torch.allclose(alone, padded, atol=1e-5) and len(model.cache) == 1
    assert [name for name, _ in model.named_parameters()] == ["head.weight"]  # the transformer is not trained


def test_a_head_fitted_with_the_reference_step_learns_a_separable_preference(tiny_lm, small_tokenizer):
    good = ["a great film", "truly great acting", "great and fun", "great fun", "a great story", "great music"]
    bad = ["a dull film", "truly dull acting", "dull and slow", "dull stuff", "a dull story", "dull music"]
    train, test = pair_batch(small_tokenizer, good[:4], bad[:4]), pair_batch(small_tokenizer, good[4:], bad[4:])
    model = FrozenFeatureRewardModel(tiny_lm.transformer)
    assert pair_accuracy_of(model, train) == 0.0  # a zero head: every pair a tie, and a tie is a miss
    losses = fit_head(model, train, steps=60, learning_rate=0.05)
    assert losses[0] == pytest.approx(np.log(2), abs=1e-6) and losses[-1] < 0.1
    assert pair_accuracy_of(model, train) == 1.0
    accuracies = bootstrap_accuracy(model, train, test, n_resamples=3, steps=20, learning_rate=0.05)
    assert accuracies.shape == (3,) and ((accuracies >= 0) & (accuracies <= 1)).all()
    with pytest.raises(BadValueError, match="cannot draw 5 different pairs from 4"):
        bootstrap_accuracy(model, train, test, n_resamples=1, size=5, replace=False)


def test_fit_head_uses_the_step_it_is_given(tiny_lm, small_tokenizer):
    calls = []

    def step(*args):
        calls.append(len(args))
        return reward_model_step(*args)

    fit_head(FrozenFeatureRewardModel(tiny_lm.transformer), pair_batch(small_tokenizer, ["good"], ["bad"]),
             step=step, steps=3)
    assert calls == [6, 6, 6]


# -- label noise -----------------------------------------------------------------------------------


def test_flip_mask_flips_exactly_the_share_asked():
    assert flip_mask(10, 0.3, seed=0).sum() == 3 and flip_mask(7, 0.0).sum() == 0 and flip_mask(7, 1.0).all()
    assert not np.array_equal(flip_mask(100, 0.5, seed=0), flip_mask(100, 0.5, seed=1))
    with pytest.raises(BadValueError):
        flip_mask(10, 1.5)


def test_the_label_noise_curve_falls_to_chance_at_half_flipped(imdb):
    rows = imdb.shuffle(seed=0).select(range(1_600))
    positives = [t for t, y in zip(rows["text"], rows["label"]) if y == 1]
    negatives = [t for t, y in zip(rows["text"], rows["label"]) if y == 0]
    n = min(len(positives), len(negatives))
    train, test = slice(0, n - 200), slice(n - 200, n)
    curve = label_noise_curve(positives[train], negatives[train], positives[test], negatives[test],
                              fractions=(0.0, 0.3, 0.5), seeds=(0, 1))
    assert list(curve.columns) == ["flipped", "seed", "accuracy"] and len(curve) == 6
    mean = curve.groupby("flipped")["accuracy"].mean()
    assert mean[0.0] > 0.8, mean
    assert mean[0.0] > mean[0.3] > mean[0.5], mean
    assert abs(mean[0.5] - 0.5) < 0.15, mean


# -- drawing the pairs -----------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_pairs_of_equal_length():
    from rlhf_helpers import get_config
    from rlhf_helpers.policy import load_policy

    config = get_config("tiny")
    policy, tokenizer = load_policy("tiny")
    first = draw_label_pairs(policy, tokenizer, config, n_pairs=4, seed=0, min_tokens=4, max_tokens=8)
    assert first == draw_label_pairs(policy, tokenizer, config, n_pairs=4, seed=0, min_tokens=4, max_tokens=8)
    assert first != draw_label_pairs(policy, tokenizer, config, n_pairs=4, seed=1, min_tokens=4, max_tokens=8)
    for pair in first:
        a, b = (tokenizer(x, add_special_tokens=False)["input_ids"] for x in (pair.a, pair.b))
        assert pair.a != pair.b and 4 <= len(a) <= 9 and abs(len(a) - len(b)) <= 2  # re-tokenizing may merge a token
