"""PPO end to end on a random tiny GPT-2: runs, starts at KL 0, resumes on the same trajectory, fails loudly."""

import copy

import pytest
import torch

from rlhf_helpers.config import PPOConfig
from rlhf_helpers.policy.generation import truncate_responses
from rlhf_helpers.ppo import PPOTrainer, sample_prompt_batch
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values


@pytest.fixture(scope="module")
def prompts(small_tokenizer):
    texts = ["The movie was", "I rented this", "This film is", "What a", "Honestly the acting", "My wife and I",
             "The plot", "It is a shame"]
    return [small_tokenizer.encode(t) for t in texts]


def letter_reward(texts):
    """A toy reward: how often the letter 'e' appears (deterministic, cheap)."""
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


def make_trainer(tiny_lm, tokenizer, prompts, out, **overrides):
    settings = dict(max_steps=4, max_minutes=None, batch_size=8, mini_batch_size=4, ppo_epochs=2, learning_rate=1e-3,
                    response_min_tokens=3, response_max_tokens=6, checkpoint_every=2, seed=0,
                    # float32 like the other training tests: exact comparisons, and one process has one
                    # accelerate state, whose mixed precision cannot change between tests
                    mixed_precision="no")
    settings.update(overrides)
    policy = PolicyWithValueHead(copy.deepcopy(tiny_lm))
    return PPOTrainer(policy, copy.deepcopy(tiny_lm), tokenizer, letter_reward, prompts, PPOConfig(**settings), out)


def test_value_head_starts_at_zero_and_ignores_padding(tiny_lm):
    policy = PolicyWithValueHead(copy.deepcopy(tiny_lm))
    q = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
    qm = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    r = torch.tensor([[11, 12, 1], [13, 14, 15]])
    rm = torch.tensor([[1, 1, 0], [1, 1, 1]])
    logprobs, logits, values = response_logprobs_and_values(policy, q, qm, r, rm)
    assert values.abs().max() == 0
    alone, _, _ = response_logprobs_and_values(policy, q[:1, 2:], qm[:1, 2:], r[:1, :2], rm[:1, :2])
    torch.testing.assert_close(logprobs[:1, :2], alone, atol=1e-5, rtol=0)
    assert logprobs[0, 2] == 0


def test_truncate_responses_cuts_each_row():
    ids = torch.arange(12).view(2, 6)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0  # row 1 stopped at EOS after 4 tokens
    cut_ids, cut_mask = truncate_responses(ids, mask, torch.tensor([2, 5]), pad_id=-1)
    assert cut_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert cut_ids.tolist() == [[0, 1, -1, -1], [6, 7, 8, 9]]


def test_prompt_batches_cover_the_prompts_once_per_epoch():
    prompts = [[i] for i in range(10)]
    epoch = sum((sample_prompt_batch(prompts, 5, step, seed=0) for step in range(2)), [])
    assert sorted(p[0] for p in epoch) == list(range(10))
    assert sample_prompt_batch(prompts, 5, 3, seed=0) == sample_prompt_batch(prompts, 5, 3, seed=0)


@pytest.mark.slow
def test_ppo_runs_end_to_end(tiny_lm, small_tokenizer, prompts, tmp_path):
    trainer = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path)
    history = trainer.train(progress=False)
    assert len(history) == 4
    first = history[0]
    assert abs(first["kl"]) < 1e-5  # policy == reference before the first update
    for stats in history:
        for key in ("score", "kl", "entropy", "clip_fraction", "approx_kl", "value_loss", "explained_variance",
                    "response_length", "time_generate", "time_score", "time_update", "episodes_per_second"):
            assert key in stats and stats[key] == stats[key], key  # present and not NaN
        assert 3 <= stats["response_length"] <= 6
    assert history[-1]["kl"] != 0  # the policy moved
    trainer.save(tmp_path / "final")
    reloaded = PolicyWithValueHead.from_pretrained(tmp_path / "final")
    trained = trainer.accelerator.unwrap_model(trainer.policy)
    torch.testing.assert_close(reloaded.value_head.weight, trained.value_head.weight)
    assert (tmp_path / "final" / "run_card_ppo.json").exists()


@pytest.mark.slow
def test_resume_continues_the_same_trajectory(tiny_lm, small_tokenizer, prompts, tmp_path):
    straight = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path / "a")
    straight.train(progress=False)

    interrupted = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path / "b")
    interrupted.train(progress=False, stop_after=2)  # "killed" after 2 steps (checkpoint at step 2)
    resumed = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path / "b")
    assert resumed.maybe_resume() and resumed.state["step"] == 2
    resumed.train(progress=False)

    assert [h["score"] for h in resumed.state["history"]] == pytest.approx([h["score"] for h in straight.state["history"]])
    assert resumed.kl_controller.value == pytest.approx(straight.kl_controller.value)
    for a, b in zip(straight.accelerator.unwrap_model(straight.policy).parameters(),
                    resumed.accelerator.unwrap_model(resumed.policy).parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_nan_reward_stops_with_the_step_and_keeps_the_checkpoint(tiny_lm, small_tokenizer, prompts, tmp_path):
    trainer = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path)
    trainer.train(progress=False, stop_after=2)
    calls = {"n": 0}

    def broken(texts):
        return torch.full((len(texts),), float("nan"))

    trainer.reward_fn = broken
    with pytest.raises(FloatingPointError, match="step 2"):
        trainer.train(progress=False)
    assert (tmp_path / "checkpoint" / "trainer_state.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=8, mini_batch_size=3), "not divisible"),
    (dict(init_kl_coef=-0.1), "init_kl_coef must be a finite number >= 0"),
    (dict(response_max_tokens=45), "context"),
    (dict(response_min_tokens=7, response_max_tokens=6), "empty or reversed"),
])
def test_bad_settings_are_clear_errors(tiny_lm, small_tokenizer, prompts, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path, **overrides)


# ----------------------------------------------------------------------------------------------
# The fast path (PPOConfig.fast_path): the same numbers up to rounding, the same distribution
# ----------------------------------------------------------------------------------------------


def test_fast_forward_gives_the_plain_log_probs_values_and_entropy(tiny_lm):
    from rlhf_helpers.policy.logprobs import response_logprobs
    from rlhf_helpers.ppo.losses import entropy_from_log_softmax, entropy_from_logits

    torch.manual_seed(0)
    policy = PolicyWithValueHead(copy.deepcopy(tiny_lm))
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)  # non-zero values, so they are compared too
    q = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
    qm = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    r = torch.tensor([[11, 12, 1], [13, 14, 15]])
    rm = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for temperature in (1.0, 0.7):
        plain = response_logprobs_and_values(policy, q, qm, r, rm, temperature)
        fast = response_logprobs_and_values(policy, q, qm, r, rm, temperature, fast=True)
        torch.testing.assert_close(fast[0], plain[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(fast[2], plain[2], atol=1e-6, rtol=0)
        # the fast path's log-softmax is [M, V] at the real response tokens, row-major
        torch.testing.assert_close(entropy_from_log_softmax(fast[1]), entropy_from_logits(plain[1])[rm.bool()],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(response_logprobs(tiny_lm, q, qm, r, rm, temperature, response_only=True),
                                   response_logprobs(tiny_lm, q, qm, r, rm, temperature), atol=1e-5, rtol=0)


def test_fast_ppo_update_gives_the_plain_losses_on_the_same_rollout(tiny_lm, small_tokenizer, prompts, tmp_path):
    from rlhf_helpers.ppo.trainer import ppo_update

    trainer = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path / "plain")
    trainer.step()
    rollout = trainer.last_rollout
    results = {}
    for fast in (False, True):
        t = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path / str(fast), fast_path=fast)
        results[fast] = ppo_update(t.policy, t.optimizer, t.accelerator, rollout, t.config, step=0)
    for key in ("policy_loss", "value_loss", "entropy", "clip_fraction", "ratio_mean"):
        assert results[True][key] == pytest.approx(results[False][key], abs=1e-4), key


def test_inverse_cdf_sampling_draws_from_the_distribution():
    from rlhf_helpers.policy.generation import _sample_inverse_cdf

    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2]).repeat(40_000, 1)
    tokens = _sample_inverse_cdf(probs, torch.Generator().manual_seed(0)).squeeze(-1)
    counts = torch.bincount(tokens, minlength=5).double() / len(tokens)
    assert counts[0] == 0 and counts[2] == 0, "a token of probability 0 was drawn"
    torch.testing.assert_close(counts, probs[0].double(), atol=0.01, rtol=0)



def test_rollouts_are_scored_in_bf16_only_on_the_fast_path_with_bf16_passes():
    from rlhf_helpers.ppo.trainer import reward_autocast_dtype

    assert reward_autocast_dtype(PPOConfig(fast_path=True, mixed_precision="bf16")) is torch.bfloat16
    assert reward_autocast_dtype(PPOConfig(fast_path=False, mixed_precision="bf16")) is None
    assert reward_autocast_dtype(PPOConfig(fast_path=True, mixed_precision="no")) is None
