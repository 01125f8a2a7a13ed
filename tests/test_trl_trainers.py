"""TRL's GRPO and RLOO on our task (`rlhf_helpers.beyond_ppo.grpo_rloo`), on a 1-layer, 16-wide random GPT-2.

Nothing is downloaded: the policy is random weights saved to a temporary directory with the `small_tokenizer`
(TRL reloads the reference model from that directory), and the reward is a dummy function in TRL's format.
"""

import pytest
import torch
from datasets import Dataset
from transformers import GPT2LMHeadModel

from rlhf_helpers.config import PPOConfig, get_config
from rlhf_helpers.core.tensors import position_ids_from_mask
from rlhf_helpers.data import build_dataset
from rlhf_helpers.policy import load_policy
from rlhf_helpers.policy.logprobs import response_logprobs

trl = pytest.importorskip("trl")
from rlhf_helpers.beyond_ppo import grpo_rloo as tt  # noqa: E402  (needs trl)

# transformers 5 deprecates a name TRL 1.16 still calls; not ours to fix.
pytestmark = [pytest.mark.slow,  # TRL's trainers train
              pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning", "ignore::UserWarning")]

PROMPTS = ["This movie was", "I rented", "The acting in this film", "A"]  # 1 to 5 tokens: batches get left padding


def varied_reward(prompts, completions, **kwargs):
    """A dummy reward in TRL's format that differs between completions (so advantages are not all 0)."""
    return [float(sum(map(ord, c)) % 7) for c in completions]


def build(algorithm, tiny_gpt2_dir, tokenizer, tmp_path, beta):
    ppo = PPOConfig(batch_size=8, mini_batch_size=8, ppo_epochs=1, response_max_tokens=4, max_steps=1,
                    init_kl_coef=beta)
    args = tt.trl_config(algorithm, tmp_path, ppo, num_generations=4)
    return tt.TRAINERS[algorithm][1](model=str(tiny_gpt2_dir), reward_funcs=[varied_reward], args=args,
                                     processing_class=tokenizer, train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def left_padded_batch(tokenizer):
    """[left-padded prompt | right-padded completion] of 4 rows; prompts of 1-5 tokens, completions of 1-4."""
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(map(len, rows))
    prompt_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    prompt_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        prompt_ids[i, width - len(r):], prompt_mask[i, width - len(r):] = torch.tensor(r), 1
    g = torch.Generator().manual_seed(1)
    completion_ids = torch.randint(2, len(tokenizer), (len(rows), 4), generator=g)
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    assert (prompt_mask == 0).any(1).sum() >= 3  # most rows padded, as with our 2-8 token prompts
    return prompt_ids, prompt_mask, completion_ids, completion_mask


# ----------------------------------------------------------------------------------------------
# Adapters: reward and prompts
# ----------------------------------------------------------------------------------------------


def test_reward_function_scores_prompt_plus_completion():
    seen = []

    class FakeScorer:
        def score(self, texts):
            seen.extend(texts)
            return torch.arange(len(texts), dtype=torch.float32) / 2

    fn = tt.reward_function(FakeScorer(), name="rm")
    out = fn(prompts=["A good", "A bad"], completions=[" film.", " plot"], completion_ids=[[1], [2]], label=[1, 0])
    assert out == [0.0, 0.5] and all(isinstance(x, float) for x in out)
    assert seen == ["A good film.", "A bad plot"]  # query text + response text, as PPO scores
    assert fn.__name__ == "rm"  # TRL logs rewards/rm/mean
    with pytest.raises(TypeError, match="plain-text"):
        fn(prompts=[[{"role": "user", "content": "x"}]], completions=["y"])


def test_prompt_dataset_gives_trl_our_token_ids(small_tokenizer, imdb):
    config = get_config("tiny")
    rows = imdb.select(range(300))
    ours = build_dataset(small_tokenizer, config, split="train", dataset=rows)
    ids = [r.tolist() for r in ours["input_ids"]]
    bad = tt.retokenization_mismatches(small_tokenizer, ids, list(ours["query"]))
    prompts = tt.trl_prompt_dataset(small_tokenizer, config, split="train", dataset=rows)
    assert prompts.column_names == ["prompt", "label"]
    assert len(prompts) == len(ours) - len(bad)
    # What TRL 1.16 does with the column (GRPOTrainer._tokenize_prompts) gives back our PPO prompt ids.
    kept = [ids[i] for i in range(len(ids)) if i not in set(bad)]
    assert small_tokenizer(text=list(prompts["prompt"]))["input_ids"] == kept
    assert all(2 <= len(r) <= 8 for r in kept)
    # The one way they part: a prompt cut inside a multi-byte character decodes to U+FFFD, which re-encodes
    # differently. Build such a row by hand.
    cut = small_tokenizer("café", add_special_tokens=False)["input_ids"][:-1]  # "é" is two byte tokens here
    text = small_tokenizer.decode(cut)
    assert text == "caf\ufffd"
    assert tt.retokenization_mismatches(small_tokenizer, [cut], [text]) == [0]
    all_kept = tt.trl_prompt_dataset(small_tokenizer, config, split="train", dataset=rows, drop_mismatched=False)
    assert len(all_kept) == len(ours)


# ----------------------------------------------------------------------------------------------
# The position-id fix
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_logprobs_with_the_fix_equal_ours_on_left_padded_rows(algorithm, tiny_gpt2_dir, small_tokenizer, tmp_path):
    trainer = build(algorithm, tiny_gpt2_dir, small_tokenizer, tmp_path, beta=0.1)
    prompt_ids, prompt_mask, completion_ids, completion_mask = left_padded_batch(small_tokenizer)
    ids, mask = torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1)
    width = completion_ids.shape[1]
    padded = (prompt_mask == 0).any(1)
    for model in (trainer.model, trainer.ref_model):  # the policy (ratio) and the reference (KL)
        with torch.no_grad():
            fixed = trainer._get_per_token_logps_and_entropies(model, ids, mask, width)[0]
            # TRL's own method, without the override:
            plain = super(type(trainer), trainer)._get_per_token_logps_and_entropies(model, ids, mask, width)[0]
            ours = response_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        assert ((fixed - ours) * completion_mask).abs().max() < 1e-5
        # Without the fix, padded rows differ (see tests/test_trl_parity.py); unpadded rows agree either way.
        gap = ((plain - ours) * completion_mask).abs().amax(1)
        assert gap[padded].min() > 1e-3 and gap[~padded].max() < 1e-5


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_generation_already_uses_positions_from_the_mask(algorithm, tiny_gpt2_dir, small_tokenizer, tmp_path):
    """TRL samples with ``model.generate(input_ids, attention_mask)``; transformers builds the position ids from
    the mask. Spy on what reaches GPT-2's transformer during TRL's own ``_generate``."""
    trainer = build(algorithm, tiny_gpt2_dir, small_tokenizer, tmp_path, beta=0.0)
    calls = []
    hook = trainer.model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs.get("position_ids"), kwargs.get("attention_mask"))),
        with_kwargs=True)
    try:
        trainer._generate(PROMPTS)
    finally:
        hook.remove()
    positions, mask = calls[0]  # the prompt pass
    real = mask.bool()
    assert not real.all()  # the prompts were left-padded
    assert torch.equal(positions[real], position_ids_from_mask(mask)[real])
    lengths = mask.sum(1)
    for step, (positions, _) in enumerate(calls[1:]):  # one new token per call, counted from each row's start
        assert torch.equal(positions[:, -1], lengths + step)


# ----------------------------------------------------------------------------------------------
# Training: two steps of each, save and reload, the wall-clock budget
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_two_steps_train_save_and_reload(algorithm, tiny_gpt2_dir, tmp_path):
    out = tmp_path / algorithm
    ppo = PPOConfig(max_minutes=None, max_steps=2, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                    response_max_tokens=4, learning_rate=1e-3)
    result = tt.train_trl(algorithm, out, ppo, policy=tiny_gpt2_dir, reward_fn=varied_reward,
                          prompts=Dataset.from_dict({"prompt": PROMPTS}), num_generations=4)
    assert result["steps"] == 2 and result["optimizer_steps"] == 2 * 2 * 2  # 2 rounds x 2 mini-batches x 2 epochs
    assert result["episodes"] == 16 and not result["stopped_by_budget"]
    history = result["history"]
    assert [h["step"] for h in history] == [1, 2]
    assert 0 < history[0]["seconds"] <= history[1]["seconds"] <= result["train_seconds"]
    for h in history:
        assert 0 <= h["score"] <= 6 and h["kl"] is not None and h["kl_per_response"] is not None
        assert 1 <= h["response_length"] <= 4
    assert result["settings"]["beta"] == 0.2 and result["settings"]["num_iterations"] == 2
    assert (out / f"run_card_{algorithm}.json").exists()

    trained, tokenizer = load_policy(out)
    initial = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    assert len(tokenizer) == initial.config.vocab_size
    moved = max((a - b).abs().max().item() for a, b in zip(trained.parameters(), initial.parameters()))
    assert moved > 1e-4  # it trained


def test_wall_clock_budget_stops_training(tiny_gpt2_dir, tmp_path):
    ppo = PPOConfig(max_minutes=1e-6, max_steps=50, batch_size=8, mini_batch_size=4, ppo_epochs=2,
                    response_max_tokens=4)
    result = tt.train_trl("grpo", tmp_path / "budget", ppo, policy=tiny_gpt2_dir, reward_fn=varied_reward,
                          prompts=Dataset.from_dict({"prompt": PROMPTS}), num_generations=4)
    # The budget is spent during the first round; the round is finished (2 x 2 Adam steps), then training stops.
    assert result["stopped_by_budget"] and result["steps"] == 1 and result["optimizer_steps"] == 4
    assert len(result["history"]) == 1


class CountingEvaluator:
    """A stand-in for `HeldOutEvaluator`: records the policies it was shown, returns one number that moves."""

    def __init__(self):
        self.calls, self.last_samples = [], [{"query": "q", "response": "r"}]

    def __call__(self, policy_lm):
        assert not policy_lm.training  # a plain float32 copy, in eval mode
        weight = next(policy_lm.parameters())
        self.calls.append(weight.detach().clone())
        return {"kl": float(len(self.calls) - 1), "weight_sum": float(weight.sum())}


def test_the_held_out_callback_evaluates_along_the_run_and_stops_it_early(tiny_gpt2_dir, tmp_path):
    """Evaluations at round 0, every 2 rounds, and at the stop (3 of the planned 6 rounds); the learning rate keeps
    the 6-round schedule; the rows are written beside the model."""
    ppo = PPOConfig(max_minutes=None, max_steps=6, batch_size=8, mini_batch_size=4, ppo_epochs=1,
                    response_max_tokens=4, learning_rate=1e-3)
    evaluator = CountingEvaluator()
    out = tmp_path / "evaluated"
    result = tt.train_trl("rloo", out, ppo, policy=tiny_gpt2_dir, reward_fn=varied_reward,
                          prompts=Dataset.from_dict({"prompt": PROMPTS}), num_generations=4, evaluator=evaluator,
                          eval_every=2, until_step=3, keep_samples=1)
    assert result["steps"] == 3 and result["optimizer_steps"] == 3 * 2
    rows = result["evaluations"]
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert rows[0]["train_seconds"] == 0.0 and rows[0]["train_seconds"] <= rows[1]["train_seconds"] <= rows[2]["train_seconds"]
    assert rows[-1]["samples"] == evaluator.last_samples
    assert not torch.equal(evaluator.calls[0], evaluator.calls[-1])  # it saw the policy move
    # the schedule decays over the planned 6 rounds: at the stop (round 3) the rate is still about half the peak
    assert result["history"][-1]["learning_rate"] == pytest.approx(1e-3 * (1 - 5 / 12), rel=0.2)
    import json
    assert [r["step"] for r in json.loads((out / "evaluations.json").read_text())] == [0, 2, 3]
