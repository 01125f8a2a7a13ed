"""Exercise cases of notebooks 01–03: data, generation, the reward model.

``CASES``: (exercise name, reference implementation, [(plausible wrong implementation, a fragment the check's
message must contain), ...]). Data, not tests: tests/test_exercises.py runs every ``cases_*.py``'s CASES the same
way (the check accepts the reference, rejects the stub, and names each mistake).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rlhf_helpers.core.tensors import last_token_index
from rlhf_helpers.data.preferences import pairwise_accuracy
from rlhf_helpers.exercises.data import reference_build_prompts, reference_sample_lengths
from rlhf_helpers.exercises.generation import reference_next_token_loss
from rlhf_helpers.policy.generation import filter_logits
from rlhf_helpers.reward.labelling import reward_model_step
from rlhf_helpers.reward.model import bradley_terry_loss


# ----------------------------------------------------------------------------------------------
# Wrong implementations a learner could plausibly write
# ----------------------------------------------------------------------------------------------

# 01: sample_lengths(low, high, n, seed)
def lengths_exclusive(low, high, n, seed):
    return np.random.default_rng(seed).integers(low, high, size=n)  # numpy excludes `high`


def lengths_unseeded(low, high, n, seed):
    return np.random.default_rng().integers(low, high + 1, size=n)


def lengths_other_generator(low, high, n, seed):
    return np.random.RandomState(seed).randint(low, high + 1, size=n).tolist()


# 01: build_prompts(reviews, tokenizer, clean, min_chars, low, high, seed)
def make_build_prompts(keep_equal=False, cut="tokens", cleaned=True, exclusive=False, sample_all_rows=False,
                       fresh_generator=False):
    def build_prompts(reviews, tokenizer, clean, min_chars, low, high, seed):
        long_enough = reviews["review"].str.len() >= min_chars if keep_equal else reviews["review"].str.len() > min_chars
        kept = reviews[long_enough].reset_index(drop=True)
        upper = high if exclusive else high + 1
        if sample_all_rows:
            # a length for every review, drawn before the filter; the kept rows keep theirs
            lengths = np.random.default_rng(seed).integers(low, upper, size=len(reviews))[long_enough.to_numpy()]
        elif fresh_generator:
            lengths = [np.random.default_rng(seed).integers(low, upper) for _ in range(len(kept))]
        else:
            lengths = np.random.default_rng(seed).integers(low, upper, size=len(kept))
        rows = []
        for text, n in zip(kept["review"], lengths):
            text = clean(text) if cleaned else text
            if cut == "characters":
                ids = tokenizer(text[:n], add_special_tokens=False)["input_ids"]
            elif cut == "none":
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
            rows.append(ids)
        return pd.DataFrame({"query": [tokenizer.decode(ids) for ids in rows], "input_ids": rows,
                             "label": kept["label"].tolist()})
    return build_prompts


# 02: next_token_loss(logits, input_ids)
def loss_no_shift(logits, input_ids):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids.reshape(-1))


def loss_shift_wrong_way(logits, input_ids):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), input_ids[:, :-1].reshape(-1))


def loss_sum(logits, input_ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="sum")


def loss_detached(logits, input_ids):
    return reference_next_token_loss(logits, input_ids).item()


# 02: top_k_filter(logits, k)
def top_k_plus_one(logits, k):
    if k == 0:
        return logits
    kth = torch.topk(logits, min(k + 1, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_minus_one(logits, k):
    if k == 0:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


def top_k_zero_fill(logits, k):
    if k == 0:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, 0.0)


def top_k_by_index(logits, k):
    if k == 0:
        return logits
    top = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)


def top_k_in_place(logits, k):
    if k == 0:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))


# 02: top_p_filter(logits, p)
def top_p_drop_crossing(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    drop = sorted_logits.softmax(-1).cumsum(-1) > p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def top_p_unsorted(logits, p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))


def top_p_on_logits(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    finite = torch.nan_to_num(sorted_logits, neginf=0.0)
    drop = finite.cumsum(-1) - finite >= p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def top_p_zero_fill(logits, p):
    return torch.where(torch.isinf(filter_logits(logits, top_p=p)) & torch.isfinite(logits),
                       torch.zeros_like(logits), logits)


# 03: bradley_terry_loss(r_chosen, r_rejected)
def bt_sign_flipped(r_chosen, r_rejected):
    return -F.logsigmoid(r_rejected - r_chosen).mean()


def bt_naive_log_sigmoid(r_chosen, r_rejected):
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def bt_sum(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).sum()


def bt_each_text(r_chosen, r_rejected):
    return (-F.logsigmoid(r_chosen) - F.logsigmoid(-r_rejected)).mean()


def bt_item(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean().item()


# 03: pair_accuracy(r_chosen, r_rejected)
def accuracy_ties_win(r_chosen, r_rejected):
    return (r_chosen >= r_rejected).float().mean()


def accuracy_count(r_chosen, r_rejected):
    return (r_chosen > r_rejected).sum()


def accuracy_ties_half(r_chosen, r_rejected):
    return ((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).mean()


# 03: last_token_index(mask)
def last_index_right_padding_only(mask):
    return mask.sum(1) - 1


def last_index_first_token(mask):
    return mask.argmax(1)


def last_index_float(mask):
    return (mask.shape[1] - 1 - mask.flip(1).argmax(1)).float()


# 03: reward_model_step(model, optimizer, chosen_ids, chosen_mask, rejected_ids, rejected_mask)
def make_reward_step(swap=False, no_mask=False, reduce="mean", zero_grad="before", backward=True, step=True,
                     item=True):
    """A training step with one mistake: each keyword changes one thing of the reference."""
    def reward_model_step(model, optimizer, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        if no_mask:  # "the model can find the text's end itself": it reads the last column, a pad token
            chosen_mask, rejected_mask = torch.ones_like(chosen_mask), torch.ones_like(rejected_mask)
        r_chosen, r_rejected = model(chosen_ids, chosen_mask), model(rejected_ids, rejected_mask)
        if swap:
            r_chosen, r_rejected = r_rejected, r_chosen
        losses = -F.logsigmoid(r_chosen - r_rejected)
        loss = losses.sum() if reduce == "sum" else losses.mean()
        if zero_grad == "before":
            optimizer.zero_grad()
        if backward:
            loss.backward()
        if zero_grad == "between":
            optimizer.zero_grad()
        if step:
            optimizer.step()
        return loss.item() if item else loss
    return reward_model_step


CASES = [
    ("sample_lengths", reference_sample_lengths, [
        (lengths_exclusive, "never returned high"),
        (lengths_unseeded, "same seed gave different"),
        (lengths_other_generator, "not the package's draws"),
    ]),
    ("build_prompts", reference_build_prompts, [
        (make_build_prompts(keep_equal=True), "longer than* min_chars"),
        (make_build_prompts(cut="none"), "not cut"),
        (make_build_prompts(cut="characters"), "*characters*"),
        (make_build_prompts(cleaned=False), "<br /> tags"),
        (make_build_prompts(exclusive=True), "never reach high"),
        (make_build_prompts(sample_all_rows=True), "before the filter"),
        (make_build_prompts(fresh_generator=True), "same length"),
    ]),
    ("next_token_loss", reference_next_token_loss, [
        (loss_no_shift, "no shift"),
        (loss_shift_wrong_way, "wrong way round"),
        (loss_sum, "sum over tokens"),
        (loss_detached, "no gradient"),
    ]),
    ("top_k_filter", lambda logits, k: filter_logits(logits, top_k=k), [
        (top_k_plus_one, "one token too many"),
        (top_k_minus_one, "one token too few"),
        (top_k_zero_fill, "fill with float('-inf')"),
        (top_k_by_index, "in a tie at the k-th value"),
        (top_k_in_place, "in place"),
    ]),
    ("top_p_filter", lambda logits, p: filter_logits(logits, top_p=p), [
        (top_p_drop_crossing, "crosses p"),
        (top_p_unsorted, "vocabulary order"),
        (top_p_on_logits, "accumulated logits"),
        (top_p_zero_fill, "fill with float('-inf')"),
    ]),
    ("bradley_terry_loss", bradley_terry_loss, [
        (bt_sign_flipped, "sign of the margin is flipped"),
        (bt_naive_log_sigmoid, "F.logsigmoid"),
        (bt_sum, "sum over pairs"),
        (bt_each_text, "each text on its own"),
        (bt_item, "no gradient"),
    ]),
    ("pair_accuracy", pairwise_accuracy, [
        (accuracy_ties_win, "ties count as wins"),
        (accuracy_ties_half, "half a win"),
        (accuracy_count, "number of pairs ranked right"),
    ]),
    ("last_token_index", last_token_index, [
        (last_index_right_padding_only, "mask.sum(1) - 1"),
        (last_index_first_token, "*first* real token"),
        (last_index_float, "integers (long)"),
    ]),
    ("reward_model_step", reward_model_step, [
        (make_reward_step(swap=True), "chosen and rejected are swapped"),
        (make_reward_step(no_mask=True), "ignores the attention mask"),
        (make_reward_step(reduce="sum"), "sum over the pairs"),
        (make_reward_step(zero_grad="never"), "gradients of the previous call"),
        (make_reward_step(backward=False), "no gradient reached them"),
        (make_reward_step(zero_grad="between"), "no gradient reached them"),
        (make_reward_step(step=False), "never took a step"),
        (make_reward_step(item=False), "returned a torch.Tensor"),
    ]),
]
