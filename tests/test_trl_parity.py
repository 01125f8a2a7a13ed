"""Parity with the installed TRL (pinned 1.16): our formulas against TRL's own code on fixed small batches.

These tests exist to break loudly when TRL changes a formula that notebook 04 explains. Each one runs TRL's
real method where that is possible, on a real ``GRPOTrainer`` / ``RLOOTrainer`` built around a 1-layer,
16-wide random GPT-2 saved to a temporary directory (TRL rebuilds the reference model from that path).
Log-probs come from TRL's own forward pass. Only sampling is avoided: the GRPO tests call ``_compute_loss`` on a
fixed batch, and the RLOO test replaces ``_generate`` by fixed token ids, so every batch is known exactly.

* Bradley–Terry (RewardTrainer): covered end to end in ``test_reward_model.py``
  (``test_our_loss_equals_trl_reward_trainer_loss_on_a_fixed_batch``); here only the optional centring term.
* GRPO's per-token KL (k3) and clipped surrogate: ``GRPOTrainer._compute_loss``.
* RLOO's KL-in-reward (k1, summed over tokens) and leave-one-out advantages, including how TRL orders the
  k completions of a prompt: ``RLOOTrainer._get_train_sampler`` and ``_generate_and_score_completions``.
* Where TRL's log-probs and ours part: TRL scores left-padded prompts without position ids.
"""

import warnings
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhf_helpers.data.tokenizer import train_bpe_tokenizer
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.ppo.advantages import leave_one_out_advantages, masked_mean
from rlhf_helpers.ppo.kl import kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss
from rlhf_helpers.reward.model import bradley_terry_loss

trl = pytest.importorskip("trl")

# transformers 5 deprecates a name TRL 1.16 still calls; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TEXTS = ["a good film with great acting", "a bad film with an awful plot", "the music was fine, the end was not"]
PROMPTS = ["a good", "a bad", "the music"]
K = 3  # completions per prompt


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS * 10, vocab_size=300)


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    """A random 1-layer GPT-2 saved to disk: with beta > 0, TRL loads the reference model from this path."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        initializer_range=0.5,  # large weights: log-probs far from uniform, so KLs are not tiny
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def build_trainer(kind, model_dir, tokenizer, output_dir, reward_fn, **config):
    """A real ``GRPOTrainer`` or ``RLOOTrainer`` on CPU, nothing logged, nothing downloaded."""
    config_cls, trainer_cls = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # disable_dropout: TRL 1.16 defaults to False; with dropout on, train-mode log-probs are random
        # (Huang et al. 2023, detail 4), so the same batch could not be scored twice.
        args = config_cls(output_dir=str(output_dir), report_to="none", use_cpu=True, bf16=False, seed=0,
                          disable_dropout=True,
                          num_generations=K, per_device_train_batch_size=K * len(PROMPTS), max_completion_length=4,
                          **config)
        return trainer_cls(model=model_dir, reward_funcs=[reward_fn], args=args,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer)


def fixed_batch(tokenizer, n_rows):
    """Token-id lists of ``n_rows`` prompts (cycling through PROMPTS) and of random completions of 1 or 3 tokens."""
    g = torch.Generator().manual_seed(1)
    prompt_rows = [tokenizer(PROMPTS[i % len(PROMPTS)], add_special_tokens=False)["input_ids"] for i in range(n_rows)]
    lengths = [1 + (i * 2) % 4 for i in range(n_rows)]  # 1, 3, 1, 3, ... completion tokens (max 4)
    completion_rows = [torch.randint(2, len(tokenizer), (n,), generator=g).tolist() for n in lengths]
    return prompt_rows, completion_rows


def pad(rows, value, side):
    """``[N, longest]`` ids and 0/1 mask of token-id lists padded on the ``side`` ("left" or "right") with ``value``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r), 1
    return ids, mask


def zero_reward(prompts, completions, **kwargs):
    """A reward function in TRL's format: one float per completion."""
    return [0.0] * len(prompts)


# ----------------------------------------------------------------------------------------------
# RewardTrainer: Bradley–Terry + the centring term, through RewardTrainer.compute_loss
# ----------------------------------------------------------------------------------------------


class FixedRewards(torch.nn.Module):
    """Stands in for the reward model: the given rewards as a classifier's ``[2B, 1]`` logits (chosen first)."""

    def __init__(self, chosen, rejected):
        super().__init__()
        self.logits = torch.cat([chosen, rejected])[:, None]

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.logits)


def test_reward_trainer_centring_term_is_a_mean_square_added_to_bradley_terry(tokenizer, tmp_path):
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    pairs = Dataset.from_list([{"chosen_ids": [5, 6, 7], "rejected_ids": [8, 9]}] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trl.RewardTrainer(
            model=GPT2ForSequenceClassification(config), train_dataset=pairs, processing_class=tokenizer,
            args=trl.RewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                                  gradient_checkpointing=False, max_length=None, center_rewards_coefficient=0.01))
    r_c, r_r = torch.tensor([2.0, 0.5, -1.0, 3.0]), torch.tensor([0.0, 0.5, 1.0, 2.5])
    batch = {"attention_mask": torch.ones(8, 1, dtype=torch.long)}  # TRL counts tokens from it in train mode
    loss = trainer.compute_loss(FixedRewards(r_c, r_r), dict(batch)).item()
    centring = 0.01 * ((r_c + r_r) ** 2).mean().item()  # Eisenstein et al. 2023, eq. 2, as TRL's docs cite
    assert loss == pytest.approx(bradley_terry_loss(r_c, r_r).item() + centring, rel=1e-6)
    trainer.args.center_rewards_coefficient = None
    assert trainer.compute_loss(FixedRewards(r_c, r_r), dict(batch)).item() == pytest.approx(
        bradley_terry_loss(r_c, r_r).item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# GRPO: the per-token KL (k3) and the clipped surrogate, through GRPOTrainer._compute_loss
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo(model_dir, tokenizer, tmp_path_factory):
    """A GRPO trainer with beta > 0 and a fixed batch, with TRL's own log-probs of the batch's completions."""
    trainer = build_trainer("grpo", model_dir, tokenizer, tmp_path_factory.mktemp("grpo"), zero_reward,
                            beta=0.1, loss_type="grpo")
    assert not trainer.model.training  # eval mode: metrics go to _metrics["eval"], no grad-accumulation scaling
    prompt_rows, completion_rows = fixed_batch(tokenizer, n_rows=4)
    prompt_ids, prompt_mask = pad(prompt_rows, tokenizer.pad_token_id, "left")
    completion_ids, completion_mask = pad(completion_rows, tokenizer.pad_token_id, "right")
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1),
            completion_ids.shape[1])
    g = torch.Generator().manual_seed(2)
    batch = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        # A reference that disagrees with the policy by about 1 nat per token (standard normal noise), so k3
        # is far from its second-order approximation and a changed formula cannot hide in rounding.
        "ref_per_token_logps": logps + torch.randn(logps.shape, generator=g),
    }
    return trainer, batch, logps


def grpo_call(trainer, batch, **inputs):
    """Run TRL's real ``_compute_loss``; return (loss, the KL metric it logged, None if it logged none)."""
    trainer._metrics["eval"].clear()  # so a metric from an earlier call cannot be mistaken for this one's
    loss = trainer._compute_loss(trainer.model, {**batch, **inputs})
    kl_log = trainer._metrics["eval"].get("kl")
    return loss.detach(), (kl_log[-1] if kl_log else None)


def test_grpo_per_token_kl_is_our_k3_estimator(grpo):
    trainer, batch, logps = grpo
    mask = batch["completion_mask"]
    n_rows = mask.shape[0]
    ours = kl_penalty(logps, batch["ref_per_token_logps"], estimator="k3")  # [B, T]
    trainer.args.use_bias_correction_kl = False  # plain k3 (the DeepSeek-V3.2 reweighting is tested below)
    try:
        loss, kl_metric = grpo_call(trainer, batch, advantages=torch.zeros(n_rows))
    finally:
        trainer.args.use_bias_correction_kl = True
    # The logged metric is the masked mean of per_token_kl over all real tokens ...
    assert kl_metric == pytest.approx(masked_mean(ours, mask).item(), rel=1e-5)
    # ... and with zero advantages the loss is beta * k3 alone, averaged per sequence then over sequences
    # (loss_type="grpo"): a second, per-row view of the same per-token values.
    per_row = (ours * mask).sum(1) / mask.sum(1)
    assert loss.item() == pytest.approx(trainer.beta * per_row.mean().item(), rel=1e-5)
    # k1 would give a different (and here negative-capable) number: the test can tell the estimators apart.
    assert abs(masked_mean(kl_penalty(logps, batch["ref_per_token_logps"], "k1"), mask).item() - kl_metric) > 1e-2


def test_grpo_kl_bias_correction_multiplies_k3_by_the_importance_ratio(grpo):
    """TRL 1.16 default ``use_bias_correction_kl=True``: per_token_kl = k3 * pi_theta / pi_old (1 when on-policy)."""
    trainer, batch, logps = grpo
    mask = batch["completion_mask"]
    assert trainer.args.use_bias_correction_kl is True  # the installed default
    ours = kl_penalty(logps, batch["ref_per_token_logps"], estimator="k3")
    _, on_policy = grpo_call(trainer, batch, advantages=torch.zeros(mask.shape[0]))  # old logps = current
    assert on_policy == pytest.approx(masked_mean(ours, mask).item(), rel=1e-5)
    shift = 0.3 * torch.linspace(-1, 1, logps.numel()).reshape(logps.shape)
    _, off_policy = grpo_call(trainer, batch, advantages=torch.zeros(mask.shape[0]), old_per_token_logps=logps - shift)
    assert off_policy == pytest.approx(masked_mean(ours * torch.exp(shift), mask).item(), rel=1e-5)


def test_grpo_clipped_surrogate_is_our_ppo_clip_loss(grpo):
    """With beta = 0 and ``loss_type="bnpo"`` (mean over all real tokens), GRPO's loss is PPO's clip loss
    with the sequence's advantage at every token."""
    trainer, batch, logps = grpo
    mask = batch["completion_mask"]
    advantages = torch.tensor([1.5, -0.7, 0.4, -1.2])
    # log(pi_theta / pi_old) per token, chosen so every case of the clip occurs (eps = 0.2; 9.0 = padding):
    # row 0, A > 0, ratio 1.65: clipped at 1.2;   row 1, A < 0: ratio 0.61 clipped at 0.8, 1.11 and 1.35 not;
    # row 2, A > 0, ratio 1.11: inside;           row 3, A < 0: ratio 1.49 NOT clipped (harmful side), 0.74 clipped.
    assert mask.tolist() == [[1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]]
    log_ratio = torch.tensor([[0.5, 9.0, 9.0], [-0.5, 0.1, 0.3], [0.1, 9.0, 9.0], [0.4, -0.1, -0.3]])
    old = logps - log_ratio
    beta, loss_type = trainer.beta, trainer.loss_type
    trainer.beta, trainer.loss_type = 0.0, "bnpo"
    try:
        loss, kl_log = grpo_call(trainer, batch, advantages=advantages, old_per_token_logps=old)
    finally:
        trainer.beta, trainer.loss_type = beta, loss_type
    ours, stats = clipped_policy_loss(logps, old, advantages[:, None].expand_as(logps), mask, clip_range=trainer.epsilon_low)
    assert kl_log is None  # beta = 0: no KL term at all
    assert stats["clip_fraction"] == pytest.approx(3 / 8)
    assert loss.item() == pytest.approx(ours.item(), rel=1e-5)


def test_grpo_log_probs_equal_ours_only_where_the_prompt_is_not_left_padded(grpo, tokenizer):
    """TRL 1.16 scores ``[prompt | completion]`` without ``position_ids``, so GPT-2 (learned absolute positions)
    counts padding as positions: a left-padded row is scored as if its text started later. ``generate`` builds
    positions from the attention mask, so for such rows TRL's log-probs are not those of the sampling distribution.
    Ours use ``cumsum(mask) - 1`` (Huang et al. 2023, detail 2). If this test fails, TRL now passes position ids."""
    trainer, _, _ = grpo
    prompt_rows, completion_rows = fixed_batch(tokenizer, n_rows=4)
    prompt_rows[1] = prompt_rows[1] * 2  # longer prompt: the other three rows get left padding
    prompt_ids, prompt_mask = pad(prompt_rows, tokenizer.pad_token_id, "left")
    completion_ids, completion_mask = pad(completion_rows, tokenizer.pad_token_id, "right")
    with torch.no_grad():
        theirs = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1),
            completion_ids.shape[1])[0]
        ours = response_logprobs(trainer.model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    gap = ((theirs - ours) * completion_mask).abs().amax(dim=1)
    padded = (prompt_mask == 0).any(dim=1)
    assert padded.tolist() == [True, False, True, True]
    assert gap[~padded].max() < 1e-5
    assert gap[padded].min() > 1e-2


# ----------------------------------------------------------------------------------------------
# RLOO: the leave-one-out baseline, by hand
# ----------------------------------------------------------------------------------------------


def test_leave_one_out_advantages_by_hand():
    # Prompt 0: rewards 1, 2, 3 -> baselines (2+3)/2, (1+3)/2, (1+2)/2 = 2.5, 2, 1.5 -> advantages -1.5, 0, 1.5.
    # Prompt 1: rewards 10, 10, 40 -> baselines 25, 25, 10 -> advantages -15, -15, 30.
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    expected = torch.tensor([-1.5, 0.0, 1.5, -15.0, -15.0, 30.0])
    assert torch.equal(leave_one_out_advantages(rewards, 3), expected)
    assert torch.equal(leave_one_out_advantages(rewards.view(2, 3), 3), expected.view(2, 3))
    # The scaled-centring form: A_i = k / (k - 1) * (r_i - group mean).
    grouped = rewards.view(2, 3)
    assert torch.allclose(leave_one_out_advantages(grouped, 3), 1.5 * (grouped - grouped.mean(1, keepdim=True)))
    # Every group's advantages sum to zero; a constant group has no signal.
    assert torch.equal(leave_one_out_advantages(torch.full((4,), 7.0), 2), torch.zeros(4))


def test_leave_one_out_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        leave_one_out_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="groups of k"):
        leave_one_out_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match=r"\[\*, 3\]"):
        leave_one_out_advantages(torch.zeros(2, 2), 3)
    with pytest.raises(ValueError, match="NaN"):
        leave_one_out_advantages(torch.tensor([1.0, float("nan")]), 2)


# ----------------------------------------------------------------------------------------------
# RLOO: TRL's ordering, KL-in-reward and advantages, through RLOOTrainer._generate_and_score_completions
# ----------------------------------------------------------------------------------------------


def test_rloo_repeats_each_prompt_k_times_in_a_row(model_dir, tokenizer, tmp_path):
    """TRL's sampler puts the k copies of a prompt next to each other (like ``repeat_interleave``), which is
    what ``rewards.view(-1, k)`` and our ``leave_one_out_advantages`` assume."""
    trainer = build_trainer("rloo", model_dir, tokenizer, tmp_path, zero_reward, beta=0.0)
    indices = list(trainer._get_train_sampler())[: K * len(PROMPTS)]
    groups = [indices[j * K:(j + 1) * K] for j in range(len(PROMPTS))]
    assert all(len(set(group)) == 1 for group in groups), indices
    assert sorted(group[0] for group in groups) == list(range(len(PROMPTS)))  # each prompt once per batch


def test_rloo_kl_in_reward_and_leave_one_out_advantages_match_ours(model_dir, tokenizer, tmp_path):
    # Distinct scores per completion, looked up from the completion's token ids that TRL passes to reward functions.
    prompt_rows, completion_rows = fixed_batch(tokenizer, n_rows=K * len(PROMPTS))
    score_of = {tuple(ids): float(s) for ids, s in zip(completion_rows, [0.3, -1.2, 2.0, 0.9, 0.1, -0.4, 1.7, -2.2, 0.5])}
    assert len(score_of) == len(completion_rows)  # every completion distinct, so the lookup is unambiguous

    def score_by_completion(prompts, completions, completion_ids, **kwargs):
        return [score_of[tuple(ids)] for ids in completion_ids]

    beta = 0.1
    trainer = build_trainer("rloo", model_dir, tokenizer, tmp_path, score_by_completion, beta=beta)
    assert trainer.normalize_advantages is False and trainer.ref_model is not None
    # Move the policy away from the reference (TRL loaded the reference from model_dir), so the KL is not 0.
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))

    # The batch as TRL's sampler lays it out: prompt j fills rows j*K .. j*K+K-1.
    indices = list(trainer._get_train_sampler())[: K * len(PROMPTS)]
    inputs = [trainer.train_dataset[i] for i in indices]
    prompt_rows = [tokenizer(x["prompt"], add_special_tokens=False)["input_ids"] for x in inputs]
    # Only sampling is replaced: fixed completions instead of model.generate.
    trainer._generate = lambda prompts: (prompt_rows, completion_rows, tokenizer.batch_decode(completion_rows))
    trainer.model.train()  # the training path (dropout is off, so train mode changes no number)
    out = trainer._generate_and_score_completions(inputs)

    # Ours, from the same per-token log-probs (TRL's own forward of the policy and of the reference).
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    width = out["completion_ids"].shape[1]
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, width)[0]
        ref_logps = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, attention, width)[0]
    scores = torch.tensor([score_of[tuple(r)] for r in completion_rows])
    # RLOO's sequence reward = score - beta * sum_t k1_t: the sum over tokens of our PPO per-token rewards.
    rewards, kl = per_token_rewards(scores, logps, ref_logps, out["completion_mask"], beta, estimator="k1")
    sequence_rewards = rewards.sum(1)
    assert kl.abs().sum() > 0.1  # the KL term really takes part
    ours = leave_one_out_advantages(sequence_rewards, K)
    assert torch.allclose(out["advantages"], ours, atol=1e-5)
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(masked_mean(kl, out["completion_mask"]).item(), rel=1e-5)

    # Ordering matters: grouping the same rewards the other way (tiled, p0 p1 p2 p0 p1 p2 ...) gives other numbers.
    tiled = leave_one_out_advantages(sequence_rewards.view(K, -1).T.contiguous(), K).T.reshape(-1)
    assert not torch.allclose(out["advantages"], tiled, atol=1e-3)
