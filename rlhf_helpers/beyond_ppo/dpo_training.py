"""DPO on the course's task: preference pairs from the SFT policy, and the training loop.

**The pairs** (`sample_preference_pairs`) follow the DPO paper's IMDb experiment (Rafailov et al. 2023, section 6.1):
k completions of each train prompt sampled from the SFT policy (here PPO's sampling: 4–16 tokens, the full
distribution), every one of the k(k-1)/2 pairs labelled by a scorer — the chosen completion is the one it scores
higher, ties are dropped. By default the scorer is our reward model, so DPO sees the same preference signal as
PPO; the paper labelled with its ground-truth classifier, which here is the gold judge (`gold_scorer`).

**The loop** (`train_dpo`): `core.training.train_loop` (AdamW, warmup, cosine decay, checkpoints, resume) over
mini-batches of pairs, the loss of `dpo.dpo_loss`. The reference's log-probabilities of every pair are computed
once before training (the reference is frozen), so a step is one forward and backward of the policy on
``2 x batch_size`` sequences. Evaluated on held-out prompts along the way, like every run of notebook 07.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..config import DPOConfig, PreferredFTConfig
from ..core.reward_fn import reward_scores
from ..core.tensors import right_pad
from ..policy.generation import sample_responses
from .dpo import dpo_loss, preference_metrics, sequence_logprobs

__all__ = ["DPOConfig", "DPOTrainConfig", "PreferredFTConfig", "PreferencePairs", "sample_preference_pairs", "gold_scorer", "train_dpo", "train_preferred_ft",
           "pair_statistics"]


DPOTrainConfig = DPOConfig  # the name notebook 08 and the sweeps use; the settings live in `rlhf_helpers.config`


@dataclass
class PreferencePairs:
    """P pairs as right-padded ``[P, L]`` rows of prompt + completion (chosen and rejected apart)."""

    chosen_ids: torch.Tensor
    chosen_attention: torch.Tensor
    chosen_completion: torch.Tensor
    rejected_ids: torch.Tensor
    rejected_attention: torch.Tensor
    rejected_completion: torch.Tensor
    score_gap: torch.Tensor
    """``[P]`` scorer(chosen) - scorer(rejected) > 0."""
    texts: list[tuple[str, str, str]]
    """``[P]`` (prompt, chosen, rejected) decoded."""

    def __len__(self) -> int:
        return len(self.chosen_ids)


def gold_scorer(judge):
    """The gold judge as a scorer for `sample_preference_pairs` (texts -> p(positive)): the paper's setting, pairs
    labelled by the ground truth."""
    return lambda texts: torch.as_tensor(judge.probability(texts), dtype=torch.float32)


def _rows(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    ids, attention = right_pad([p + c for p, c in zip(prompts, completions)], pad_id)
    completion = torch.zeros_like(attention)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        completion[row, len(p) : len(p) + len(c)] = 1
    return ids, attention, completion


@torch.no_grad()
def sample_preference_pairs(policy_lm, tokenizer, prompts, scorer, k: int = 4, seed: int = 0, min_tokens: int = 4,
                            max_tokens: int = 16, temperature: float = 1.0, batch_size: int = 256) -> PreferencePairs:
    """k completions per prompt from `policy_lm`, every pair of them labelled by `scorer` (``texts -> [N]``, of
    prompt + completion): chosen = the higher score; equal scores give no pair."""
    if k < 2:
        raise ValueError(f"k must be >= 2 completions per prompt to make a pair, got {k}.")
    draws = []
    for j in range(k):
        out = sample_responses(policy_lm, tokenizer, prompts, min_tokens, max_tokens, length_seed=seed * 1000 + j,
                               seed=seed * 1000 + j, temperature=temperature, batch_size=batch_size)
        texts = [q + r for q, r in zip(out.prompts, out.texts)]
        scores = reward_scores(scorer(texts), len(texts), where="in sample_preference_pairs").tolist()
        completions = [ids[m.bool()].tolist() for ids, m in zip(out.response_ids, out.response_mask)]
        draws.append((completions, out.texts, scores, out.prompts))
    prompt_ids = [list(map(int, p)) for p in prompts]
    rows = {"chosen": [], "rejected": []}
    gaps, texts, used_prompts = [], [], []
    for i in range(len(prompts)):
        for a, b in itertools.combinations(range(k), 2):
            sa, sb = draws[a][2][i], draws[b][2][i]
            if sa == sb:
                continue
            win, lose = (a, b) if sa > sb else (b, a)
            rows["chosen"].append(draws[win][0][i])
            rows["rejected"].append(draws[lose][0][i])
            used_prompts.append(prompt_ids[i])
            gaps.append(abs(sa - sb))
            texts.append((draws[0][3][i], draws[win][1][i], draws[lose][1][i]))
    pad = tokenizer.pad_token_id
    chosen = _rows(used_prompts, rows["chosen"], pad)
    rejected = _rows(used_prompts, rows["rejected"], pad)
    return PreferencePairs(*chosen, *rejected, torch.tensor(gaps), texts)


@torch.no_grad()
def _reference_logps(reference_lm, pairs: PreferencePairs, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(reference_lm.parameters()).device
    out = []
    for ids, attention, completion in [(pairs.chosen_ids, pairs.chosen_attention, pairs.chosen_completion),
                                       (pairs.rejected_ids, pairs.rejected_attention, pairs.rejected_completion)]:
        parts = [sequence_logprobs(reference_lm, ids[s : s + batch_size].to(device),
                                   attention[s : s + batch_size].to(device),
                                   completion[s : s + batch_size].to(device)).cpu()
                 for s in range(0, len(ids), batch_size)]
        out.append(torch.cat(parts))
    return out[0], out[1]


def train_dpo(policy_lm, reference_lm, pairs: PreferencePairs, config: DPOTrainConfig, output_dir, evaluator,
              progress: bool = True) -> dict:
    """DPO of `policy_lm` (trained in place) against the frozen `reference_lm` on `pairs`, evaluated by `evaluator`
    (a `HeldOutEvaluator`) every ``config.eval_every`` steps; resumable in `output_dir`. Returns
    `train_loop_with_evaluations`' dict; the training-loss rows also log the implicit reward's accuracy and margin."""
    from ..core.run import batch_indices
    from ..evaluation.along_training import train_loop_with_evaluations

    config.validate()
    reference_lm.eval().requires_grad_(False)
    ref_chosen, ref_rejected = _reference_logps(reference_lm, pairs)

    def loss_fn(model, step, shard, device):
        rows = shard.take(batch_indices(step, len(pairs), config.batch_size, config.seed))
        # one forward for both sides: the chosen rows, then the rejected rows (padded to one length)
        width = max(pairs.chosen_ids.shape[1], pairs.rejected_ids.shape[1])
        pad = lambda t: torch.nn.functional.pad(t[rows], (0, width - t.shape[1]))  # noqa: E731
        ids = torch.cat([pad(pairs.chosen_ids), pad(pairs.rejected_ids)]).to(device)
        attention = torch.cat([pad(pairs.chosen_attention), pad(pairs.rejected_attention)]).to(device)
        completion = torch.cat([pad(pairs.chosen_completion), pad(pairs.rejected_completion)]).to(device)
        chosen, rejected = sequence_logprobs(model, ids, attention, completion).chunk(2)
        loss, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen[rows].to(device),
                                                          ref_rejected[rows].to(device), config.beta)
        stats = preference_metrics(chosen_rewards, rejected_rewards)
        return loss, {"accuracy": stats["accuracy"], "margin": stats["margin"]}

    return train_loop_with_evaluations(policy_lm, config, output_dir, loss_fn, evaluator, "DPO", config.batch_size,
                                       progress)


def train_preferred_ft(policy_lm, pairs: PreferencePairs, config: PreferredFTConfig, output_dir, evaluator,
                       progress: bool = True) -> dict:
    """"Preferred-FT" (the DPO paper's baseline): supervised fine-tuning on the *chosen* completions only, the
    mean negative log-likelihood of their tokens given the prompt; evaluated and resumable like `train_dpo`. Uses
    ``config.batch_size`` pairs a step."""
    from ..core.run import batch_indices
    from ..evaluation.along_training import train_loop_with_evaluations

    config.validate()

    def loss_fn(model, step, shard, device):
        rows = shard.take(batch_indices(step, len(pairs), config.batch_size, config.seed))
        completion = pairs.chosen_completion[rows].to(device)
        logps = sequence_logprobs(model, pairs.chosen_ids[rows].to(device), pairs.chosen_attention[rows].to(device),
                                  completion)
        return -logps.sum() / completion[:, 1:].sum(), {}

    return train_loop_with_evaluations(policy_lm, config, output_dir, loss_fn, evaluator, "Preferred-FT",
                                       config.batch_size, progress)


def pair_statistics(pairs: PreferencePairs) -> dict:
    """The pair set in numbers: pairs, the scorer's gap between chosen and rejected, completion lengths."""
    return {"pairs": len(pairs), "mean_score_gap": float(pairs.score_gap.mean()),
            "mean_chosen_tokens": float(pairs.chosen_completion.sum(1).float().mean()),
            "mean_rejected_tokens": float(pairs.rejected_completion.sum(1).float().mean()),
            "median_score_gap": float(np.median(pairs.score_gap.numpy()))}
