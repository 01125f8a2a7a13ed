"""Checks of notebook 03's exercises: the Bradley–Terry loss, pairwise accuracy, where a reward is read, and one
training step of a reward model."""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from transformers import GPT2Config

from ..core.tensors import last_token_index as reference_last_token_index
from ..data.preferences import pairwise_accuracy as reference_pairwise_accuracy
from ..reward.labelling import reward_model_step as reference_reward_model_step
from ..reward.model import RewardModel
from ..reward.model import bradley_terry_loss as reference_bradley_terry_loss
from .checking import ExerciseFailed, as_tensor, call, exercise, expect, expect_close, passed

__all__ = ["check_bradley_terry_loss", "check_pair_accuracy", "check_last_token_index", "check_reward_model_step"]


# ----------------------------------------------------------------------------------------------
# Exercise 3.1: the Bradley–Terry loss
# ----------------------------------------------------------------------------------------------


def _reward_pairs() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        ("B=16 random rewards (scale 2)", torch.randn(16, generator=g) * 2, torch.randn(16, generator=g) * 2),
        ("B=1", torch.tensor([0.7]), torch.tensor([-0.4])),
        ("equal rewards (every pair a coin flip: loss log 2)", torch.zeros(4), torch.zeros(4)),
        ("large margins: r_c - r_r = -200, +200, +5 (float32)", torch.tensor([-100.0, 100.0, 3.0]),
         torch.tensor([100.0, -100.0, -2.0])),
    ]


@exercise("03", "bradley_terry_loss", difficulty=2, importance=5, minutes=10)
def check_bradley_terry_loss(fn) -> None:
    """`fn(r_chosen [B], r_rejected [B]) -> 0-d tensor`: ``mean(−log σ(r_c − r_r))``, finite for any margin."""
    cases = _reward_pairs()
    for case, chosen, rejected in cases:
        expected = reference_bradley_terry_loss(chosen, rejected)
        c, r = chosen.clone().requires_grad_(True), rejected.clone().requires_grad_(True)
        answer = call(fn, c, r, case=case)
        expect(isinstance(answer, torch.Tensor) and answer.requires_grad,
               "bradley_terry_loss: the result carries no gradient (.item(), .detach(), numpy?): return a tensor "
               f"computed from the rewards, so loss.backward() can train the model.\n  case: {case}")
        expect(bool(torch.isfinite(answer.detach()).all()),
               f"bradley_terry_loss: the loss is {answer.detach().reshape(-1)[0].item()} on a pair with margin -200. "
               "torch.log(torch.sigmoid(x)) underflows: σ(-200) is 0 in float32 and log 0 = -inf. Use "
               "F.logsigmoid(x), which computes log σ(x) = -softplus(-x) without forming σ(x)."
               f"\n  case: {case}")
        margin = chosen - rejected
        expect_close(answer, expected, "bradley_terry_loss", case=case, diagnoses=[
            (-F.logsigmoid(-margin).mean(), "the sign of the margin is flipped: that loss rewards ranking the "
                                            "*rejected* text higher. Use σ(r_chosen − r_rejected)."),
            (F.logsigmoid(margin).mean(), "the loss is negative: that is the mean log-likelihood; the loss is "
                                          "−log σ(r_c − r_r)."),
            (expected * len(margin), "that is the sum over pairs: take the mean (the loss should not grow with B)."),
            ((-F.logsigmoid(chosen) - F.logsigmoid(-rejected)).mean(),
             "you scored each text on its own (−log σ(r_c) − log σ(−r_r)); Bradley–Terry only sees the difference "
             "r_c − r_r (add 10 to every reward: the loss must not change)."),
        ])
        reference_c, reference_r = chosen.clone().requires_grad_(True), rejected.clone().requires_grad_(True)
        reference_bradley_terry_loss(reference_c, reference_r).backward()
        answer.reshape(()).backward()
        expect_close(c.grad, reference_c.grad, "bradley_terry_loss (its gradient with respect to r_chosen)", case=case)
        expect_close(r.grad, reference_r.grad, "bradley_terry_loss (its gradient with respect to r_rejected)", case=case)
    passed("bradley_terry_loss", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 3.2: pairwise accuracy
# ----------------------------------------------------------------------------------------------


@exercise("03", "pair_accuracy", difficulty=1, importance=4, minutes=5)
def check_pair_accuracy(fn) -> None:
    """`fn(r_chosen [N], r_rejected [N]) -> float`: the share of pairs whose chosen text scores *strictly* higher
    (a tie counts as a miss), as `rlhf_helpers.data.preferences.pairwise_accuracy` counts."""
    g = torch.Generator().manual_seed(4)
    cases = [
        ("N=200 random scores", torch.randn(200, generator=g), torch.randn(200, generator=g) - 0.5),
        ("N=60 integer scores 0..3 (many ties)", torch.randint(0, 4, (60,), generator=g).float(),
         torch.randint(0, 4, (60,), generator=g).float()),
        ("N=5, every pair a tie", torch.ones(5), torch.ones(5)),
        ("N=1, right", torch.tensor([2.0]), torch.tensor([1.0])),
    ]
    for case, chosen, rejected in cases:
        expected = torch.tensor(reference_pairwise_accuracy(chosen, rejected), dtype=torch.float64)
        answer = call(fn, chosen.clone(), rejected.clone(), case=case)
        if isinstance(answer, bool):
            raise ExerciseFailed(f"pair_accuracy: returned a bool; return the share of pairs (a float in [0, 1]).\n  case: {case}")
        answer = as_tensor(answer, "pair_accuracy").double()
        wins, ties = (chosen > rejected).double(), (chosen == rejected).double()
        expect_close(answer, expected, "pair_accuracy", case=case, atol=1e-9, diagnoses=[
            ((chosen >= rejected).double().mean(), "ties count as wins (>=): a pair counts only if the chosen text "
                                                   "scores *strictly* higher (>); a model that gives every text the "
                                                   "same score must get 0, not 1."),
            ((wins + 0.5 * ties).mean(), "ties count as half a win: the course counts a tie as a miss (strictly "
                                         "higher, >), as the package does."),
            (wins.sum(), "that is the number of pairs ranked right: divide by the number of pairs (a share in [0, 1])."),
            ((rejected > chosen).double().mean(), "chosen and rejected are swapped: count the pairs where the "
                                                  "*chosen* score is higher."),
            (1 - wins.mean(), "that is the error rate, 1 − accuracy."),
        ])
    passed("pair_accuracy", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 3.3: where the reward is read (the padding side)
# ----------------------------------------------------------------------------------------------


def _mask(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[int(ch) for ch in row] for row in rows])


@exercise("03", "last_token_index", difficulty=2, importance=4, minutes=10)
def check_last_token_index(fn) -> None:
    """`fn(mask [B, L]) -> [B]` (integers): the column of each row's last real token, whatever side the padding is on."""
    cases = [
        ("right padding", _mask(["111100", "111111", "100000"])),
        ("left padding (prompts for generation)", _mask(["001111", "111111", "000001"])),
        ("both sides (PPO's [left-padded query | right-padded response])", _mask(["0011110", "0111000", "0000011"])),
        ("one row, no padding", _mask(["11111"])),
    ]
    for case, mask in cases:
        expected = reference_last_token_index(mask)
        answer = call(fn, mask.clone(), case=case)
        answer = as_tensor(answer, "last_token_index")
        expect(not answer.is_floating_point(), f"last_token_index: returned {answer.dtype} values; indices must be "
                                               f"integers (long) to index a tensor.\n  case: {case}")
        width = mask.shape[1]
        lengths = mask.sum(1)
        expect_close(answer, expected, "last_token_index", case=case, diagnoses=[
            (lengths - 1, "that is mask.sum(1) - 1, the last real token only when the padding is on the right: with "
                          "left padding the real tokens end in the last column. Find the last 1 of each row instead."),
            (lengths, "one past the last real token (mask.sum(1)): indices count from 0."),
            (mask.argmax(1), "that is the *first* real token (argmax returns the first maximum): look for the last 1, "
                             "e.g. argmax on the row reversed with mask.flip(1)."),
            (mask.flip(1).argmax(1), "that is the distance of the last real token from the end of the row (argmax on "
                                     "the flipped row): convert it back, L - 1 - that."),
            (torch.full_like(expected, width - 1), "that is the last column for every row, a padding token when the "
                                                   "padding is on the right: find each row's last 1."),
        ])
    passed("last_token_index", len(cases))


# ----------------------------------------------------------------------------------------------
# Exercise 3.4: one training step of the reward model
# ----------------------------------------------------------------------------------------------

_PAD = 0


def _tiny_reward_model() -> RewardModel:
    """A random 1-layer, 16-wide reward model without dropout: the same `forward` as the course's, in milliseconds."""
    torch.manual_seed(34)
    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=_PAD)
    model = RewardModel(config)
    torch.nn.init.normal_(model.head.weight, std=1.0)  # rewards of order 1: the pairs' losses differ visibly
    return model


def _pairs(seed: int, lengths_c: list[int], lengths_r: list[int]) -> tuple[torch.Tensor, ...]:
    """``chosen_ids, chosen_mask [B, Lc], rejected_ids, rejected_mask [B, Lr]``, right-padded with id 0."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths in (lengths_c, lengths_r):
        width = max(lengths)
        ids = torch.full((len(lengths), width), _PAD, dtype=torch.long)
        mask = torch.zeros((len(lengths), width), dtype=torch.long)
        for b, n in enumerate(lengths):
            ids[b, :n] = torch.randint(1, 40, (n,), generator=g)
            mask[b, :n] = 1
        out += [ids, mask]
    return tuple(out)


def _variant_step(model, optimizer, chosen_ids, chosen_mask, rejected_ids, rejected_mask, swap=False,
                  no_mask=False, reduce="mean", zero_grad=True) -> float:
    """The reference step, or one of the mistakes it is compared with (to name the learner's)."""
    if no_mask:
        chosen_mask, rejected_mask = torch.ones_like(chosen_mask), torch.ones_like(rejected_mask)
    r_c, r_r = model(chosen_ids, chosen_mask), model(rejected_ids, rejected_mask)
    if swap:
        r_c, r_r = r_r, r_c
    losses = -F.logsigmoid(r_c - r_r)
    loss = losses.sum() if reduce == "sum" else losses.mean()
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _weights(model) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


@exercise("03", "reward_model_step", difficulty=2, importance=5, minutes=15)
def check_reward_model_step(fn) -> None:
    """`fn(model, optimizer, chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> float`: score both sides, take
    the Bradley–Terry loss, zero the gradients, backpropagate, step; return the loss (before the step) as a float."""
    learning_rate = 0.5  # plain SGD: the change of the weights is -lr * gradient, so every mistake shows in them
    start = _tiny_reward_model()
    batches = [("4 pairs, right-padded, chosen and rejected of different lengths",
                _pairs(1, [5, 3, 8, 2], [4, 6, 2, 7])),
               ("a second call on 3 other pairs (the first call's gradients must not carry over)",
                _pairs(2, [6, 2, 4], [3, 7, 5]))]
    mine, reference = copy.deepcopy(start), copy.deepcopy(start)
    mine_opt = torch.optim.SGD(mine.parameters(), lr=learning_rate)
    reference_opt = torch.optim.SGD(reference.parameters(), lr=learning_rate)
    for number, (case, batch) in enumerate(batches):
        before = _weights(mine)
        variants = {}  # what the known mistakes give, from the same weights
        for name, kwargs in [("swap", dict(swap=True)), ("no_mask", dict(no_mask=True)), ("sum", dict(reduce="sum")),
                             ("accumulate", dict(zero_grad=False))]:
            model = copy.deepcopy(reference)
            optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
            if name == "accumulate":  # the gradients the first call left behind are still there
                for p, q in zip(model.parameters(), reference.parameters()):
                    p.grad = None if q.grad is None else q.grad.clone()
            variants[name] = (_variant_step(model, optimizer, *batch, **kwargs), _weights(model))
        expected_loss = reference_reward_model_step(reference, reference_opt, *batch)
        answer = call(fn, mine, mine_opt, *(t.clone() for t in batch), case=case)
        if isinstance(answer, torch.Tensor):
            raise ExerciseFailed("reward_model_step: returned a torch.Tensor; return loss.item(), a Python float. A "
                                 "loss tensor carries its graph: every activation of the forward pass stays in memory "
                                 "for as long as you keep it (in a list of losses, say).\n  case: " + case)
        expect(isinstance(answer, numbers.Real) and not isinstance(answer, bool),
               f"reward_model_step: returned {type(answer).__name__}; return the loss as a float (loss.item()).\n"
               f"  case: {case}")
        expect_close(torch.tensor(float(answer)), torch.tensor(expected_loss), "reward_model_step (the loss it returned)",
                     case=case, diagnoses=[
            (torch.tensor(variants["swap"][0]), "chosen and rejected are swapped: that loss is −log σ(r_rejected − "
                                                "r_chosen), and its step teaches the model to prefer the rejected text."),
            (torch.tensor(variants["no_mask"][0]), "the rewards were read at the last position, a pad token on the "
                                                   "right-padded rows: your step ignores the attention mask. Pass each "
                                                   "side's mask to the model (it reads the last *real* token)."),
            (torch.tensor(variants["sum"][0]), "that loss is the sum over the pairs: take the mean (the step's size "
                                               "should not grow with the number of pairs)."),
        ])
        after = _weights(mine)
        if torch.equal(after, before):
            grads = [p.grad for p in mine.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
            raise ExerciseFailed(
                "reward_model_step: the weights did not change, " + (
                    "though gradients reached them: you never took a step (optimizer.step() after loss.backward())."
                    if grads else
                    "and no gradient reached them: call loss.backward() (and optimizer.zero_grad() before it, not "
                    "between backward and step, which would throw the gradients away).") + f"\n  case: {case}")
        expect_close(after, _weights(reference), "reward_model_step (the weights after your step)", case=case,
                     diagnoses=[(variants["accumulate"][1],
                                 "your step added the gradients of the previous call to this one's: .backward() "
                                 "accumulates into .grad, so call optimizer.zero_grad() before it, every step."),
                                (variants["swap"][1], "the step went the wrong way: chosen and rejected are swapped "
                                                      "in the loss you backpropagated."),
                                (variants["sum"][1], "the step is as many times too large as there are pairs: you "
                                                     "backpropagated the sum over the pairs, not the mean.")],
                     hint="one step is: rewards of both sides, loss = −log σ(r_c − r_r) averaged, "
                          "optimizer.zero_grad(), loss.backward(), optimizer.step().")
    passed("reward_model_step", len(batches))
