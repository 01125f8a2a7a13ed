"""Tests of the sampling loop (`rlhf_helpers.policy.generation`) and of response log-probs (`rlhf_helpers.policy.logprobs`).

Everything runs on a 2-layer, 32-wide random GPT-2 over a 300-token BPE trained here from a few
sentences, so nothing depends on downloaded or trained artifacts. References are naive on purpose:
one unpadded row at a time, the whole sequence recomputed at every step.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.core.tensors import position_ids_from_mask
from rlhf_helpers.data import LengthSampler
from rlhf_helpers.data.tokenizer import train_bpe_tokenizer
from rlhf_helpers.policy.generation import filter_logits, generate
from rlhf_helpers.policy.logprobs import logprobs_from_logits, response_logprobs

SENTENCES = [
    "This movie was great, the acting was wonderful and the story was moving.",
    "This film was terrible. The plot made no sense and the actors were bored.",
    "I loved the music, the photography and the ending of this movie.",
    "The worst film I have seen this year; I wanted my money back.",
    "A quiet, funny and warm story about a family and their old house.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(SENTENCES, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # Wider than GPT-2's 0.02 so the random model has a peaked, non-uniform next-token
        # distribution: argmax ties and "everything is equally likely" would hide bugs.
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    """Token-id prompts of 2, 5 and 3 tokens: the batch needs left padding."""
    texts = ["This movie", "the acting was", "This movie was"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [len(i) for i in ids] == [2, 5, 3], "the tests below assume these prompt lengths"
    return ids


class ForcedEOS(torch.nn.Module):
    """Wraps a model so that EOS is impossible except as the token at position `eos_position`,
    where it is certain. A row whose prompt has n tokens then ends at response index
    ``eos_position - n``; a row whose prompt is longer never ends. Everything else is sampled
    from the wrapped model."""

    def __init__(self, model, eos_id: int, eos_position: int):
        super().__init__()
        self.model, self.config = model, model.config
        self.eos_id, self.eos_position = eos_id, eos_position

    def forward(self, input_ids, attention_mask, position_ids, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        logits = out.logits.clone()
        # The logits at position p predict the token at position p + 1.
        forced = position_ids + 1 == self.eos_position
        logits[..., self.eos_id] = torch.where(forced, 1e4, -1e4)
        return SimpleNamespace(logits=logits, past_key_values=getattr(out, "past_key_values", None))


def row_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits ``[len(ids), V]`` of one unpadded row (positions 0..n-1, no mask needed)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        return model(input_ids=x, attention_mask=torch.ones_like(x), position_ids=torch.arange(len(ids))[None]).logits[0]


def greedy_reference(model, prompt: list[int], n_new: int, eos_id: int | None = None) -> list[int]:
    """Argmax decoding of one row, recomputing the whole sequence at every step."""
    ids, new = list(prompt), []
    for _ in range(n_new):
        token = int(row_logits(model, ids)[-1].argmax())
        new.append(token)
        ids.append(token)
        if token == eos_id:
            break
    return new


# ----------------------------------------------------------------------------------------------
# logprobs.py
# ----------------------------------------------------------------------------------------------


def test_position_ids_count_only_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 1, 1]])
    assert torch.equal(position_ids_from_mask(mask), expected)


def test_logprobs_from_logits_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # [1, 2, 3]
    tokens = torch.tensor([[2, 1]])
    first = 3.0 - torch.log(torch.exp(torch.tensor([1.0, 2.0, 3.0])).sum())
    expected = torch.stack([first, torch.log(torch.tensor(1 / 3))])[None]
    assert torch.allclose(logprobs_from_logits(logits, tokens), expected, atol=1e-6)


def test_response_logprobs_are_padding_invariant(model, tokenizer, prompts):
    """Each row of a left/right-padded batch gets the log-probs it gets alone, token by token."""
    pad = tokenizer.pad_token_id
    responses = [[40, 41, 42, 43], [50], [60, 61]]
    query_ids = torch.full((3, 5), pad)
    query_mask = torch.zeros((3, 5), dtype=torch.long)
    response_ids = torch.full((3, 4), pad)
    response_mask = torch.zeros((3, 4), dtype=torch.long)
    for b, (q, r) in enumerate(zip(prompts, responses)):
        query_ids[b, 5 - len(q):], query_mask[b, 5 - len(q):] = torch.tensor(q), 1
        response_ids[b, : len(r)], response_mask[b, : len(r)] = torch.tensor(r), 1

    with torch.no_grad():
        batched = response_logprobs(model, query_ids, query_mask, response_ids, response_mask)
    assert batched.shape == (3, 4)
    for b, (q, r) in enumerate(zip(prompts, responses)):
        # Naive reference: the row alone, no padding, log-softmax at each position by hand.
        logits = row_logits(model, q + r)
        alone = torch.stack([F.log_softmax(logits[len(q) - 1 + t], -1)[tok] for t, tok in enumerate(r)])
        torch.testing.assert_close(batched[b, : len(r)], alone, atol=1e-5, rtol=0)
        assert torch.all(batched[b, len(r):] == 0), "masked response positions must be 0"

    # Why the position ids matter: without them GPT-2 numbers a left-padded row's tokens from the
    # first padding column, and the same row gets different log-probs.
    ids = torch.cat([query_ids, response_ids], 1)
    mask = torch.cat([query_mask, response_mask], 1)
    with torch.no_grad():
        naive = model(input_ids=ids, attention_mask=mask).logits
    naive_lp = logprobs_from_logits(naive[:, 4:8], response_ids)
    assert (naive_lp[0] - batched[0]).abs().max() > 1e-3  # row 0 has 3 columns of left padding


def test_response_logprobs_temperature_and_logits(model, prompts):
    q = torch.tensor([prompts[1]])
    r = torch.tensor([[7, 8, 9]])
    ones_q, ones_r = torch.ones_like(q), torch.ones_like(r)
    with torch.no_grad():
        lp1, logits1 = response_logprobs(model, q, ones_q, r, ones_r, temperature=1.0, return_logits=True)
        lp2, logits2 = response_logprobs(model, q, ones_q, r, ones_r, temperature=2.0, return_logits=True)
    assert logits1.shape == (1, 3, model.config.vocab_size)
    torch.testing.assert_close(logits2, logits1 / 2)
    torch.testing.assert_close(lp2, F.log_softmax(logits1 / 2, -1).gather(-1, r[..., None])[..., 0])
    assert not torch.allclose(lp1, lp2, atol=1e-3)


def test_response_logprobs_rejects_right_padded_queries(model):
    q = torch.tensor([[5, 6, 1]])
    with pytest.raises(ValueError, match="left-padded"):
        response_logprobs(model, q, torch.tensor([[1, 1, 0]]), torch.tensor([[7]]), torch.tensor([[1]]))


def test_response_logprobs_refuses_active_dropout(tokenizer):
    torch.manual_seed(0)
    noisy = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                       resid_pdrop=0.1))
    args = (torch.tensor([[5, 6]]), torch.tensor([[1, 1]]), torch.tensor([[7]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="dropout"):
        response_logprobs(noisy.train(), *args)
    assert response_logprobs(noisy.eval(), *args).shape == (1, 1)


# ----------------------------------------------------------------------------------------------
# filter_logits
# ----------------------------------------------------------------------------------------------


def test_filter_logits_by_hand():
    # Probabilities 0.15, 0.5, 0.05, 0.3 in a deliberately unsorted order.
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))
    kept = lambda out: torch.isfinite(out[0]).tolist()
    assert kept(filter_logits(logits, top_k=2)) == [False, True, False, True]
    assert kept(filter_logits(logits, top_p=0.75)) == [False, True, False, True]   # 0.5 + 0.3 >= 0.75
    assert kept(filter_logits(logits, top_p=0.85)) == [True, True, False, True]    # + 0.15 reaches 0.85
    assert kept(filter_logits(logits, top_p=0.01)) == [False, True, False, False]  # always keeps the best
    assert kept(filter_logits(logits)) == [True] * 4
    assert torch.equal(filter_logits(logits, top_k=2)[0, [1, 3]], logits[0, [1, 3]])  # survivors unchanged


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------


def test_same_seed_same_output_and_cache_changes_nothing(model, tokenizer, prompts):
    kwargs = dict(max_new_tokens=12, seed=123, stop_at_eos=False, return_logprobs=True)
    cached = generate(model, tokenizer, prompts, **kwargs)
    again = generate(model, tokenizer, prompts, generator=torch.Generator().manual_seed(123),
                     **{k: v for k, v in kwargs.items() if k != "seed"})
    recomputed = generate(model, tokenizer, prompts, use_cache=False, **kwargs)
    other_seed = generate(model, tokenizer, prompts, **{**kwargs, "seed": 124})

    assert cached.response_ids.shape == (3, 12)
    assert torch.equal(cached.response_ids, again.response_ids)
    assert torch.equal(cached.response_ids, recomputed.response_ids)
    assert torch.equal(cached.response_mask, recomputed.response_mask)
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=0)
    assert not torch.equal(cached.response_ids, other_seed.response_ids)


def test_queries_are_left_padded_prompts(model, tokenizer, prompts):
    out = generate(model, tokenizer, prompts, max_new_tokens=2, seed=0)
    assert out.query_ids.shape == (3, 5)
    for b, q in enumerate(prompts):
        assert out.query_ids[b, 5 - len(q):].tolist() == q
        assert out.query_mask[b].tolist() == [0] * (5 - len(q)) + [1] * len(q)
        assert torch.all(out.query_ids[b, : 5 - len(q)] == tokenizer.pad_token_id)
    assert out.prompts == [tokenizer.decode(q) for q in prompts]
    # Strings, id lists and tensors are the same prompts.
    as_text = generate(model, tokenizer, out.prompts, max_new_tokens=2, seed=0)
    as_tensors = generate(model, tokenizer, [torch.tensor(q) for q in prompts], max_new_tokens=2, seed=0)
    assert torch.equal(as_text.query_ids, out.query_ids) and torch.equal(as_tensors.response_ids, out.response_ids)


def test_eos_ends_a_row_masks_and_pads_after_it(model, tokenizer, prompts):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    forced = ForcedEOS(model, eos, eos_position=6)  # prompts of 2, 5, 3 tokens end at indices 4, 1, 3
    out = generate(forced, tokenizer, prompts, max_new_tokens=10, seed=0, return_logprobs=True)

    # Every row finished, so the loop stopped early: R = 5, not 10.
    assert out.response_ids.shape == (3, 5)
    for b, q in enumerate(prompts):
        end = 6 - len(q)
        row, mask = out.response_ids[b].tolist(), out.response_mask[b].tolist()
        assert row[end] == eos and eos not in row[:end]
        assert mask == [1] * (end + 1) + [0] * (4 - end)
        assert row[end + 1:] == [pad] * (4 - end)
        assert out.texts[b] == tokenizer.decode(row[:end])
        assert "<|endoftext|>" not in out.texts[b]
        assert torch.all(out.logprobs[b, end + 1:] == 0)

    # A row whose prompt is longer than the EOS position never ends: the call runs to the limit.
    long_prompt = prompts[1] + prompts[2]
    out = generate(forced, tokenizer, [prompts[0], long_prompt], max_new_tokens=7, seed=0)
    assert out.response_ids.shape == (2, 7)
    assert out.response_mask[1].tolist() == [1] * 7
    assert out.response_mask[0].tolist() == [1] * 5 + [0] * 2


def test_pad_equal_to_eos_still_counts_the_real_eos(model, tokenizer, prompts):
    """Hub GPT-2 pads with EOS. The mask, not the token id, says which EOS is real."""
    gpt2_style = copy.deepcopy(tokenizer)
    gpt2_style.pad_token = gpt2_style.eos_token
    forced = ForcedEOS(model, tokenizer.eos_token_id, eos_position=6)
    out = generate(forced, gpt2_style, prompts, max_new_tokens=10, seed=0, return_logprobs=True)
    eos = tokenizer.eos_token_id
    assert out.response_mask[0].tolist() == [1] * 5       # EOS at index 4 is real, and counted
    assert out.response_mask[1].tolist() == [1, 1, 0, 0, 0]
    assert out.response_ids[1, 1:].tolist() == [eos] * 4  # the real EOS, then padding with the same id
    with torch.no_grad():
        recomputed = response_logprobs(forced, out.query_ids, out.query_mask, out.response_ids, out.response_mask)
    torch.testing.assert_close(recomputed, out.logprobs, atol=1e-5, rtol=0)


def test_response_is_the_continuation_not_the_prompt(model, tokenizer, prompts):
    """Greedy generation of a padded batch equals naive one-row-at-a-time greedy decoding."""
    forced = ForcedEOS(model, tokenizer.eos_token_id, eos_position=6)
    out = generate(forced, tokenizer, prompts, max_new_tokens=10, top_k=1, seed=0)
    for b, q in enumerate(prompts):
        expected = greedy_reference(forced, q, 10, eos_id=tokenizer.eos_token_id)
        n = int(out.response_mask[b].sum())
        assert out.response_ids[b, :n].tolist() == expected


def test_sampling_logprobs_match_recomputed_logprobs(model, tokenizer, prompts):
    """The log-probs PPO recomputes at the sampling temperature are those of the sampling distribution."""
    forced = ForcedEOS(model, tokenizer.eos_token_id, eos_position=8)
    out = generate(forced, tokenizer, prompts, max_new_tokens=8, temperature=0.7, seed=1, return_logprobs=True)
    assert out.response_mask.sum() < out.response_mask.numel(), "want some masked positions in this test"
    with torch.no_grad():
        same_t = response_logprobs(forced, out.query_ids, out.query_mask, out.response_ids, out.response_mask, 0.7)
        wrong_t = response_logprobs(forced, out.query_ids, out.query_mask, out.response_ids, out.response_mask, 1.0)
    torch.testing.assert_close(same_t, out.logprobs, atol=1e-5, rtol=0)
    # Recomputing at temperature 1 (Huang et al. 2023, detail 3 done wrong) gives other numbers.
    assert (wrong_t - out.logprobs).abs().max() > 1e-2


def test_top_k_1_and_tiny_top_p_are_greedy(model, tokenizer, prompts):
    expected = [greedy_reference(model, q, 6) for q in prompts]
    for settings in (dict(top_k=1, seed=5), dict(top_k=1, seed=6, use_cache=False), dict(top_p=1e-6, seed=7),
                     dict(top_k=1, seed=8, batch_size=2)):
        out = generate(model, tokenizer, prompts, max_new_tokens=6, stop_at_eos=False, **settings)
        assert out.response_ids.tolist() == expected, settings


def test_max_new_tokens_callable_is_drawn_once(model, tokenizer, prompts):
    sampler = LengthSampler(3, 5, seed=0)
    calls = []

    def draw():
        calls.append(sampler())
        return calls[-1]

    out = generate(model, tokenizer, prompts, max_new_tokens=draw, stop_at_eos=False, seed=0)
    assert len(calls) == 1
    assert out.max_new_tokens == calls[0] == out.response_ids.shape[1]


def test_mode_is_eval_inside_and_restored_after(model, tokenizer, prompts):
    seen = []
    handle = model.register_forward_hook(lambda module, args, output: seen.append(module.training))
    try:
        model.train()
        generate(model, tokenizer, prompts, max_new_tokens=2, seed=0)
        assert model.training and seen and not any(seen)
        # Mixed modes come back exactly: a wrapper in train mode around a model in eval mode.
        model.eval()
        wrapper = ForcedEOS(model, tokenizer.eos_token_id, eos_position=4)
        wrapper.training = True  # this flag only (.train() would switch the inner model too)
        generate(wrapper, tokenizer, prompts, max_new_tokens=2, seed=0)
        assert wrapper.training and not model.training
    finally:
        handle.remove()
        model.eval()


@pytest.mark.parametrize(
    "prompts_arg, kwargs, message",
    [
        ([""], {}, "prompt 0 is empty"),
        ([[5, 6], []], {}, "prompt 1 is empty"),
        ([], {}, "prompts is empty"),
        ("This movie", {}, "list of prompts"),
        ([[5] * 60], dict(max_new_tokens=5), "exceeds the model's context of 64"),
        ([[5]], dict(temperature=0.0), "temperature must be > 0"),
        ([[5]], dict(temperature=-1.0), "temperature must be > 0"),
        ([[5]], dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        ([[5]], dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        ([[5]], dict(top_k=-1), "top_k must be an integer >= 0"),
        ([[5]], dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        ([[5]], dict(max_new_tokens=lambda: 0), "max_new_tokens must be an integer >= 1"),
        ([[5]], dict(max_new_tokens=2.5), "max_new_tokens must be an integer >= 1"),
        ([[5]], dict(seed=0, generator=torch.Generator()), "either generator= or seed="),
        ([[5]], dict(batch_size=0), "batch_size"),
        ([[10_000]], {}, "outside the model's vocabulary"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, tokenizer, prompts_arg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, tokenizer, prompts_arg, **kwargs)
