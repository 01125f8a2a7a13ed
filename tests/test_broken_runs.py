"""The broken runs of notebook 07's capstone (`rlhf_helpers.evaluation.broken_runs`): each bug is really injected.

One or two PPO steps on a random tiny GPT-2 (the fast path, as the tiny profile's recipe) with each bug, against the
same steps without it: the statistic that should change does, and the healthy run does not show it.
"""

import copy

import pytest
import torch

from rlhf_helpers.config import PPOConfig
from rlhf_helpers.evaluation.broken_runs import BUGS, HEALTHY, injected, make_trainer, run_labels
from rlhf_helpers.ppo import rollout as rollout_module
from rlhf_helpers.ppo import trainer as trainer_module
from rlhf_helpers.ppo.advantages import masked_whiten


@pytest.fixture(scope="module")
def prompts(small_tokenizer):
    texts = ["The movie was", "I rented this", "This film is", "What a", "Honestly the acting", "My wife and I",
             "The plot", "It is a shame"]
    return [small_tokenizer.encode(t) for t in texts]


class LetterScorer:
    """A toy reward model: how often the letter 'e' appears. `score_raw` is on another scale (x 3, + 1), `score`
    its normalised version, as `RewardScorer`'s two methods."""

    def score_raw(self, texts):
        return torch.tensor([t.count("e") / max(len(t), 1) * 30 - 2 for t in texts])

    def score(self, texts):
        return (self.score_raw(texts) - 1) / 3


def trainer_with(bug, tiny_lm, tokenizer, prompts, out):
    config = PPOConfig(max_steps=4, max_minutes=None, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                       learning_rate=1e-3, response_min_tokens=3, response_max_tokens=6, checkpoint_every=100, seed=0,
                       fast_path=True, mixed_precision="no")  # float32, as the other training tests
    return make_trainer(bug, copy.deepcopy(tiny_lm), tokenizer, LetterScorer(), prompts, config, out)


def steps(bug, tiny_lm, tokenizer, prompts, out, n=1):
    trainer = trainer_with(bug, tiny_lm, tokenizer, prompts, out)
    with injected(bug):
        history = [trainer.step() for _ in range(n)]
    return trainer, history


def test_the_registry_names_a_healthy_run_and_at_least_six_bugs():
    assert HEALTHY in BUGS and len(BUGS) >= 7
    assert all(bug.what for bug in BUGS.values())
    labels = run_labels(BUGS)
    assert sorted(labels.values()) == sorted(BUGS) and labels == run_labels(BUGS)  # every run once, the same labels
    assert list(labels) == [f"run {c}" for c in "ABCDEFGHIJ"[:len(BUGS)]]


@pytest.mark.parametrize("name", [n for n, bug in BUGS.items() if bug.patches])
def test_the_trainer_calls_each_replaced_function_on_the_fast_path_and_gets_it_back(name, tiny_lm, small_tokenizer,
                                                                                     prompts, tmp_path):
    """A replacement the trainer never looks up would inject nothing: count the calls through the patched names."""
    originals = {(module, attr): getattr(module, attr) for module, attr, _ in BUGS[name].patches}
    calls = {attr: 0 for _, attr, _ in BUGS[name].patches}
    trainer = trainer_with(name, tiny_lm, small_tokenizer, prompts, tmp_path)
    with injected(name):
        for module, attr, replacement in BUGS[name].patches:
            assert getattr(module, attr) is replacement

            def counting(*args, _f=replacement, _attr=attr, **kwargs):
                calls[_attr] += 1
                return _f(*args, **kwargs)

            setattr(module, attr, counting)
        try:
            trainer.step()
        finally:
            for module, attr, replacement in BUGS[name].patches:
                setattr(module, attr, replacement)
    assert all(count > 0 for count in calls.values()), calls
    assert all(getattr(module, attr) is original for (module, attr), original in originals.items())


def test_injected_restores_the_functions_after_an_error():
    original = rollout_module.per_token_rewards
    with pytest.raises(RuntimeError):
        with injected("kl_sign_flipped"):
            assert rollout_module.per_token_rewards is not original
            raise RuntimeError("a step failed")
    assert rollout_module.per_token_rewards is original


def test_the_flipped_kl_penalty_pays_for_kl(tiny_lm, small_tokenizer, prompts, tmp_path):
    """Sum of a response's rewards = score - beta * KL when healthy, score + beta * KL with the sign flipped."""
    for name, sign in [(HEALTHY, -1), ("kl_sign_flipped", +1)]:
        trainer, history = steps(name, tiny_lm, small_tokenizer, prompts, tmp_path / name, n=2)
        r = trainer.last_rollout
        kl = (r.kl * r.response_mask).sum(1)
        assert kl.abs().max() > 1e-3  # the policy moved after step 1: there is a KL to pay or be paid for
        torch.testing.assert_close((r.rewards * r.response_mask).sum(1), r.scores + sign * history[-1]["kl_coef"] * kl)


def test_the_policy_as_its_own_reference_reads_kl_zero_while_it_trains(tiny_lm, small_tokenizer, prompts, tmp_path):
    healthy, healthy_history = steps(HEALTHY, tiny_lm, small_tokenizer, prompts, tmp_path / "h", n=2)
    broken, history = steps("reference_is_policy", tiny_lm, small_tokenizer, prompts, tmp_path / "b", n=2)
    assert abs(healthy_history[1]["kl"]) > 1e-3
    assert broken.reference is broken.accelerator.unwrap_model(broken.policy).lm
    assert history[1]["kl"] == pytest.approx(0.0, abs=1e-6)
    moved = [not torch.equal(p, q) for p, q in zip(broken.reference.parameters(), tiny_lm.parameters())]
    assert any(moved), "the policy must still train (the trainer freezes its reference: here that is the policy)"


def test_raw_scores_are_the_reward(tiny_lm, small_tokenizer, prompts, tmp_path):
    trainer, history = steps("raw_scores", tiny_lm, small_tokenizer, prompts, tmp_path)
    texts = [q + r for q, r in zip(trainer.last_rollout.queries, trainer.last_rollout.responses)]
    torch.testing.assert_close(trainer.last_rollout.scores, LetterScorer().score_raw(texts))
    _, healthy = steps(HEALTHY, tiny_lm, small_tokenizer, prompts, tmp_path / "h")
    assert history[0]["score"] == pytest.approx(3 * healthy[0]["score"] + 1, rel=1e-5)  # the same samples


def test_without_the_value_loss_the_value_head_stays_zero(tiny_lm, small_tokenizer, prompts, tmp_path):
    healthy, _ = steps(HEALTHY, tiny_lm, small_tokenizer, prompts, tmp_path / "h", n=2)
    broken, history = steps("no_value_loss", tiny_lm, small_tokenizer, prompts, tmp_path / "b", n=2)
    assert broken.config.vf_coef == 0
    assert broken.accelerator.unwrap_model(broken.policy).value_head.weight.abs().max() == 0
    assert healthy.accelerator.unwrap_model(healthy.policy).value_head.weight.abs().max() > 0
    assert history[1]["explained_variance"] == 0.0


def test_negated_advantages_are_minus_the_whitened_ones():
    torch.manual_seed(0)
    x, mask = torch.randn(4, 6), torch.ones(4, 6)
    mask[1, 3:] = 0
    with injected("advantages_negated"):
        (out,) = trainer_module.masked_whiten_shards([(x, mask)])
    torch.testing.assert_close(out, -masked_whiten(x, mask))


def test_with_the_ratio_always_one_nothing_is_ever_clipped(tiny_lm, small_tokenizer, prompts, tmp_path):
    """Two epochs: in the second the policy has moved, so a healthy ratio is no longer 1."""
    _, healthy = steps(HEALTHY, tiny_lm, small_tokenizer, prompts, tmp_path / "h")
    _, broken = steps("ratio_always_one", tiny_lm, small_tokenizer, prompts, tmp_path / "b")
    assert healthy[0]["approx_kl"] > 0 and healthy[0]["ratio_mean"] != 1.0
    assert broken[0]["clip_fraction"] == 0.0 and broken[0]["approx_kl"] == 0.0 and broken[0]["ratio_mean"] == 1.0


def test_the_top_p_mismatch_reads_a_kl_before_the_policy_moved(tiny_lm, small_tokenizer, prompts, tmp_path):
    """At step 1 the policy is the reference: KL 0, unless the rollout's log-probs come from another distribution."""
    _, healthy = steps(HEALTHY, tiny_lm, small_tokenizer, prompts, tmp_path / "h")
    trainer, broken = steps("top_p_mismatch", tiny_lm, small_tokenizer, prompts, tmp_path / "b")
    assert trainer.config.top_p < 1
    assert healthy[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert broken[0]["kl"] > 0.05
    r = trainer.last_rollout
    assert ((r.logprobs >= r.ref_logprobs) | (r.response_mask == 0)).all()  # the nucleus renormalised: p rises
