"""The fast path's GPT-2 arithmetic: the forward on real tokens only, and decoding with a preallocated cache.

Both must compute what `transformers`' GPT-2 computes, up to float rounding: the same logits and gradients in
float32, the same within bf16 rounding under autocast, the same sampled tokens; and a PPO update on the fast path
must give the plain path's losses.
"""

import contextlib
import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.config import PPOConfig
from rlhf_helpers.core.tensors import position_ids_from_mask
from rlhf_helpers.policy import generation
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.policy.packed import pack_responses, packable, packed_logits, unpack_responses
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values


def random_batch(vocab: int, rows: int = 6, n_query: int = 5, n_response: int = 7, seed: int = 0):
    """Left-padded queries (1..n_query tokens) and right-padded responses (1..n_response tokens)."""
    g = torch.Generator().manual_seed(seed)
    query_lengths = torch.randint(1, n_query + 1, (rows,), generator=g)
    response_lengths = torch.randint(1, n_response + 1, (rows,), generator=g)
    response_lengths[0] = n_response  # at least one full row: the batch is exactly this wide
    qm = (torch.arange(n_query)[None] >= n_query - query_lengths[:, None]).long()
    rm = (torch.arange(n_response)[None] < response_lengths[:, None]).long()
    q = torch.where(qm.bool(), torch.randint(2, vocab, (rows, n_query), generator=g), 1)
    r = torch.where(rm.bool(), torch.randint(2, vocab, (rows, n_response), generator=g), 1)
    return q, qm, r, rm


def transformers_response_logits(lm, q, qm, r, rm):
    """``[M, V]`` logits predicting each real response token, from `transformers`' own forward."""
    ids, mask = torch.cat([q, r], 1), torch.cat([qm, rm], 1)
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    return logits[:, q.shape[1] - 1 : -1][rm.bool()]


def test_pack_responses_keeps_real_tokens_and_the_outputs_before_each_response_token():
    qm = torch.tensor([[0, 1, 1], [1, 1, 1]])
    rm = torch.tensor([[1, 1, 0], [1, 0, 0]])
    packing = pack_responses(qm, rm, multiple=1)
    # flat columns of [q | r] (width 6): row 0 real at 1, 2, 3, 4 (4 is its last: left out); row 1 at 6-9 (9 out)
    assert packing.token_index.tolist() == [1, 2, 3, 6, 7, 8]
    assert packing.positions.tolist() == [0, 1, 2, 0, 1, 2]
    # the outputs predicting the response tokens: row 0's columns 2 and 3, row 1's column 8
    assert packing.token_index[packing.output_index].tolist() == [2, 3, 8]
    assert packing.outputs == 3
    rounded = pack_responses(qm, rm, multiple=4)
    assert len(rounded.token_index) == 8 and len(rounded.output_index) == 4 and rounded.outputs == 3
    assert rounded.token_index[:6].tolist() == packing.token_index.tolist()  # padding positions only added after
    values = torch.tensor([10.0, 11.0, 12.0])
    assert unpack_responses(values, rm).tolist() == [[10.0, 11.0, 0.0], [12.0, 0.0, 0.0]]


@pytest.mark.parametrize("multiple", [1, 8, 32])
def test_packed_logits_and_gradients_are_gpt2s(tiny_lm, multiple):
    lm = copy.deepcopy(tiny_lm)
    q, qm, r, rm = random_batch(lm.config.vocab_size)
    expected = transformers_response_logits(lm, q, qm, r, rm)
    packing = pack_responses(qm, rm, multiple=multiple)
    got = packed_logits(lm, torch.cat([q, r], 1), packing)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for logits in (expected, got):
        lm.zero_grad(set_to_none=True)
        (torch.log_softmax(logits, -1) * weights).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in lm.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_packed_logits_under_bf16_autocast_are_gpt2s_within_bf16_rounding(tiny_lm):
    q, qm, r, rm = random_batch(tiny_lm.config.vocab_size, rows=8, seed=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = transformers_response_logits(tiny_lm, q, qm, r, rm).float()
        got = packed_logits(tiny_lm, torch.cat([q, r], 1), pack_responses(qm, rm)).float()
    exact = transformers_response_logits(tiny_lm, q, qm, r, rm).detach()
    # both are bf16 approximations of the float32 logits, about equally far from them
    scale = (expected - exact).abs().max().item()
    assert 0 < scale < 0.05
    assert (got - exact).abs().max().item() < 3 * scale
    torch.testing.assert_close(got, expected, atol=4 * scale, rtol=0)


def test_the_value_head_policy_and_the_reference_take_the_packed_path(tiny_lm):
    torch.manual_seed(0)
    policy = PolicyWithValueHead(copy.deepcopy(tiny_lm))
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)
    q, qm, r, rm = random_batch(tiny_lm.config.vocab_size, seed=5)
    plain = response_logprobs_and_values(policy, q, qm, r, rm, 0.7)
    fast = response_logprobs_and_values(policy, q, qm, r, rm, 0.7, fast=True)
    assert fast[1].shape == (int(rm.sum()), tiny_lm.config.vocab_size)  # the log-softmax at the real tokens only
    torch.testing.assert_close(fast[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[2], plain[2], atol=1e-6, rtol=0)
    assert bool((fast[0][rm == 0] == 0).all()) and bool((fast[2][rm == 0] == 0).all())
    torch.testing.assert_close(response_logprobs(tiny_lm, q, qm, r, rm, 0.7, response_only=True),
                               response_logprobs(tiny_lm, q, qm, r, rm, 0.7), atol=1e-5, rtol=0)


def test_other_gpt2_variants_fall_back_to_their_own_forward(small_tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(small_tokenizer), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, scale_attn_by_inverse_layer_idx=True)
    lm = GPT2LMHeadModel(config).eval()
    assert not packable(lm) and not packable(PolicyWithValueHead(lm))
    q, qm, r, rm = random_batch(config.vocab_size, seed=2)
    torch.testing.assert_close(response_logprobs(lm, q, qm, r, rm, response_only=True),
                               response_logprobs(lm, q, qm, r, rm), atol=1e-5, rtol=0)


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_preallocated_decoding_samples_what_the_transformers_loop_samples(tiny_lm, small_tokenizer, monkeypatch,
                                                                          stop_at_eos):
    prompts = ["The movie was", "I", "What a terrible and", "My wife and I rented it"] * 3

    def sample(preallocated: bool):
        with monkeypatch.context() as patch:
            if not preallocated:
                patch.setattr(generation, "packable", lambda model: False)
            return generation.generate(tiny_lm, small_tokenizer, prompts, 12, seed=7, fast=True, return_logprobs=True,
                                       stop_at_eos=stop_at_eos, batch_size=5)

    ours, theirs = sample(True), sample(False)
    assert ours.response_ids.tolist() == theirs.response_ids.tolist()
    assert ours.response_mask.tolist() == theirs.response_mask.tolist()
    torch.testing.assert_close(ours.logprobs, theirs.logprobs, atol=1e-5, rtol=0)


class BF16Accelerator:
    """What `ppo_update` asks of `accelerate` on one process, with bf16 autocast (the tests' accelerate state is
    float32, and one process has one state)."""

    num_processes = 1

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def no_sync(self, model):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def test_a_fast_bf16_update_gives_the_plain_losses(small_tokenizer, tmp_path):
    from rlhf_helpers.ppo.trainer import ppo_update
    from tests.test_ppo import make_trainer

    torch.manual_seed(0)
    # large weights: log-probs that depend on the context, so that a wrong mask or position shows in the losses
    config = GPT2Config(vocab_size=len(small_tokenizer), n_positions=48, n_embd=32, n_layer=2, n_head=2,
                        initializer_range=0.3, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, eos_token_id=0,
                        bos_token_id=0, pad_token_id=1)
    tiny_lm = GPT2LMHeadModel(config).eval()
    prompts = [small_tokenizer.encode(t) for t in ["The movie was", "I rented this", "This film is", "What a",
                                                   "Honestly the acting", "My wife and I", "The plot", "It is a"]]
    trainer = make_trainer(tiny_lm, small_tokenizer, prompts, tmp_path)
    trainer.step()
    rollout = trainer.last_rollout
    results = {}
    for fast in (False, True):
        torch.manual_seed(0)
        policy = PolicyWithValueHead(copy.deepcopy(tiny_lm))
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
        settings = PPOConfig(batch_size=8, mini_batch_size=4, ppo_epochs=2, seed=0, fast_path=fast)
        results[fast] = ppo_update(policy, optimizer, BF16Accelerator(), rollout, settings, step=0)
    # measured: differences of ~1e-3 (policy loss), 2e-4 (approx KL, entropy), 1e-5 (ratio); a causal mask left
    # out or positions off by one move the policy loss by 0.1-0.2 and the approximate KL by 0.35-1.1
    for key, tolerance in [("policy_loss", 5e-3), ("value_loss", 1e-3), ("entropy", 5e-3), ("ratio_mean", 5e-3),
                           ("approx_kl", 2e-3), ("clip_fraction", 0.05)]:
        assert results[True][key] == pytest.approx(results[False][key], abs=tolerance), key
