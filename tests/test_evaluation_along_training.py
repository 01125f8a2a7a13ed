"""Evaluations along a PPO run (notebook 07's sweep): rows at the right steps, KL 0 at the start, and a run killed
half-way and resumed gives the same rows as one that was not."""

import copy

import numpy as np
import pytest
import torch

from rlhf_helpers.config import PPOConfig
from rlhf_helpers.evaluation import HeldOutEvaluator, fit_overoptimisation, ppo_with_evaluations
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.value_head import PolicyWithValueHead


def letter_reward(texts):
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


class LetterJudge:
    """A judge with a probability, like the bag-of-words judge."""

    def probability(self, texts):
        return 1 / (1 + np.exp(-letter_reward(texts).numpy()))

    def __call__(self, texts):
        return self.probability(texts) > 0.5


def run(tiny_lm, tokenizer, out, until_step=None):
    prompts = [tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a"]]
    config = PPOConfig(max_steps=4, max_minutes=None, batch_size=4, mini_batch_size=2, ppo_epochs=1,
                       learning_rate=1e-3, response_min_tokens=3, response_max_tokens=6, checkpoint_every=2, seed=0,
                       mixed_precision="no")
    trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(tiny_lm)), copy.deepcopy(tiny_lm), tokenizer,
                         letter_reward, prompts, config, out)
    evaluator = HeldOutEvaluator(tiny_lm, tokenizer, prompts, letter_reward, {"letters": LetterJudge()},
                                 min_tokens=3, max_tokens=6)
    return ppo_with_evaluations(trainer, evaluator, every=2, progress=False, keep_samples=2, until_step=until_step)


@pytest.mark.slow
def test_rows_at_every_evaluation_and_the_same_after_a_resume(tiny_lm, small_tokenizer, tmp_path):
    straight = run(tiny_lm, small_tokenizer, tmp_path / "a")
    assert [r["step"] for r in straight] == [0, 2, 4]
    assert straight[0]["kl"] == 0.0 and "p_positive/letters" in straight[0] and len(straight[0]["samples"]) == 2
    assert straight[-1]["kl"] != 0.0  # the policy moved

    first = run(tiny_lm, small_tokenizer, tmp_path / "b", until_step=2)  # "killed" after step 2
    assert [r["step"] for r in first] == [0, 2]
    resumed = run(tiny_lm, small_tokenizer, tmp_path / "b")
    assert [r["step"] for r in resumed] == [0, 2, 4]
    for a, b in zip(straight, resumed):
        assert a["kl"] == pytest.approx(b["kl"]) and a["reward"] == pytest.approx(b["reward"])
    kl = [r["kl"] for r in resumed]
    fit_overoptimisation(kl, [r["p_positive/letters"] for r in resumed])  # rows are what the fit takes
