"""DPO from scratch (`rlhf_helpers.beyond_ppo.dpo`): the paper's loss by hand, and TRL 1.16's `DPOTrainer` loss
on the same batch and weights."""

import copy
import math

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.beyond_ppo.dpo import dpo_loss, implicit_rewards, preference_metrics, sequence_logprobs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_the_loss_is_minus_log_sigmoid_of_beta_times_the_margin_of_log_ratios():
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -3.5])
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    by_hand = [-math.log(1 / (1 + math.exp(-0.5 * ((-10 + 11) - (-12 + 11))))),
               -math.log(1 / (1 + math.exp(-0.5 * ((-4 + 4.5) - (-3 + 3.5)))))]
    assert loss.item() == pytest.approx(sum(by_hand) / 2)
    assert chosen.tolist() == pytest.approx([0.5, 0.25]) and rejected.tolist() == pytest.approx([-0.5, 0.25])
    assert preference_metrics(chosen, rejected) == pytest.approx(
        {"accuracy": 0.5, "margin": 0.5, "chosen_reward": 0.375, "rejected_reward": -0.125})
    # the reference matters: without it (pi_ref = 1), the same policy gives another loss
    assert dpo_loss(pc, pr, torch.zeros(2), torch.zeros(2), beta=0.5)[0].item() != pytest.approx(loss.item())
    # finite for huge margins, where log(sigmoid) underflows
    assert torch.isfinite(dpo_loss(torch.tensor([-1e4]), torch.tensor([0.0]), torch.tensor([0.0]),
                                   torch.tensor([0.0]), beta=1.0)[0])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_implicit_rewards_carry_no_gradient():
    logps = torch.tensor([-3.0], requires_grad=True)
    chosen, _ = implicit_rewards(logps, logps, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1)
    assert not chosen.requires_grad and chosen.item() == pytest.approx(-0.1)


def test_sequence_logprobs_sum_the_completion_tokens_only(small_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(small_tokenizer), n_positions=16, n_embd=16, n_layer=1,
                                       n_head=2)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 9, 10, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    completion = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]])
    got = sequence_logprobs(model, ids, attention, completion)
    with torch.no_grad():
        logp = model(input_ids=ids, attention_mask=attention).logits.log_softmax(-1)
    expected = torch.stack([logp[0, 1, 7] + logp[0, 2, 8], logp[1, 0, 9] + logp[1, 1, 10]])
    torch.testing.assert_close(got.detach(), expected)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_our_loss_equals_trls_dpo_trainer_on_the_same_batch(tiny_gpt2_dir, small_tokenizer, tmp_path, beta):
    from trl import DPOConfig, DPOTrainer

    pairs = Dataset.from_dict({"prompt": ["This movie was", "I rented", "The acting in this film", "A"],
                               "chosen": [" great fun", " a gem of a film", " superb", " wonderful, moving story"],
                               "rejected": [" dull", " a mess", " awful and slow, really", " bad"]})
    policy = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    # the reference differs from the policy, so the log-ratios (and the loss) are not trivial
    reference = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=4, use_cpu=True, bf16=False,
                     report_to=[], max_length=64)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=pairs,
                         processing_class=small_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
        ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        policy_logps = sequence_logprobs(trainer.model, ids, attention, completion)
        reference_logps = sequence_logprobs(trainer.ref_model, ids, attention, completion)
    ours, _, _ = dpo_loss(*policy_logps.chunk(2), *reference_logps.chunk(2), beta=beta)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)
    assert ours.item() != pytest.approx(math.log(2), abs=1e-3)  # not the loss of a policy equal to its reference


# -- the pairs and the loop ----------------------------------------------------------------------

def letter_score(texts):
    return torch.tensor([t.count("e") / max(len(t), 1) for t in texts])


class LetterJudge:
    def probability(self, texts):
        return letter_score(texts).numpy()

    def __call__(self, texts):
        return self.probability(texts) > 0.05


def test_pairs_are_labelled_by_the_scorer_and_dpo_trains_on_them(tiny_lm, small_tokenizer, tmp_path):
    from rlhf_helpers.beyond_ppo.dpo_training import DPOTrainConfig, sample_preference_pairs, train_dpo
    from rlhf_helpers.evaluation import HeldOutEvaluator

    lm = tiny_lm
    prompts = [small_tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a"]]
    pairs = sample_preference_pairs(lm, small_tokenizer, prompts, letter_score, k=3, min_tokens=2, max_tokens=5)
    assert 0 < len(pairs) <= 4 * 3 and (pairs.score_gap > 0).all()
    for (prompt, chosen, rejected), gap in zip(pairs.texts, pairs.score_gap):
        assert (letter_score([prompt + chosen]) - letter_score([prompt + rejected])).item() == pytest.approx(gap.item())
    # the completion mask marks exactly the completion's tokens, right after the prompt
    row = pairs.chosen_completion[0].nonzero().flatten()
    assert row[0] == len(prompts[0]) and (pairs.chosen_attention[0, : row[-1] + 1] == 1).all()

    reference = copy.deepcopy(lm)
    evaluator = HeldOutEvaluator(reference, small_tokenizer, prompts, letter_score, {"letters": LetterJudge()},
                                 min_tokens=2, max_tokens=5)
    config = DPOTrainConfig(max_steps=4, batch_size=4, warmup_steps=1, eval_every=2, checkpoint_every=2,
                            learning_rate=1e-2, mixed_precision="no", beta=0.5)
    result = train_dpo(copy.deepcopy(lm), reference, pairs, config, tmp_path / "dpo", evaluator, progress=False)
    assert [row["step"] for row in result["history"]] == [0, 2, 4]
    assert result["history"][0]["kl"] == 0.0 and result["history"][-1]["kl"] != 0.0
    with pytest.raises(ValueError, match="beta"):
        DPOTrainConfig(beta=0.0).validate()


def test_preferred_ft_trains_on_the_chosen_completions(tiny_lm, small_tokenizer, tmp_path):
    from rlhf_helpers.beyond_ppo.dpo_training import PreferredFTConfig, sample_preference_pairs, train_preferred_ft
    from rlhf_helpers.evaluation import HeldOutEvaluator

    lm = tiny_lm
    prompts = [small_tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a"]]
    pairs = sample_preference_pairs(lm, small_tokenizer, prompts, letter_score, k=3, min_tokens=2, max_tokens=5)
    evaluator = HeldOutEvaluator(copy.deepcopy(lm), small_tokenizer, prompts, letter_score, {"letters": LetterJudge()},
                                 min_tokens=2, max_tokens=5)
    config = PreferredFTConfig(max_steps=2, batch_size=4, warmup_steps=1, eval_every=2, checkpoint_every=2,
                               learning_rate=1e-2, mixed_precision="no")
    result = train_preferred_ft(copy.deepcopy(lm), pairs, config, tmp_path / "ft", evaluator, progress=False)
    assert [row["step"] for row in result["history"]] == [0, 2] and result["history"][-1]["kl"] != 0.0


def test_trls_dpo_trainer_trains_our_pairs_with_our_settings_and_is_evaluated(tiny_lm, small_tokenizer, tiny_gpt2_dir,
                                                                             tmp_path):
    from rlhf_helpers.beyond_ppo.dpo_training import DPOTrainConfig, sample_preference_pairs
    from rlhf_helpers.beyond_ppo.trl_dpo import pairs_as_text, train_trl_dpo
    from rlhf_helpers.evaluation import HeldOutEvaluator

    policy = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    prompts = [small_tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a"]]
    pairs = sample_preference_pairs(policy, small_tokenizer, prompts, letter_score, k=3, min_tokens=2, max_tokens=5)
    text = pairs_as_text(pairs)
    assert len(text) == len(pairs) and text[0] == dict(zip(["prompt", "chosen", "rejected"], pairs.texts[0]))
    evaluator = HeldOutEvaluator(copy.deepcopy(policy), small_tokenizer, prompts, letter_score,
                                 {"letters": LetterJudge()}, min_tokens=2, max_tokens=5)
    config = DPOTrainConfig(max_steps=4, batch_size=4, warmup_steps=1, eval_every=2, learning_rate=1e-2,
                            mixed_precision="no", beta=0.5)
    result = train_trl_dpo(pairs, config, tmp_path / "trl_dpo", evaluator, policy=tiny_gpt2_dir)
    assert result["steps"] == 4 and [r["step"] for r in result["history"]] == [0, 2, 4]
    assert result["history"][0]["kl"] == 0.0 and result["history"][-1]["kl"] != 0.0
    settings = result["settings"]
    assert (settings["beta"], settings["learning_rate"], settings["per_device_train_batch_size"]) == (0.5, 1e-2, 4)
    assert settings["lr_scheduler_kwargs"] == {"min_lr_rate": config.min_lr_ratio}
    assert (tmp_path / "trl_dpo" / "evaluations.json").exists()
