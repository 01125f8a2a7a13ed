"""Tests of the reward model: preference pairs, Bradley–Terry loss, the model, training, scoring, TRL parity.

Everything model-related runs on a 2-layer, 32-wide random GPT-2 over a 300-token BPE trained here from a
few sentences; references are hand computations or naive one-row-at-a-time evaluations.
"""

import json
import math
import warnings

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhf_helpers.config import RewardConfig
from rlhf_helpers.core.assets import shipped_reward_model_dir
from rlhf_helpers.core.tensors import last_token_index
from rlhf_helpers.data import clean_review, split_train_eval
from rlhf_helpers.data.preferences import (
    EVAL_SNIPPET_WORDS, build_preference_pairs, first_words, heldout_pairs, pairwise_accuracy, tokenize_pairs,
    training_pairs,
)
from rlhf_helpers.data.tokenizer import train_bpe_tokenizer
from rlhf_helpers.reward.bag_of_words import BagOfWordsBaseline
from rlhf_helpers.reward.model import (
    RewardModel, RewardScorer, bradley_terry_loss, collate_pairs, load_reward_model, save_reward_model,
)
from rlhf_helpers.reward.training import fit_normalisation, train_reward_model

POSITIVE = [
    "This movie was great, the acting was wonderful and the story was moving.",
    "I loved the music, the photography and the ending of this movie.",
    "A quiet, funny and warm story about a family and their old house. Wonderful.",
    "Great fun from start to finish, I loved every minute.",
]
NEGATIVE = [
    "This film was terrible. The plot made no sense and the actors were bored.",
    "The worst film I have seen this year; I wanted my money back.",
    "Boring, bad and far too long; the acting was awful.",
    "Terrible music, awful acting, and a plot that made no sense at all.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer((POSITIVE + NEGATIVE) * 3, vocab_size=300)


def tiny_gpt2_config(tokenizer, **kw):
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kw,
    )


@pytest.fixture(scope="module")
def policy(tokenizer):
    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_gpt2_config(tokenizer)).eval()


@pytest.fixture()
def reward_model(policy):
    return RewardModel.from_policy(policy, seed=0).eval()


@pytest.fixture(scope="module")
def rows():
    """16 labelled reviews (8 positive, 8 negative) with an imdb_index, like a split of `load_imdb_splits`."""
    texts = POSITIVE * 2 + NEGATIVE * 2
    labels = [1] * 8 + [0] * 8
    return Dataset.from_dict({"text": texts, "label": labels, "imdb_index": list(range(100, 116))})


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------
# Preference pairs
# ----------------------------------------------------------------------------------------------


def test_pairs_put_a_positive_review_above_a_negative_one_each_used_once(rows):
    pairs = build_preference_pairs(rows, "full", seed=3)
    label_of = dict(zip(rows["imdb_index"], rows["label"]))
    assert len(pairs) == 8
    assert all(label_of[i] == 1 for i in pairs["chosen_index"])
    assert all(label_of[i] == 0 for i in pairs["rejected_index"])
    assert len(set(pairs["chosen_index"])) == 8 and len(set(pairs["rejected_index"])) == 8
    text_of = dict(zip(rows["imdb_index"], rows["text"]))
    assert pairs["chosen"] == [clean_review(text_of[i]) for i in pairs["chosen_index"]]
    # Seeded: same seed, same pairs; another seed, another pairing.
    assert build_preference_pairs(rows, "full", seed=3)["chosen_index"] == pairs["chosen_index"]
    assert build_preference_pairs(rows, "full", seed=4)["rejected_index"] != pairs["rejected_index"]


def test_snippet_view_cuts_both_sides_of_a_pair_to_the_same_number_of_words(rows):
    assert first_words("  a  b\tc d ", 3) == "a b c"
    fixed = build_preference_pairs(rows, "snippet", seed=0, snippet_words=5)
    assert all(len(t.split()) == 5 for t in list(fixed["chosen"]) + list(fixed["rejected"]))
    ranged = build_preference_pairs(rows, "snippet", seed=0, snippet_words=(2, 4))
    k_chosen = [len(t.split()) for t in ranged["chosen"]]
    assert k_chosen == [len(t.split()) for t in ranged["rejected"]]
    assert set(k_chosen) <= {2, 3, 4} and len(set(k_chosen)) > 1
    with pytest.raises(ValueError, match="view"):
        build_preference_pairs(rows, "middle")


def test_heldout_views_are_the_same_pairs_and_come_only_from_the_eval_split(imdb):
    splits = split_train_eval(imdb, 0.1, 0)
    views = heldout_pairs(splits["eval"].select(range(400)))
    full, snippet = views["full"], views["snippet"]
    assert full["chosen_index"] == snippet["chosen_index"] and full["rejected_index"] == snippet["rejected_index"]
    assert all(s == first_words(f, EVAL_SNIPPET_WORDS) for f, s in zip(full["chosen"][:50], snippet["chosen"][:50]))
    eval_rows = set(splits["eval"]["imdb_index"])
    assert set(full["chosen_index"]) | set(full["rejected_index"]) <= eval_rows
    train = training_pairs(splits["train"].select(range(400)))
    assert not (set(train["chosen_index"]) | set(train["rejected_index"])) & eval_rows
    assert set(train["view"]) == {"full", "snippet"}


def test_tokenize_pairs_truncates_to_the_first_tokens(rows, tokenizer):
    pairs = tokenize_pairs(build_preference_pairs(rows, "full"), tokenizer, max_length=5)
    for text, ids in zip(pairs["chosen"], pairs["chosen_ids"]):
        assert ids == encode(tokenizer, text)[:5]


def test_pairwise_accuracy_counts_only_strict_wins():
    assert pairwise_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 1.0, 1.0]) == 0.5  # the tie counts as wrong
    with pytest.raises(ValueError, match="NaN"):
        pairwise_accuracy([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="same"):
        pairwise_accuracy([1.0], [0.0, 1.0])


# ----------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------


def test_bradley_terry_loss_matches_the_formula_and_its_gradient():
    r_c = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    r_r = torch.tensor([1.0, 1.0, 0.5, -2.0], dtype=torch.float64, requires_grad=True)
    loss = bradley_terry_loss(r_c, r_r)
    by_hand = sum(-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(r_c.tolist(), r_r.tolist())) / 4
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    loss.backward()
    # d/dr_c of -log σ(r_c - r_r) / B is -σ(r_r - r_c) / B; r_r gets the opposite.
    expected = -torch.sigmoid(r_r - r_c).detach() / 4
    assert torch.allclose(r_c.grad, expected) and torch.allclose(r_r.grad, -expected)
    # Shifting every reward by a constant changes nothing: only differences matter.
    assert bradley_terry_loss(r_c + 7, r_r + 7).item() == pytest.approx(loss.item())


def test_bradley_terry_loss_stays_finite_for_huge_margins():
    loss = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert loss.item() == pytest.approx(400.0)  # log(sigmoid(-400)) in float32 would be log(0) = -inf
    assert bradley_terry_loss(torch.tensor([200.0]), torch.tensor([-200.0])).item() == 0.0


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def test_last_token_index_for_any_padding_side():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 3, 0]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


def test_from_policy_copies_the_transformer(policy, reward_model):
    ids = torch.tensor([[5, 9, 12, 40]])
    with torch.no_grad():
        expected = policy.transformer(ids).last_hidden_state
        got = reward_model.transformer(ids).last_hidden_state
    assert torch.equal(expected, got)
    assert reward_model.head.bias is None


def test_padded_batches_give_the_same_reward_as_rows_alone(tokenizer, reward_model):
    rows = [encode(tokenizer, t) for t in ["great fun", "The worst film I have seen", "I loved the music"]]
    alone = torch.stack([reward_model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0] for r in rows])
    ids, mask = collate_pairs(rows[:2], rows[2:] + rows[:1], tokenizer.pad_token_id)  # right padding
    right = reward_model(ids, mask)
    assert torch.allclose(right, torch.cat([alone, alone[:1]]), atol=1e-5)
    # Left-padded query + right-padded response, the layout of PPO's [query | response]:
    query, response = rows[1][:3], rows[1][3:]
    width_q, width_r = 5, len(response) + 2
    ids = torch.full((1, width_q + width_r), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    ids[0, width_q - len(query) : width_q], mask[0, width_q - len(query) : width_q] = torch.tensor(query), 1
    ids[0, width_q : width_q + len(response)], mask[0, width_q : width_q + len(response)] = torch.tensor(response), 1
    assert torch.allclose(reward_model(ids, mask), alone[1:2], atol=1e-5)


def test_reward_model_equals_transformers_sequence_classifier_with_the_same_weights(tokenizer, policy):
    torch.manual_seed(1)
    classifier = GPT2ForSequenceClassification(tiny_gpt2_config(tokenizer, num_labels=1)).eval()
    ours = RewardModel.from_sequence_classifier(classifier).eval()
    rows = [encode(tokenizer, t) for t in POSITIVE[:2] + NEGATIVE[:2]]
    ids, mask = collate_pairs(rows[:2], rows[2:], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        assert torch.allclose(ours(ids, mask), expected, atol=1e-5)


def test_our_loss_equals_trl_reward_trainer_loss_on_a_fixed_batch(tokenizer, policy, tmp_path):
    """Parity with TRL 1.16: the same model and batch give the same loss and the same gradients."""
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from rlhf_helpers.reward.trl_twin import sequence_classifier_from_policy

    classifier = sequence_classifier_from_policy(policy, tokenizer, seed=2)
    examples = [{"chosen_ids": encode(tokenizer, c), "rejected_ids": encode(tokenizer, r)} for c, r in zip(POSITIVE, NEGATIVE)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TRLRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                            gradient_checkpointing=False, max_length=None)
        trainer = RewardTrainer(model=classifier, args=args, train_dataset=Dataset.from_list(examples),
                                processing_class=tokenizer)
    batch = trainer.data_collator(examples)
    classifier.train()
    trl_loss = trainer.compute_loss(classifier, dict(batch))
    trl_loss.backward()

    ours = RewardModel.from_sequence_classifier(classifier)
    chosen = [e["chosen_ids"] for e in examples]
    rejected = [e["rejected_ids"] for e in examples]
    ids, mask = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"])
    r_c, r_r = ours(ids, mask).chunk(2)
    our_loss = bradley_terry_loss(r_c, r_r)
    our_loss.backward()
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert torch.allclose(ours.head.weight.grad, classifier.score.weight.grad, atol=1e-6)
    assert torch.allclose(ours.transformer.wte.weight.grad, classifier.transformer.wte.weight.grad, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Training: learns, and resumes exactly
# ----------------------------------------------------------------------------------------------


def small_run(tokenizer, policy, rows, output_dir, max_steps, resume=True, stop_after=None):
    train = tokenize_pairs(training_pairs(rows, snippet_words=(3, 6)), tokenizer, 64)
    heldout = {v: tokenize_pairs(p, tokenizer, 64) for v, p in heldout_pairs(rows).items()}
    config = RewardConfig(max_steps=max_steps, full_batch_size=4, snippet_batch_size=4, learning_rate=3e-3,
                          warmup_steps=2, eval_every=5, log_every=2, checkpoint_every=3, mixed_precision="no")
    model = RewardModel.from_policy(policy, seed=0)
    metrics = train_reward_model(model, tokenizer, train, heldout, config, output_dir, resume=resume, progress=False,
                                 stop_after=stop_after)
    return model, metrics


@pytest.mark.slow
def test_training_separates_chosen_from_rejected(tokenizer, policy, rows, tmp_path):
    model, metrics = small_run(tokenizer, policy, rows, tmp_path / "run", max_steps=10)
    first, last = metrics["train_log"][0], metrics["train_log"][-1]
    assert last["loss"] < first["loss"] and last["loss"] < 0.3
    assert metrics["final"]["eval_full_accuracy"] == 1.0
    card = json.loads((tmp_path / "run" / "run_card_reward.json").read_text())
    assert card["stage"] == "reward" and card["metrics"]["steps"] == 10


@pytest.mark.slow
def test_training_resumes_where_it_stopped(tokenizer, policy, rows, tmp_path):
    straight, _ = small_run(tokenizer, policy, rows, tmp_path / "straight", max_steps=6, resume=False)
    _, stopped = small_run(tokenizer, policy, rows, tmp_path / "split", max_steps=6, stop_after=4)  # "killed" at 4
    assert stopped == {"steps": 4, "interrupted": True}
    resumed, metrics = small_run(tokenizer, policy, rows, tmp_path / "split", max_steps=6)
    assert metrics["steps"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


# ----------------------------------------------------------------------------------------------
# Scoring, normalisation, save / load, bad input
# ----------------------------------------------------------------------------------------------


def test_normalisation_gives_mean_zero_std_one_and_survives_save_and_load(tokenizer, reward_model, tmp_path):
    scorer = RewardScorer(reward_model, tokenizer)
    texts = POSITIVE + NEGATIVE
    stats = fit_normalisation(scorer, texts)
    scores = scorer.score(texts).double()
    assert abs(scores.mean().item()) < 1e-5 and scores.std().item() == pytest.approx(1.0, abs=1e-5)
    raw = scorer.score_raw(texts)
    assert torch.allclose(scores.float(), (raw - stats["reward_mean"]) / stats["reward_std"], atol=1e-5)

    save_reward_model(reward_model, tokenizer, tmp_path / "rm", extra={"max_length": 64})
    loaded = load_reward_model(tmp_path / "rm")
    assert torch.equal(loaded.score(texts), scorer.score(texts))
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["reward_std"] == pytest.approx(stats["reward_std"])


def test_score_rejects_bad_input_clearly(tokenizer, reward_model):
    scorer = RewardScorer(reward_model, tokenizer)
    assert scorer.score([]).shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        scorer.score(["good", ""])
    with pytest.raises(TypeError, match="list"):
        scorer.score("a single string")
    with pytest.raises(TypeError, match="not a str"):
        scorer.score(["fine", 3])


def test_long_text_is_truncated_with_one_warning(tokenizer, reward_model):
    scorer = RewardScorer(reward_model, tokenizer, max_length=8)
    long_text = " ".join(POSITIVE)
    first_8 = tokenizer.decode(encode(tokenizer, long_text)[:8])
    with pytest.warns(UserWarning, match="first 8 tokens"):
        got = scorer.score([long_text])
    assert torch.allclose(got, scorer.score([first_8]), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        scorer.score([long_text])


def test_nan_scores_raise(tokenizer, policy):
    model = RewardModel.from_policy(policy).eval()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        RewardScorer(model, tokenizer).score(["great fun"])


def test_check_same_tokenizer(tokenizer, reward_model):
    scorer = RewardScorer(reward_model, tokenizer)
    scorer.check_same_tokenizer(tokenizer)  # same: no error
    other = train_bpe_tokenizer(["completely different words about cooking and gardens"] * 5, vocab_size=300)
    with pytest.raises(ValueError, match="does not match"):
        scorer.check_same_tokenizer(other)


def test_loading_a_missing_or_incomplete_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m rlhf_helpers reward"):
        load_reward_model(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_reward_model(tmp_path / "half")


def test_explain_is_leave_one_word_out(tokenizer, reward_model):
    scorer = RewardScorer(reward_model, tokenizer)
    text = "great fun and awful music"
    deltas = scorer.explain(text)
    assert [w for w, _ in deltas] == text.split()
    full = scorer.score([text])[0]
    without_awful = scorer.score(["great fun and music"])[0]
    assert deltas[3][1] == pytest.approx((full - without_awful).item(), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# The bag-of-words baseline
# ----------------------------------------------------------------------------------------------


def test_bag_of_words_baseline_learns_word_polarity():
    baseline = BagOfWordsBaseline(min_df=1).fit(POSITIVE * 3 + NEGATIVE * 3, [1] * 12 + [0] * 12)
    scores = baseline.score(["wonderful, I loved it", "awful and boring"])
    assert scores.shape == (2,) and scores[0] > 0 > scores[1]
    top = baseline.top_words(3)
    assert all(w > 0 for _, w in top["positive"]) and all(w < 0 for _, w in top["negative"])
    with pytest.raises(RuntimeError, match="fit"):
        BagOfWordsBaseline().score(["x"])


# ----------------------------------------------------------------------------------------------
# The shipped model
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (shipped_reward_model_dir("tiny") / "model.safetensors").exists(),
                    reason="the tiny reward model has not been trained / shipped yet")
def test_shipped_reward_model_matches_the_policy_tokenizer_and_prefers_praise():
    from rlhf_helpers.policy import shipped_policy_dir
    from rlhf_helpers.data.tokenizer import load_tokenizer

    scorer = load_reward_model("tiny")
    scorer.check_same_tokenizer(load_tokenizer(shipped_policy_dir("tiny")))
    scores = scorer.score(["This movie was wonderful, I loved every minute of it.",
                           "This movie was awful, a boring waste of time."])
    assert scores[0] > scores[1]
    assert 0.0 < scorer.model.reward_std.item() and math.isfinite(scorer.model.reward_mean.item())


@pytest.mark.slow
def test_trl_training_runs_and_its_log_splits_into_curves(tokenizer, policy, rows, tmp_path):
    from rlhf_helpers.reward.trl_twin import sequence_classifier_from_policy, train_reward_trl, trl_curves

    train = tokenize_pairs(training_pairs(rows, snippet_words=(3, 6)), tokenizer, 64)
    heldout = {v: tokenize_pairs(p, tokenizer, 64) for v, p in heldout_pairs(rows).items()}
    classifier = sequence_classifier_from_policy(policy, tokenizer)
    before = classifier.score.weight.detach().clone()
    # one batch = full + snippet pairs: 2 + 2 = 4
    config = RewardConfig(max_steps=4, full_batch_size=2, snippet_batch_size=2, learning_rate=1e-3, warmup_steps=1,
                          eval_every=2, log_every=2, mixed_precision="no")
    result = train_reward_trl(classifier, tokenizer, train, heldout, tmp_path, config, progress=False)
    assert not torch.equal(before, classifier.score.weight)
    curves = trl_curves(result["log_history"])
    assert [row["step"] for row in curves["train"]] == [2, 4]
    assert set(curves["eval"]) == {"full", "snippet"} and [r["step"] for r in curves["eval"]["full"]] == [2, 4]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in curves["eval"]["snippet"])
