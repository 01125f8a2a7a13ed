"""Predict, then run (`exercises.predictions`): a prediction is graded against the run, and bad answers are refused."""

import pytest

from rlhf_helpers.exercises import predict


def test_a_choice_is_graded_right_and_wrong(capsys):
    guess = predict("Which way?", choices={"a": "up", "b": "down"})
    guess.answer = "A"
    assert guess.reveal("a", why="it went up") is True
    out = capsys.readouterr().out
    assert "the run says: a) up" in out and "right" in out and "why: it went up" in out
    guess.answer = "b"
    assert guess.reveal("a") is False
    assert "not this time" in capsys.readouterr().out


def test_a_number_is_right_within_its_tolerance(capsys):
    guess = predict("How many nats?", number="nats", tolerance=0.25)
    guess.answer = 10
    assert guess.reveal(12.0) is True
    guess.answer = 2
    assert guess.reveal(12.0) is False
    assert "0.17× the truth" in capsys.readouterr().out


def test_no_answer_still_shows_the_truth(capsys):
    guess = predict("How many nats?", number="nats")
    assert guess.reveal(3.5) is None
    out = capsys.readouterr().out
    assert "3.5 nats" in out and "no prediction" in out


@pytest.mark.parametrize("kwargs, answer, message", [
    (dict(choices={"a": "up", "b": "down"}), "c", "not one of the choices"),
    (dict(number="nats"), "ten", "not a number"),
])
def test_an_answer_that_cannot_be_graded_is_refused(kwargs, answer, message):
    guess = predict("?", **kwargs)
    guess.answer = answer
    with pytest.raises(ValueError, match=message):
        guess.reveal("a" if "choices" in kwargs else 1.0)


def test_a_question_needs_choices_or_a_number():
    with pytest.raises(ValueError, match="either choices"):
        predict("?")
    with pytest.raises(ValueError, match="either choices"):
        predict("?", choices={"a": "x"}, number="")


def test_the_number_box_starts_empty_and_records_what_is_typed():
    guess = predict("How many?", number="steps")
    box = guess._widget()
    assert box.value == "" and box.placeholder and guess.answer is None  # no 0 that looks like an answer
    box.value = "12.5"
    assert guess.answer == 12.5
    box.value = "85%"
    assert guess.answer == pytest.approx(0.85)
    for not_a_number in ["", "abc", "0,5", "nan", "inf"]:
        box.value = not_a_number
        assert guess.answer is None, not_a_number


def test_the_choice_buttons_record_the_key():
    guess = predict("Which?", choices={"a": "up", "b": "down"})
    box = guess._widget()
    assert box.value is None and guess.answer is None
    box.value = "b"
    assert guess.answer == "b"
