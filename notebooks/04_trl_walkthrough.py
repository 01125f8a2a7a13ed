# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Reading TRL: what the library does, and where it lives in our code
#
# 🤗 TRL is the library most people use for RLHF on `transformers` models. This course writes PPO from scratch
# instead, and the reason is in TRL's history: the PPO trainer of the recipe this course follows, and its
# value-head model, **no longer exist** in the TRL installed here. This notebook reads the installed TRL's source, so
# that what you learn from it matches the code that runs, maps every piece to a function of `rlhf_helpers`, and ends
# by running TRL's two RL trainers on our task.
#
# **Learning objectives.** After this notebook you can
# 1. read a trainer's source with `inspect` and pin each formula to the lines of the installed TRL;
# 2. write GRPO's group-normalised advantages, GRPO's loss (the clipped term plus β·k3, with the `"grpo"` and `"dapo"`
#    normalisations) and RLOO's leave-one-out baseline yourself (exercises 4.1–4.3), and check each against TRL's
#    own code;
# 3. say how GRPO and RLOO differ from PPO: the advantage estimate, where the KL enters, what counts as one action;
# 4. name the two things to know before running TRL on GPT-2 (a reference model loaded from a path; position ids
#    under left padding);
# 5. place TRL's pieces, old and new, on a map of our package.
#
# **Prerequisites:** notebooks 02 and 03 (the SFT policy and the reward model). PPO's clipped loss appears here as a
# formula; notebook 05 derives it.
# **Time:** about 55 minutes with the exercises (their budgets add up to 40); running every cell takes well under a
# minute on 2 CPU cores.
# **Takes from earlier notebooks:** the shipped SFT policy (02), the shipped reward model (03), our prompts (01).
#
# The six sections:
#
# 1. **`RewardTrainer`**: the reward model's loss, Bradley–Terry plus an optional centring term.
# 2. **`GRPOTrainer`**: group-normalised advantages (exercise 4.1), and the loss, PPO's clipped ratio plus a k3 KL
#    term per token (exercise 4.2).
# 3. **`RLOOTrainer`**: the leave-one-out baseline (exercise 4.3) and the KL inside the reward.
# 4. **Two details to know** before running TRL on GPT-2.
# 5. **TRL's history**, told from its pull requests.
# 6. **A map** from each historical TRL piece to ours.
#
# Each excerpt is cut out of the installed source by *marker strings*, not line numbers, and the notebook stops with an
# error if a marker disappears: a TRL upgrade that changes these lines cannot go unnoticed. Each formula is then run
# twice on the same small tensors — once through TRL's *own method* on a real trainer, once through our function —
# with an `assert` that they agree (the same checks, on more cases, are in `tests/test_trl_parity.py`).

# %%
import importlib.util
import inspect
import math
import os
import tempfile
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # importing trl.experimental would warn on stderr
import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers
import trl
from datasets import Dataset
from transformers import AutoTokenizer, GPT2LMHeadModel
from trl.trainer.utils import RepeatSampler

from rlhf_helpers import exercises
from rlhf_helpers.policy import shipped_policy_dir
from rlhf_helpers.ppo.advantages import leave_one_out_advantages, masked_mean
from rlhf_helpers.ppo.kl import kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss
from rlhf_helpers.reward.model import bradley_terry_loss
from rlhf_helpers.reward.trl_twin import sequence_classifier_from_policy

transformers.logging.set_verbosity_error()  # no load reports or advisory warnings in the cell outputs
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()  # no map/filter bars in the cell outputs
torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False, linewidth=120)
TRL_DIR = Path(trl.__file__).parent
WORK = Path(tempfile.mkdtemp(prefix="nb04_"))  # trainers need an output_dir; nothing we need is saved there

# %% tags=["nbval-check-output"]
print("TRL", trl.__version__)
for name in ["RewardTrainer", "GRPOTrainer", "RLOOTrainer", "PPOTrainer", "AutoModelForCausalLMWithValueHead"]:
    print(f"  trl.{name:<34} {'present' if hasattr(trl, name) else 'ABSENT'}")
print(f"  trl.experimental.ppo{'':<18} {'present' if importlib.util.find_spec('trl.experimental.ppo') else 'ABSENT'}")


# %% [markdown]
# The course pins TRL (`requirements.txt`): TRL changes fast, and an unpinned install would make this notebook
# describe code you do not have. PPO and the value-head model are absent: section 5 tells when and why.
#
# A small helper prints an excerpt of a function's source between two marker strings, with the line numbers of the
# installed file, and fails loudly if a marker is gone:

# %%
def excerpt(func, start, end=None):
    '''Print the lines of ``func``'s source from the first line containing ``start`` to the next line containing
    ``end`` (``end=None``: just the start line), numbered as in the installed file.'''
    func = inspect.unwrap(func)  # TRL wraps some methods in a profiling decorator; read the method itself
    lines, first_line = inspect.getsourcelines(func)
    starts = [i for i, line in enumerate(lines) if start in line]
    assert starts, f"TRL changed: {start!r} is no longer in {func.__qualname__}; re-read the source."
    i = starts[0]
    j = i if end is None else next((k for k in range(i, len(lines)) if end in lines[k]), None)
    assert j is not None, f"TRL changed: {end!r} no longer follows {start!r} in {func.__qualname__}."
    path = Path(inspect.getsourcefile(func)).relative_to(TRL_DIR.parent)
    print(f"# {path} :: {func.__qualname__}, lines {first_line + i}-{first_line + j}")
    for k in range(i, j + 1):
        print(f"{first_line + k:5d} {lines[k].rstrip()}")


# %% [markdown]
# ## 1. `RewardTrainer`: Bradley–Terry, plus an optional centring term
#
# Notebook 03 trained our reward model with `trl.RewardTrainer` and with our own loop. Here is the loss TRL
# computes. A batch holds the B chosen texts followed by the B rejected ones, so one forward pass scores both and
# `torch.chunk` splits the rewards in two:

# %%
excerpt(trl.RewardTrainer.compute_loss, "rewards_chosen, rewards_rejected = torch.chunk",
        "loss += self.args.center_rewards_coefficient")

# %% [markdown]
# * The main term is the Bradley–Terry negative log-likelihood $-\log\sigma(r_c - r_r)$, averaged over pairs —
#   our `bradley_terry_loss`. An optional per-pair `margin` column is subtracted inside the sigmoid.
# * `center_rewards_coefficient` (off by default; TRL's documentation recommends 0.01) adds
#   $c \cdot \mathrm{mean}\big((r_c + r_r)^2\big)$. Bradley–Terry only sees differences, so it leaves the offset of the
#   rewards free; this term pulls the rewards of every pair towards a mean of zero (Eisenstein et al., 2023,
#   *Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward Hacking*, eq. 2 — the paper
#   TRL's `RewardConfig` cites). Our course fixes the offset after training instead, by normalising the reward
#   to mean 0 and std 1 on samples of the SFT policy (notebook 03, section 9).
#
# To run TRL's own `compute_loss` on rewards we choose, we build a real `RewardTrainer` (on a classifier made from
# our SFT policy, as in notebook 03) and call `compute_loss` with a stand-in model that returns fixed rewards —
# the only thing `compute_loss` asks of the model is its `.logits`:

# %%
policy_dir = shipped_policy_dir("tiny")   # the course's SFT policy: config, weights and tokenizer
tokenizer = AutoTokenizer.from_pretrained(policy_dir)
classifier = sequence_classifier_from_policy(GPT2LMHeadModel.from_pretrained(policy_dir), tokenizer)
pairs = Dataset.from_list([{"chosen_ids": [5, 6, 7], "rejected_ids": [8, 9]}] * 4)  # only needed to build the trainer
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    reward_trainer = trl.RewardTrainer(
        model=classifier, train_dataset=pairs, processing_class=tokenizer,
        args=trl.RewardConfig(output_dir=str(WORK / "rm"), report_to="none", use_cpu=True, bf16=False,
                              gradient_checkpointing=False, max_length=None, center_rewards_coefficient=0.01))


class FixedRewards(torch.nn.Module):
    '''Stands in for the reward model: returns the given rewards as a classifier's ``[2B, 1]`` logits.'''

    def __init__(self, chosen, rejected):
        super().__init__()
        self.logits = torch.cat([chosen, rejected])[:, None]  # chosen first, then rejected: TRL's batch layout

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.logits)


# %% tags=["nbval-check-output"]
r_chosen = torch.tensor([2.0, 0.5, -1.0])
r_rejected = torch.tensor([0.0, 0.5, 1.0])
batch = {"attention_mask": torch.ones(6, 1, dtype=torch.long)}  # TRL counts tokens from the mask in train mode
trl_loss = reward_trainer.compute_loss(FixedRewards(r_chosen, r_rejected), dict(batch)).item()
ours = bradley_terry_loss(r_chosen, r_rejected).item()
centring = 0.01 * torch.mean((r_chosen + r_rejected) ** 2).item()
print(f"TRL RewardTrainer.compute_loss:                   {trl_loss:.6f}")
print(f"ours: bradley_terry_loss + 0.01 * mean((rc+rr)^2): {ours:.6f} + {centring:.6f} = {ours + centring:.6f}")
assert abs(trl_loss - (ours + centring)) < 1e-6
reward_trainer.args.center_rewards_coefficient = None  # the default: Bradley–Terry alone
assert abs(reward_trainer.compute_loss(FixedRewards(r_chosen, r_rejected), dict(batch)).item() - ours) < 1e-6
reward_trainer.args.center_rewards_coefficient = 0.01  # back as built, so this cell can run again
print("without centring, TRL's loss is our bradley_terry_loss")

# %% [markdown]
# `tests/test_reward_model.py::test_our_loss_equals_trl_reward_trainer_loss_on_a_fixed_batch` checks the same
# thing end to end: a real model, real token ids, equal losses *and* equal gradients.
#
# ## 2. `GRPOTrainer`: PPO's clipped ratio, group-normalised advantages, a k3 KL term
#
# GRPO (Shao et al., 2024, *DeepSeekMath*, section 4.1) drops PPO's value model. For each prompt it samples a
# **group** of $G$ completions (`num_generations`), scores them, and uses the reward normalised *within the group*
# as the advantage of every token of a completion:
#
# $$\hat A_i = \frac{r_i - \mathrm{mean}(r_1..r_G)}{\mathrm{std}(r_1..r_G) + 10^{-4}}.$$

# %% [markdown]
# TRL computes this with `rewards.view(-1, num_generations)`, one row per prompt, so the $G$ completions of a prompt
# must sit next to each other in the batch. TRL's sampler guarantees it: it repeats each prompt index $G$ times in a
# row (`RepeatSampler`, here without shuffling so the layout is plain to see):

# %% tags=["nbval-check-output"]
print(list(RepeatSampler(["prompt 0", "prompt 1", "prompt 2"], mini_repeat_count=3, batch_size=3, shuffle=False)))

# %% [markdown]
# ### Exercise 4.1 — `group_normalised_advantages`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# Write GRPO's advantage from the formula above (TRL's default, `scale_rewards="group"`). Input: `rewards` `[N * k]`,
# one reward per completion, the k completions of each of the N prompts next to each other (the sampler's layout),
# and `k`. Output: `[N * k]`, each reward centred on its own group's mean and divided by its group's standard
# deviation:
#
# $$\hat A_i = \frac{r_i - \bar r_{g(i)}}{s_{g(i)} + 10^{-4}}, \qquad s_g = \sqrt{\tfrac{1}{k-1}\textstyle\sum_{j \in g}
# (r_j - \bar r_g)^2}\ \text{(unbiased)}.$$
#
# *Hint:* `rewards.view(-1, k)` has one row per prompt; `keepdim=True` keeps the row statistics broadcastable.
# TRL's own lines are printed after the check.

# %%
def group_normalised_advantages(rewards, k):
    """GRPO's advantages: rewards [N * k] (groups of k adjacent) centred and scaled per group -> [N * k]."""
    ### BEGIN SOLUTION
    groups = rewards.view(-1, k)  # one row per prompt
    centred = groups - groups.mean(dim=1, keepdim=True)
    return (centred / (groups.std(dim=1, keepdim=True) + 1e-4)).view(-1)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_group_normalised_advantages(group_normalised_advantages)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_group_normalised_advantages` names each of these when your function makes it:
#
# - the group's mean but the whole batch's std
# - normalised over the whole batch
# - the biased std (divided by k)
# - centred but not divided by the std (Dr. GRPO)
# - groups read the wrong way (`view(k, -1)`)
# - divided by the std without TRL's + 1e-4
# - an epsilon of 1e-8 instead of 1e-4
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# **TRL's lines, once your check passes** (the output is collapsed: expand it). They are cut out of the installed
# `GRPOTrainer._generate_and_score_completions`; TRL's `nanstd` is the unbiased standard deviation that ignores NaN:

# %% jupyter={"outputs_hidden": true}
excerpt(trl.GRPOTrainer._generate_and_score_completions,
        "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
        "advantages = advantages / (std_rewards + 1e-4)")

# %% [markdown]
# ### GRPO's loss
#
# The loss is PPO's clipped surrogate (Schulman et al., 2017, *Proximal Policy Optimization Algorithms*, section 3)
# token by token, with the completion's advantage $\hat A_i$ at each of its tokens, and the KL to the reference is
# not in the reward, as in PPO-RLHF, but **added to the loss** at every token, with Schulman's k3 estimator
# (`rlhf_helpers.ppo.kl` explains k1 and k3). For token $t$ of completion $i$, with the ratio
# $\rho_{i,t} = \pi_\theta(y_{i,t}) / \pi_{\text{old}}(y_{i,t})$ to the policy that sampled it:
#
# $$\ell_{i,t} = -\min\big(\rho_{i,t}\hat A_i,\ \mathrm{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon)\,\hat A_i\big)
# + \beta\, k_{3,i,t}\,\rho_{i,t}, \qquad k_3 = \frac{\pi_{\text{ref}}}{\pi_\theta} - \log\frac{\pi_{\text{ref}}}{\pi_\theta}
# - 1 \;\ge 0.$$
#
# The factor $\rho_{i,t}$ on the KL term is TRL 1.16's default `use_bias_correction_kl=True` (its documentation
# attributes it to the DeepSeek-V3.2 report): the tokens were sampled by $\pi_{\text{old}}$, and reweighting k3 by
# $\rho$ makes it estimate the *current* policy's KL. On the first pass over a batch $\rho = 1$ in value, but its
# gradient is not zero.
#
# How the per-token losses of a batch of completions $o_1..o_G$ become one number is `loss_type`:
#
# * `"grpo"` (DeepSeekMath, section 4.1, equation 3): the mean over each completion's tokens, then over completions,
#   $\frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t \ell_{i,t}$ — a token of a short completion weighs more than one of a
#   long completion;
# * `"dapo"`, TRL 1.16's default (Yu et al., 2025, *DAPO: An Open-Source LLM Reinforcement Learning System at Scale*,
#   section 3.3, the token-level policy gradient loss): the sum over every token of the batch divided by their number,
#   $\sum_i\sum_t \ell_{i,t} / \sum_i |o_i|$ — every token weighs the same. (TRL divides by `num_items_in_batch`, the
#   tokens of the whole generation batch; here one batch is the whole generation batch.)

# %% [markdown]
# ### Exercise 4.2 — `grpo_loss`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 20 minutes
#
# Write GRPO's loss as TRL 1.16 computes it. Inputs: `logprobs`, `old_logprobs`, `ref_logprobs` `[B, T]`, the
# log-probs of the sampled completion tokens under the policy being trained, the policy that sampled them, and the
# reference; `advantages` `[B]`, one per completion (from exercise 4.1); `mask` `[B, T]`, 1 on real tokens (the
# padding holds junk); `beta`; `epsilon` (the clip range, the same on both sides); `loss_type`, `"grpo"` or `"dapo"`.
# Output: the loss, a 0-d tensor whose gradient with respect to `logprobs` the check compares too.
#
# *Hints:* `advantages[:, None]` puts a completion's advantage on each of its tokens; k3's log-ratio is
# $\log\pi_{\text{ref}} - \log\pi_\theta$ (the tokens come from $\pi_\theta$'s side); compute $\rho$ from `logprobs`
# itself, so that the KL term's factor carries gradient; TRL's lines are printed after the check.

# %%
def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, beta, epsilon, loss_type):
    """GRPO's loss: per token -min(rho A, clip(rho) A) + beta k3 rho; reduced by loss_type ("grpo" or "dapo")."""
    ### BEGIN SOLUTION
    ratio = torch.exp(logprobs - old_logprobs)  # pi_theta / pi_old
    a = advantages[:, None]  # the completion's advantage at each of its tokens
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
    log_r = ref_logprobs - logprobs  # log(pi_ref / pi_theta)
    per_token = per_token + beta * (torch.exp(log_r) - log_r - 1) * ratio  # k3, times rho (bias correction)
    mask = mask.to(per_token.dtype)
    if loss_type == "grpo":  # per completion, then over completions
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)  # "dapo": every token of the batch alike
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_grpo_loss(grpo_loss)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_grpo_loss` names each of these when your function makes it:
#
# - k1 instead of k3 in the KL term
# - k3's log-ratio the wrong way round
# - k2 instead of k3
# - k3 without its − 1
# - the KL term not multiplied by the ratio ρ (TRL's bias correction)
# - the KL term with the wrong sign, missing, or not multiplied by β
# - the min of the two loss terms instead of −min of the objective's
# - the clipped objective not negated
# - no clipping, or only the clipped term
# - the ratio the wrong way round (π_old / π_θ)
# - the `"dapo"` normalisation where `loss_type` is `"grpo"`
# - the `"grpo"` normalisation where `loss_type` is `"dapo"`
# - the padding counted in the mean
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# **TRL's lines, once your check passes** (collapsed: expand the output): the clipped term (`coef_1` is the ratio,
# `coef_2` the clipped ratio), the k3 term with its bias correction, and the two normalisations, cut out of the
# installed `GRPOTrainer._compute_loss`:

# %% jupyter={"outputs_hidden": true}
excerpt(trl.GRPOTrainer._compute_loss, 'elif self.loss_type in ["grpo", "bnpo", "dr_grpo", "dapo", "luspo"]:',
        "per_token_loss = -torch.min(per_token_loss1, per_token_loss2)")
excerpt(trl.GRPOTrainer._compute_loss, "# Compute the KL divergence between the model and the reference model",
        "per_token_kl = per_token_kl * coef_1")
excerpt(trl.GRPOTrainer._compute_loss, "per_token_loss = per_token_loss + self.beta * per_token_kl")
excerpt(trl.GRPOTrainer._compute_loss, 'if self.loss_type in ["grpo", "sapo"]:',
        "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()")
excerpt(trl.GRPOTrainer._compute_loss, 'elif self.loss_type in ["cispo", "dapo", "vespo"]:',
        "loss = (per_token_loss * mask).sum() / normalizer")

# %% [markdown]
# Is the k3 in your `grpo_loss` TRL's formula? Take TRL's own expression out of the installed source, evaluate it on a
# tensor, and compare it with our `rlhf_helpers.ppo.kl.kl_penalty(logprobs, ref_logprobs, "k3")` (policy first,
# reference second; it writes `exp(x) - 1` as `torch.expm1(x)`, exact for tiny log-ratios) and with your function
# (advantages 0, ratio 1 and `"dapo"`: the loss is β times the mean k3):

# %% tags=["nbval-check-output"]
source = inspect.getsource(inspect.unwrap(trl.GRPOTrainer._compute_loss))
assert "per_token_kl = (" in source, "TRL changed: per_token_kl is no longer computed as before; re-read the source."
start = source.index("per_token_kl = (") + len("per_token_kl = ")
trl_expression = textwrap.dedent(source[start : source.index(")\n", start) + 1])
print("TRL's expression:", " ".join(trl_expression.split()))
g = torch.Generator().manual_seed(0)
policy_logps = -torch.rand(3, 5, generator=g) * 4
reference_logps = policy_logps + torch.randn(3, 5, generator=g)
trl_k3 = eval(trl_expression, {"torch": torch},
              {"per_token_logps": policy_logps, "ref_per_token_logps": reference_logps})
assert torch.allclose(trl_k3, kl_penalty(policy_logps, reference_logps, "k3"), atol=1e-6)
yours = grpo_loss(policy_logps, policy_logps, reference_logps, torch.zeros(3), torch.ones(3, 5), 1.0, 0.2, "dapo")
assert torch.allclose(trl_k3.mean(), yours, atol=1e-6)
print("TRL's line, kl_penalty(..., 'k3') and the KL term of your grpo_loss agree on a [3, 5] tensor")

# %% [markdown]
# Three defaults of TRL 1.16's `GRPOConfig` are easy to miss:
#
# * **`beta` defaults to 0.0**: out of the box there is no KL term and no reference model at all. RLHF on our task
#   needs `beta > 0`.
# * **`use_bias_correction_kl` defaults to True**: the factor $\rho$ on the k3 term of exercise 4.2 (`coef_1` in
#   TRL's lines).
# * **`loss_type` defaults to `"dapo"`** (every token of the batch weighs the same), not the `"grpo"` average of the
#   DeepSeekMath paper.
#
# Now the check. We build a real `GRPOTrainer` on our SFT policy with `beta = 0.1` and call its `_compute_loss` on a
# batch of two completions. The only thing we replace is the policy's forward pass
# (`_get_per_token_logps_and_entropies`), so that the log-probs are numbers we chose; everything after it is TRL's
# code. TRL logs the mean per-token KL in `_metrics[...]["kl"]`:

# %%
PROMPTS = ["This movie was", "I rented this film", "The acting in"]
K = 3  # completions per prompt (num_generations)


def zero_reward(prompts, completions, **kwargs):
    '''A reward function in TRL's format: lists of prompts and completions in, one float per completion out.'''
    return [0.0] * len(prompts)


def make_trainer(kind, reward_fn=zero_reward, **settings):
    '''A real GRPOTrainer or RLOOTrainer on the course's SFT policy (loaded from its directory), on CPU.'''
    config_cls, trainer_cls = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = config_cls(output_dir=str(WORK / kind), report_to="none", use_cpu=True, bf16=False, seed=0,
                          num_generations=K, per_device_train_batch_size=K * len(PROMPTS), max_completion_length=4,
                          disable_dropout=True, **settings)
        return trainer_cls(model=str(policy_dir), reward_funcs=[reward_fn], args=args, processing_class=tokenizer,
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def use_fixed_logps(trainer, policy_logps, ref_logps=None):
    '''Replace the trainer's forward pass by chosen per-token log-probs ``[B, T]`` for the policy and the reference.'''
    def forward(model, *args, **kwargs):
        logps = ref_logps if model is trainer.ref_model else policy_logps
        # TRL expects (log-probs, entropies, aux loss); the log-probs carry a gradient only in the loss pass.
        return logps.clone().requires_grad_(torch.is_grad_enabled()), torch.zeros_like(logps), None
    trainer._get_per_token_logps_and_entropies = forward  # an instance attribute shadows the method


grpo = make_trainer("grpo", beta=0.1, loss_type="grpo")
print(f"GRPOTrainer: beta = {grpo.beta}, reference model loaded from .../{Path(grpo.ref_model.config._name_or_path).name}")

# %% tags=["nbval-check-output"]
# Two completions of 4 tokens; the second ends after 3 (its last column is padding, filled with garbage on purpose).
logp = torch.tensor([[-1.2, -0.4, -2.0, -0.9], [-0.3, -1.5, -0.7, 99.0]])
ref_logp = torch.tensor([[-1.0, -0.9, -1.1, -0.9], [-0.8, -1.2, -2.0, 99.0]])
mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
batch = {"prompt_ids": torch.tensor([[11, 12], [13, 14]]), "prompt_mask": torch.ones(2, 2, dtype=torch.long),
         "completion_ids": torch.tensor([[21, 22, 23, 24], [25, 26, 27, 1]]), "completion_mask": mask,
         "ref_per_token_logps": ref_logp, "advantages": torch.zeros(2)}  # advantages 0: the loss is beta * KL alone

use_fixed_logps(grpo, logp)
grpo._metrics["eval"].clear()
trl_loss = grpo._compute_loss(grpo.model, dict(batch)).item()  # eval mode: nothing accumulated
trl_kl = grpo._metrics["eval"]["kl"][-1]

k3 = kl_penalty(logp, ref_logp, estimator="k3")
k1 = kl_penalty(logp, ref_logp, estimator="k1")
print("our k3 per token:", k3 * mask + 0.0)  # + 0.0 turns -0.0 into 0.0 for printing
print("our k1 per token:", k1 * mask + 0.0, " <- k1 can be negative on single tokens, k3 cannot")
print(f"mean k3 over real tokens: TRL {trl_kl:.6f} | ours {masked_mean(k3, mask).item():.6f}")
per_completion = (k3 * mask).sum(1) / mask.sum(1)
print(f"loss (loss_type='grpo'):  TRL {trl_loss:.6f} | ours beta * mean over completions of the mean k3 "
      f"{0.1 * per_completion.mean().item():.6f}")
assert abs(trl_kl - masked_mean(k3, mask).item()) < 1e-6
assert abs(trl_loss - 0.1 * per_completion.mean().item()) < 1e-6

# %% [markdown]
# And the clipped surrogate, with the KL switched off (`beta = 0`) and `loss_type = "bnpo"`, which averages over all
# real tokens as our `clipped_policy_loss` does. The log-ratios are chosen so that every case of the clip occurs:

# %% tags=["nbval-check-output"]
advantages = torch.tensor([1.5, -0.7])
log_ratio = torch.tensor([[0.5, 0.1, -0.3, 0.0], [-0.5, 0.1, 0.3, 0.0]])  # log(pi_theta / pi_old)
grpo.beta, grpo.loss_type = 0.0, "bnpo"
trl_loss = grpo._compute_loss(grpo.model, {**batch, "advantages": advantages, "old_per_token_logps": logp - log_ratio}).item()
grpo.beta, grpo.loss_type = 0.1, "grpo"
ours, stats = clipped_policy_loss(logp, logp - log_ratio, advantages[:, None].expand_as(logp), mask, clip_range=0.2)
print(f"ratio:\n{torch.exp(log_ratio) * mask}")
print(f"TRL GRPO loss {trl_loss:.6f} | our clipped_policy_loss {ours.item():.6f} | clipped tokens {stats['clip_fraction']:.3f}")
assert abs(trl_loss - ours.item()) < 1e-6

# %% [markdown]
# Last, your `grpo_loss` against TRL's `_compute_loss` on the same inputs: the KL term on ($\beta = 0.1$), the policy
# away from its old log-probs ($\rho \ne 1$), both normalisations. TRL reads the `"dapo"` denominator from
# `num_items_in_batch`, the number of real completion tokens:

# %% tags=["nbval-check-output"]
same_inputs = {**batch, "advantages": advantages, "old_per_token_logps": logp - log_ratio, "num_items_in_batch": mask.sum()}
for loss_type in ["grpo", "dapo"]:
    grpo.loss_type = loss_type
    trl_loss = grpo._compute_loss(grpo.model, dict(same_inputs)).item()
    yours = grpo_loss(logp, logp - log_ratio, ref_logp, advantages, mask, grpo.beta, grpo.epsilon_low, loss_type).item()
    print(f"loss_type={loss_type!r}: TRL {trl_loss:.6f} | your grpo_loss {yours:.6f}")
    assert abs(trl_loss - yours) < 1e-6
grpo.loss_type = "grpo"

# %% [markdown]
# So GRPO's loss *is* PPO's clipped loss — ours, from notebook 05 — with a different advantage (group-normalised
# rewards instead of GAE on a value model) and the KL moved from the reward into the loss.
#
# ## 3. `RLOOTrainer`: the leave-one-out baseline, and the KL inside the reward
#
# RLOO (Kool et al., 2019, *Buy 4 REINFORCE Samples, Get a Baseline for Free!*; Ahmadian et al., 2024, *Back to
# Basics*) also samples $k$ completions per prompt, and uses as the baseline of completion $i$ the mean reward of the
# **other** $k-1$. That baseline does not depend on completion $i$, so the gradient stays unbiased, and no value model
# is needed. Unlike GRPO, RLOO puts the KL **into the reward**, summed over the completion's tokens — with the k1
# estimator, as the comment in TRL's code explains:

# %%
excerpt(trl.RLOOTrainer._generate_and_score_completions, "# Include the KL penalty in the reward",
        "advantages = rewards - baselines")

# %% [markdown]
# ### Exercise 4.3 — `rloo_advantages`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# Input: `rewards` `[N * k]`, the sequence rewards of N prompts with k completions each, each prompt's k completions
# next to each other (TRL's layout), and `k` ≥ 2. Output: `[N * k]`, each reward minus the mean of the **other**
# $k - 1$ rewards of its prompt:
#
# $$A_i = r_i - \frac{1}{k-1}\sum_{j \in g(i),\, j \ne i} r_j.$$
#
# *Hint:* the others' sum is the group's sum minus $r_i$ — no loop needed.

# %%
def rloo_advantages(rewards, k):
    """RLOO's advantages: rewards [N * k] (groups of k adjacent) minus the mean of the other k - 1 -> [N * k]."""
    ### BEGIN SOLUTION
    groups = rewards.view(-1, k)  # one row per prompt
    others = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - others).view(-1)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_rloo_advantages(rloo_advantages)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_rloo_advantages` names each of these when your function makes it:
#
# - the baseline includes the sample itself (r − group mean)
# - one left out of the whole batch instead of the group
# - centred on the whole batch's mean
# - the others' sum divided by k instead of k − 1
# - groups read the wrong way (`view(k, -1)`)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# The package's version is `rlhf_helpers.ppo.advantages.leave_one_out_advantages` (the check's reference): the same
# layout as TRL, on `[N*k]` or `[N, k]` rewards.

# %% [markdown]
# The check runs RLOO's real `_generate_and_score_completions` — the method that scores a batch and computes its
# advantages. Two things are replaced: sampling (`_generate` returns fixed completions) and the forward passes
# (fixed log-probs for the policy and the reference). The reward function is a plain Python callable in TRL's
# format; here it looks scores up by completion. We feed the batch in the order TRL's sampler produces, and compute
# ours from the same numbers: the sequence reward is `score - beta * sum(k1)`, which is exactly the sum over tokens of
# our PPO per-token rewards (`per_token_rewards` with the k1 estimator).

# %% tags=["nbval-check-output"]
completions = [[21], [22, 23], [24, 25, 26], [27], [28, 29], [30, 31, 32], [33], [34, 35], [36, 37, 38]]
scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0, 0.5, -0.5, 0.0])  # one score per completion
score_of = {tuple(c): s.item() for c, s in zip(completions, scores)}


def score_by_completion(prompts, completions, completion_ids, **kwargs):
    '''TRL passes prompts, decoded completions, their token ids and the dataset's other columns.'''
    return [score_of[tuple(ids)] for ids in completion_ids]


rloo = make_trainer("rloo", reward_fn=score_by_completion, beta=0.1)
order = list(rloo._get_train_sampler())[: K * len(PROMPTS)]  # the first batch, as TRL's sampler lays it out
assert all(len(set(order[j * K:(j + 1) * K])) == 1 for j in range(len(PROMPTS))), "each prompt's k copies are adjacent"
inputs = [rloo.train_dataset[i] for i in order]
prompt_ids = [tokenizer(x["prompt"])["input_ids"] for x in inputs]
g = torch.Generator().manual_seed(0)
policy_logps = -torch.rand(9, 3, generator=g) * 3  # [batch, longest completion]; padding columns are ignored
ref_logps = policy_logps - 0.5 * torch.randn(9, 3, generator=g)
rloo._generate = lambda prompts: (prompt_ids, completions, tokenizer.batch_decode(completions))
use_fixed_logps(rloo, policy_logps, ref_logps)
rloo.model.train()  # the training path (dropout is off)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a deprecation inside transformers, called by TRL
    out = rloo._generate_and_score_completions(inputs)

rewards, kl = per_token_rewards(scores, policy_logps, ref_logps, out["completion_mask"], kl_coef=0.1, estimator="k1")
ours = leave_one_out_advantages(rewards.sum(1), K)
print("sequence rewards (score - 0.1 * sum k1):", rewards.sum(1))
print("TRL advantages: ", out["advantages"])
print("our advantages: ", ours)
assert torch.allclose(out["advantages"], ours, atol=1e-5)
assert torch.allclose(out["advantages"], rloo_advantages(rewards.sum(1), K), atol=1e-5), "and so do yours"
assert abs(rloo._metrics["train"]["kl"][-1] - masked_mean(kl, out["completion_mask"]).item()) < 1e-5
tiled = leave_one_out_advantages(rewards.sum(1).view(K, -1).T.contiguous(), K).T.reshape(-1)
print("grouped the wrong way (prompts tiled p0 p1 p2 p0 ...):", tiled)
assert not torch.allclose(out["advantages"], tiled, atol=1e-3)

# %% [markdown]
# **Ordering matters.** The same nine rewards grouped the other way round give different advantages, silently. TRL
# 1.16 keeps the $k$ copies of a prompt adjacent (`RepeatSampler`, then `view(-1, k)`). TRL's *first* RLOO trainer
# (2024) did the opposite: it tiled the batch with `queries.repeat(rloo_k, 1)` and grouped with
# `reshape(rloo_k, -1)` — consistent within itself, but code copied from one version into the other would mix
# prompts. (The old lines are quoted in the review of [OpenRLHF PR #515](https://github.com/OpenRLHF/OpenRLHF/pull/515),
# which links TRL's file at commit `0238d96`; we did not read that TRL file itself.)
#
# RLOO's loss treats the whole completion as **one action**: one ratio per completion, from the *sum* of its
# token log-probs, clipped like PPO's:

# %%
excerpt(trl.RLOOTrainer._compute_loss, "logps = (per_token_logps * completion_mask).sum(1)", "loss = per_sequence_loss.mean()")

# %% [markdown]
# Side by side, for the same rewards: RLOO's advantage is $\frac{k}{k-1}(r_i - \bar r)$ (the identity in
# `leave_one_out_advantages`'s docstring); GRPO's divides $r_i - \bar r$ by the group's standard deviation instead.
# The group mean is the baseline of both; only the scale differs:

# %% tags=["nbval-check-output"]
r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0]).view(2, 3)
centred = r - r.mean(1, keepdim=True)
print("RLOO:", leave_one_out_advantages(r, 3))
print("GRPO:", group_normalised_advantages(r.view(-1), 3).view(2, 3))  # your exercise 4.1
assert torch.allclose(leave_one_out_advantages(r, 3), 3 / 2 * centred)  # k / (k - 1) times the centred rewards

# %% [markdown]
# ## 4. Two details to know before running TRL on GPT-2
#
# Reading the installed source also shows what a GRPO or RLOO run on our task will need.
#
# **A reference model comes from a path.** With `beta > 0` and no PEFT adapter, TRL loads the reference model
# again from the policy's `config._name_or_path`. A policy built in memory has no such path, and building the
# trainer fails with an `OSError`. Give the trainer the policy's *directory* — as `make_trainer` above
# does — or save it first.

# %%
excerpt(trl.GRPOTrainer.__init__, "# Reference model", "self.ref_model = create_model_from_path(")

# %%
in_memory = GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2))
print(f"config._name_or_path of a model built in memory: {in_memory.config._name_or_path!r}")
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl.GRPOTrainer(model=in_memory, reward_funcs=[zero_reward], processing_class=tokenizer,
                        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
                        args=trl.GRPOConfig(output_dir=str(WORK / "fail"), report_to="none", use_cpu=True,
                                            bf16=False, beta=0.1, num_generations=K, per_device_train_batch_size=K))
    print("built (TRL now handles in-memory policies with beta > 0)")
except OSError as error:
    print("in-memory policy with beta > 0 ->", type(error).__name__)

# %% [markdown]
# **Position ids.** TRL scores `[prompt | completion]` with only an attention mask, no `position_ids`:

# %%
excerpt(trl.GRPOTrainer._get_per_token_logps_and_entropies, 'model_inputs = {"input_ids": input_ids_batch')
excerpt(trl.GRPOTrainer._get_per_token_logps_and_entropies, "outputs = model(**model_inputs, labels=labels")

# %% [markdown]
# GPT-2 learns an embedding per *absolute* position and, given no position ids, numbers the columns 0, 1, 2, …
# padding included. A left-padded prompt is then scored as if it started later, while `generate` sampled it with
# positions counted from the first real token (`transformers` builds them from the attention mask). With rotary
# position embeddings, as in most recent models, attention depends only on *relative* positions and a constant
# shift changes nothing; with GPT-2 it changes the log-probs. Our code builds position ids from the mask (`cumsum(mask) - 1`; Huang et
# al., 2023, *The N Implementation Details of RLHF with PPO*, section "General implementation details", on padding
# and position indices). `tests/test_trl_parity.py` measures the gap on a random GPT-2: TRL's log-probs equal ours on
# rows without padding and differ on padded rows. Our prompts are 2–8 tokens long, so a batch of them is almost
# always padded: a TRL run on our task must keep this in mind.
#
# ## 5. TRL's history, from its pull requests
#
# Every entry links the pull request (PR) or issue it comes from; "not verified" marks what we could not check
# against a primary source.
#
# | when | what happened | source |
# |---|---|---|
# | 2020-03-28 | `PPOTrainer` is in the very first commit of the library, then called `lm_ppo` | [PR #7020](https://github.com/huggingface/trl/pull/7020) description |
# | up to 0.11 | the classic API: `AutoModelForCausalLMWithValueHead` (LM + value head on one trunk), `respond_to_batch` / `PPOTrainer.generate`, and `ppo_trainer.step(queries, responses, rewards)` with `compute_rewards`, `compute_advantages` and `loss` inside; helpers in `trl.core` (`LengthSampler`, `masked_whiten`, `logprobs_from_logits`, …) | TRL's `trl/core.py` and `trl/trainer/ppo_trainer.py` of that era; the `step` example left the README in [PR #2085](https://github.com/huggingface/trl/pull/2085) (2024-09) |
# | 2024 (PR opened in April) | `PPOv2Trainer` (`trl/trainer/ppov2_trainer.py`, separate value model, the implementation of Huang et al.'s TL;DR reproduction) and an RLOO trainer, by Costa Huang | [PR #1540](https://github.com/huggingface/trl/pull/1540); "the new experimental PPO trainer we now recommend" — [issue #1763](https://github.com/huggingface/trl/issues/1763) (2024-06). Exact release: not verified |
# | 0.11 (2024-09) | the old `PPOTrainer` / `PPOConfig` deprecated in favour of `PPOv2Trainer` | [PR #2016](https://github.com/huggingface/trl/pull/2016) |
# | 0.12 | `PPOv2Trainer` renamed `PPOTrainer`; the old trainer removed | [PR #2174](https://github.com/huggingface/trl/pull/2174), v0.12.0 release notes |
# | 2025-01 | custom reward *functions* for the old RLOO trainer | [PR #2612](https://github.com/huggingface/trl/pull/2612) |
# | 2025-07 | `RLOOTrainer` rewritten on the `GRPOTrainer` design: reward functions, `num_generations`, `beta` | [PR #3801](https://github.com/huggingface/trl/pull/3801) |
# | 2025-11 | `PPOTrainer` moved to `trl.experimental.ppo`, old import kept as a deprecation stub | [PR #4482](https://github.com/huggingface/trl/pull/4482) |
# | 2025-12 | the value-head classes moved to `trl.experimental.ppo`; RLOO stays in the main package | [PR #4654](https://github.com/huggingface/trl/pull/4654), [PR #4644](https://github.com/huggingface/trl/pull/4644) |
# | 2026-02 | the deprecation stubs removed: `from trl import PPOTrainer` fails | [PR #5051](https://github.com/huggingface/trl/pull/5051) |
# | 2026-09 | PPO removed entirely: `PPOTrainer`, `PPOConfig` and `modeling_value_head.py` (`AutoModelForCausalLMWithValueHead`, …) | [PR #7020](https://github.com/huggingface/trl/pull/7020) |
#
# PR #7020's own reasons: no feature work on PPO for over a year, the only trainer still taking tokenized input
# instead of text, almost no recorded usage. Its description says the top-level import stopped working "in v1.10";
# the deprecation stubs of PR #4482 had announced removal for 0.29 — we did not check which release first shipped
# without them. The `gpt2-sentiment` notebook that this course's recipe comes from used the classic API of TRL ≤ 0.11.
#
# ## 6. Map: TRL's pieces → `rlhf_helpers`
#
# | TRL (version) | what it did | ours |
# |---|---|---|
# | `AutoModelForCausalLMWithValueHead` (≤ 0.11; experimental, removed 2026) | LM + linear value head on the last hidden state | `ppo.value_head.PolicyWithValueHead` (head initialised to zero) |
# | `PPOTrainer.step` (≤ 0.11) | one PPO step: rewards, advantages, mini-batch epochs | `ppo.PPOTrainer.step` = `collect_rollout` + `ppo_update` |
# | `PPOConfig` (≤ 0.11) | lr, batch sizes, epochs, KL, γ, λ, clip ranges | `config.PPOConfig` |
# | `respond_to_batch`, `PPOTrainer.generate` | sampling responses | `policy.generation.generate` (left padding, KV cache, response-only output) |
# | `trl.core.LengthSampler(a, b)` | random response/prompt lengths, `b` excluded | `data.LengthSampler(a, b)`, `b` **included** |
# | `trl.core.logprobs_from_logits` | log-probs of the sampled tokens | `policy.logprobs.logprobs_from_logits`, `policy.logprobs.response_logprobs` (temperature, position ids) |
# | `PPOTrainer._kl_penalty` (`"kl"`, `"abs"`, `"mse"`, `"full"`) | per-token KL estimate | `ppo.kl.kl_penalty` (`"k1"`, `"k3"`) |
# | `AdaptiveKLController`, `FixedKLController` | the KL coefficient | `ppo.kl.AdaptiveKLController`, `ppo.kl.FixedKLController` |
# | `PPOTrainer.compute_rewards` | −β·KL per token, score at the last token | `ppo.kl.per_token_rewards` |
# | `PPOTrainer.compute_advantages` | GAE | `ppo.advantages.compute_gae` |
# | `trl.core.masked_mean / masked_var / masked_whiten` | statistics over real tokens | `ppo.advantages.masked_mean / masked_var / masked_whiten` |
# | `PPOTrainer.loss` | clipped policy loss + clipped value loss | `ppo.losses.clipped_policy_loss`, `ppo.losses.clipped_value_loss` |
# | `trl.core.entropy_from_logits` | entropy diagnostic | `ppo.losses.entropy_from_logits` |
# | `RewardTrainer.compute_loss` (1.16) | Bradley–Terry (+ margin, + centring) | `reward.model.bradley_terry_loss`; training in `reward.training` / `reward.trl_twin` |
# | `GRPOTrainer._compute_loss` (1.16) | clipped ratio + β·k3·ρ, `"grpo"` / `"dapo"` normalisation | `ppo.losses.clipped_policy_loss` + `ppo.kl.kl_penalty(..., "k3")`; all of it: your `grpo_loss` (exercise 4.2) |
# | `RLOOTrainer._generate_and_score_completions` (1.16) | score − β·Σk1, leave-one-out baseline | `ppo.kl.per_token_rewards(..., "k1")` summed, `ppo.advantages.leave_one_out_advantages` |
#
# Running these trainers on our task — our SFT policy, prompts and reward model, with the two details of section 4
# fixed — is notebook 08's: it trains GRPO and RLOO live, compares them with our PPO at equal wall time, and puts
# them on one reward–KL frontier with PPO, DPO and best-of-n.

# %% [markdown]
# ## Key takeaways
#
# * Read the library you run, not the one in old tutorials: `inspect.getsource` on the installed trainers, cut by
#   marker strings that fail loudly when TRL changes.
# * TRL's `RewardTrainer` is Bradley–Terry (plus optional centring); GRPO's loss is PPO's clipped loss with
#   group-normalised advantages and a k3 KL term in the loss; RLOO uses the other completions' mean as the baseline
#   and puts k1 in the reward, with one ratio per completion.
# * The k completions of a prompt must be adjacent wherever rewards are grouped: the same numbers grouped the other
#   way give different advantages, silently.
# * Before running TRL on GPT-2: with `beta > 0` it reloads the reference from a path, and it scores without position
#   ids, which changes the log-probs of left-padded rows.
# * The KL that each trainer logs is not one measurement (GRPO: k3 in the loss; RLOO: k1 in the reward): compare
#   algorithms on held-out samples with one estimator, as notebook 08 does.
#
# ## Self-check
#
# 1. TRL 1.16's `GRPOConfig` has `beta = 0.0` by default. What does a GRPO run on our task then optimise, and what
#    keeps it near the SFT policy?
#
#    <details><summary>Answer</summary>The reward alone: there is no KL term and no reference model is even loaded.
#    Only the clipping of each round's updates restrains it, which does not hold the policy near the SFT model over
#    many rounds — nothing stops reward hacking. Set `beta > 0` for RLHF.</details>
#
# 2. Why can k1 be negative on single tokens while k3 cannot, and which of the two does each TRL trainer use?
#
#    <details><summary>Answer</summary>k1 = log π_θ − log π_ref is negative whenever a sampled token is likelier under
#    the reference; it is unbiased only on average. k3 = r − log r − 1 is never negative because log r ≤ r − 1.
#    GRPO adds k3 to its per-token loss; RLOO subtracts β times the summed k1 from each completion's reward.</details>
#
# 3. Four completions of a prompt score 1, 1, 1 and 5. What are their RLOO advantages, and what are GRPO's?
#
#    <details><summary>Answer</summary>RLOO: 1 − 7/3 = −4/3 for each of the first three and 5 − 1 = 4 for the last.
#    GRPO: the mean is 2 and the unbiased std is 2, so −0.5, −0.5, −0.5 and 1.5 (dividing by 2 + 10⁻⁴). Same sign
#    and order; only the scale differs.</details>
#
# 4. A GRPO run's prompts are left-padded. Why does that matter for GPT-2 but not for a model with rotary position
#    embeddings?
#
#    <details><summary>Answer</summary>TRL passes no position ids, so the positions are counted from the first column,
#    padding included. GPT-2 learns an embedding per absolute position, so the shift changes its log-probs; rotary
#    attention depends only on relative positions, which a constant shift leaves unchanged.</details>
#
# **Next: notebook 05** builds PPO itself from its pieces — the per-token rewards, GAE, the clipped losses, the KL
# controller — and derives the clipped loss that GRPO and RLOO borrowed.
