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
# # 08 — Beyond PPO: DPO, GRPO, RLOO and best-of-n on one reward–KL frontier
#
# PPO needs four models in memory (policy, value head, reference, reward model) and a sampling loop. This notebook
# meets the methods that drop some of that machinery, and puts all of them on one picture. **DPO** (Rafailov et
# al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model") drops the reward model
# and the sampling: it trains the policy directly on preference pairs, with a loss derived from the same
# KL-regularised objective PPO maximises. **GRPO** and **RLOO** (TRL's trainers, read in notebook 04) keep the
# sampling but drop the value head. **Best-of-n** (notebook 07) trains nothing.
#
# The picture is the DPO paper's Figure 2 (left), drawn for this very task: every method's held-out *gold* reward
# against its KL from the SFT policy, at checkpoints along each run. The long runs (18 runs; 55 minutes on 2
# cores in the recorded run, which shared the machine with other work) were made by `scripts/frontier_sweep.py`, whose run card ships with the course; this notebook plots it and
# trains DPO live at the sweep's scale, and GRPO and RLOO for the first 20 rounds of the sweep's runs.
#
# **Learning objectives.** After this notebook you can
# 1. derive DPO's loss from the optimum of the KL-regularised objective (notebook 00) and the Bradley–Terry model
#    (notebook 03), and say what DPO's *implicit reward* is;
# 2. write that optimum, the implicit reward, the DPO loss and the log-probability of a completion yourself
#    (exercises 8.1–8.4), and show on a small problem why DPO cannot do without its reference model;
# 3. build preference pairs from the SFT policy, train DPO on them, and check our loss against TRL's `DPOTrainer`;
# 4. run TRL's GRPO and RLOO on our task and compare them with our PPO at equal wall time;
# 5. read a reward–KL frontier — PPO, DPO, GRPO, RLOO, best-of-n and Preferred-FT — and compare it with the paper's.
#
# **Prerequisites:** notebook 00 (the optimum $\pi^* \propto \pi_\text{ref}\, e^{r/\beta}$), 03 (Bradley–Terry),
# 04 (GRPO and RLOO in TRL's source), 06 (the PPO recipe), 07 (evaluation along a run, best-of-n, the gold judge).
# **Time:** about an hour with the exercises; running every cell takes about 4 minutes on 2 CPU cores (bf16),
# most of it the live DPO, GRPO and RLOO runs.

# %%
import copy
import dataclasses
import inspect
import tempfile
import warnings
from pathlib import Path

import datasets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers

from rlhf_helpers import exercises
from rlhf_helpers.beyond_ppo import dpo
from rlhf_helpers.beyond_ppo.dpo_training import DPOTrainConfig, pair_statistics, sample_preference_pairs, train_dpo
from rlhf_helpers.core.assets import shipped_results_dir
from rlhf_helpers.core.run_card import read_run_card
from rlhf_helpers.core.tensors import right_pad
from rlhf_helpers.course import budget
from rlhf_helpers.evaluation.sweep import GOLD, Course

transformers.logging.set_verbosity_error()  # no load reports or advisory warnings in the cell outputs
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()
# transformers 5 deprecates a name that TRL 1.16 still calls (a FutureWarning on every DPO batch); not ours to fix
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
torch.manual_seed(0)
pd.set_option("display.max_colwidth", 70)
pd.set_option("display.width", 160)
WORK = Path(tempfile.mkdtemp(prefix="nb08_"))  # the live runs' checkpoints; nothing here is kept
course = Course()  # the SFT policy, reward model, judges, prompts and the held-out evaluator (about 30 s)
card = read_run_card(shipped_results_dir("tiny"), "frontier")
parts = {name: part["result"] for name, part in card["parts"].items()}
print(f"frontier run card of {card['created']}: {len(parts)} runs; {card['eval_prompts']} held-out prompts; "
      f"machine: {card['machine']['threads']} threads, mixed precision {card['machine']['mixed_precision']}")
print(f"sweep wall time: {sum(p['wall_seconds'] for p in card['parts'].values()) / 60:.0f} min in all")

# %% [markdown]
# ## 1. From the optimum of RLHF to a loss on preferences
#
# RLHF maximises the reward with a leash to the reference (the SFT policy):
#
# $$\max_\pi\; \mathbb{E}_{x,\; y \sim \pi}\big[r(x, y)\big] - \beta\, \mathrm{KL}\big(\pi(\cdot|x) \,\|\, \pi_\text{ref}(\cdot|x)\big).$$
#
# Notebook 00 solved it in closed form (the paper's equation 4): for each prompt $x$,
#
# $$\pi^*(y|x) = \frac{1}{Z(x)}\, \pi_\text{ref}(y|x)\, e^{r(x,y)/\beta}, \qquad Z(x) = \sum_y \pi_\text{ref}(y|x)\, e^{r(x,y)/\beta}.$$
#
# PPO cannot use this directly — $Z(x)$ sums over every possible text — so it climbs towards it by sampling. DPO's
# step is to read the equation the other way round. Take logs and solve for the reward (equation 5):
#
# $$r(x, y) = \beta \log \frac{\pi^*(y|x)}{\pi_\text{ref}(y|x)} + \beta \log Z(x).$$
#
# Any policy $\pi$ is then the optimum for *some* reward, its **implicit reward**
# $\hat r(x, y) = \beta \log \pi(y|x) / \pi_\text{ref}(y|x)$ (up to the term $\beta \log Z(x)$, which depends on the
# prompt only). Notebook 03's Bradley–Terry model of a preference $y_w \succ y_l$ (chosen over rejected) needs only
# a *difference* of rewards for the same prompt, so $Z(x)$ cancels (equation 6):
#
# $$p(y_w \succ y_l \mid x) = \sigma\big(r(x, y_w) - r(x, y_l)\big) = \sigma\Big(\beta \log \tfrac{\pi(y_w|x)}{\pi_\text{ref}(y_w|x)} - \beta \log \tfrac{\pi(y_l|x)}{\pi_\text{ref}(y_l|x)}\Big).$$
#
# Fitting this to preference pairs by maximum likelihood *is* training the policy — no reward model, no sampling
# (equation 7):
#
# $$\mathcal{L}_\text{DPO} = -\,\mathbb{E}_{(x, y_w, y_l)}\, \log \sigma\Big(\beta \Big[\log \tfrac{\pi(y_w|x)}{\pi_\text{ref}(y_w|x)} - \log \tfrac{\pi(y_l|x)}{\pi_\text{ref}(y_l|x)}\Big]\Big).$$
#
# Its gradient (the paper's section 4) raises $\log \pi(y_w|x)$ and lowers $\log \pi(y_l|x)$, each pair weighted by
# $\sigma(\hat r(x, y_l) - \hat r(x, y_w))$: how wrongly the implicit reward currently orders it. Pairs it already
# ranks confidently stop counting.
#
# ### Exercise 8.1 — the optimum, in log space and for many prompts: `kl_regularised_optimum`
# **Difficulty** ●●○○○ · **Importance** ●●●●● · about 10 minutes
#
# Notebook 00's exercise 0.1 wrote $\pi^*$ for one prompt, in probabilities. Here: `reference_logprobs` and `rewards`
# are `[P, K]` tensors — $\log \pi_\text{ref}$ and $r$ of K candidate completions of each of P prompts, each row of
# `reference_logprobs` a distribution over its K completions. Return $\log \pi^*$, `[P, K]`, each row normalised.
#
# *Hint:* $\log \pi^* = \log \pi_\text{ref} + r/\beta - \log Z$, and $\log Z$ is a `torch.logsumexp` over the
# completions of one prompt (which dimension?). `torch.log_softmax` does both steps at once.

# %%
def kl_regularised_optimum(reference_logprobs, rewards, beta):
    """log pi*(y|x) = log pi_ref(y|x) + r(x, y) / beta - log Z(x).  [P, K], [P, K], float -> [P, K]."""
    ### BEGIN SOLUTION
    return torch.log_softmax(reference_logprobs + rewards / beta, dim=-1)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_kl_regularised_optimum(kl_regularised_optimum)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_kl_regularised_optimum` names each of these when your function makes it:
#
# - log Z not subtracted (the probabilities do not sum to one)
# - the reward multiplied by β instead of divided
# - the reference left out (a uniform prior)
# - normalised over the prompts (dim 0)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 8.2 — the implicit reward: `implicit_reward`
# **Difficulty** ●○○○○ · **Importance** ●●●●○ · about 5 minutes
#
# Inputs: `policy_logps` and `reference_logps`, `[B]` — the log-probabilities of B whole completions (the sum over
# their tokens) under the policy and the reference; `beta`. Return DPO's implicit reward
# $\beta (\log \pi - \log \pi_\text{ref})$, `[B]`. It is what we *log* to watch DPO (is the chosen completion's
# implicit reward above the rejected one's?), never a term to train on, so return it without a gradient.

# %%
def implicit_reward(policy_logps, reference_logps, beta):
    """beta * (log pi(y|x) - log pi_ref(y|x)), detached.  [B], [B], float -> [B]."""
    ### BEGIN SOLUTION
    return (beta * (policy_logps - reference_logps)).detach()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_implicit_reward(implicit_reward)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_implicit_reward` names each of these when your function makes it:
#
# - β left out
# - divided by β
# - the sign reversed (log π_ref − log π)
# - the reference left out
# - the result still carries a gradient
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 8.3 — the DPO loss: `dpo_loss`
# **Difficulty** ●●○○○ · **Importance** ●●●●● · about 10 minutes
#
# Inputs: four `[B]` tensors of sequence log-probabilities — policy chosen, policy rejected, reference chosen,
# reference rejected (this order is the paper's code's and TRL's) — and `beta`. Return the mean of equation 7 over
# the B pairs (a scalar tensor; returning a tuple whose first item is the loss is accepted too).
#
# *Hint:* `-F.logsigmoid(x)` rather than `-torch.log(torch.sigmoid(x))`: for a margin of −950 the sigmoid is 0 in
# float64 and its log is −∞; `logsigmoid` computes the same number without forming the sigmoid.

# %%
def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """mean over pairs of -log sigmoid(beta * [(pi_c - ref_c) - (pi_r - ref_r)]).  4 x [B], float -> scalar."""
    ### BEGIN SOLUTION
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return -F.logsigmoid(beta * (chosen - rejected)).mean()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_dpo_loss(dpo_loss)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_dpo_loss` names each of these when your function makes it:
#
# - β left out
# - the margin's sign reversed: both log-ratios reversed (log π_ref − log π), or chosen and rejected swapped
# - the reference left out (policy log-probs compared)
# - the sum over the pairs instead of the mean
# - the log-likelihood returned (not negated)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# The package's version, which the training below uses, is the same few lines; it also returns the implicit
# rewards of both sides for the logs:

# %%
print(inspect.getsource(dpo.dpo_loss))

# %% [markdown]
# ## 2. Why DPO needs the reference
#
# The reference looks like a detail of the derivation. It is not: it is the only thing in DPO's loss that knows what
# language looks like. To see it, shrink the problem until DPO can be solved exactly. One prompt, eight candidate
# completions; $\pi_\text{ref}$ is the SFT policy's probability of each, renormalised over the eight; $r$ is our
# reward model's score. Two of the candidates are what a reward model over-scores — repetitions of a positive word —
# and the SFT policy finds them very unlikely.
#
# ### Exercise 8.4 — the log-probability of a completion: `sequence_logprobs`
# **Difficulty** ●●○○○ · **Importance** ●●●●● · about 10 minutes
#
# DPO's four inputs, and the toy's $\pi_\text{ref}$, are log-probabilities of whole completions *given* their prompt,
# $\log \pi(y|x) = \sum_t \log \pi(y_t \mid x, y_{<t})$: a sum over the completion's tokens only. Inputs: a causal
# LM `model`; `input_ids` `[N, L]`, each row a prompt then its completion, right-padded; `attention_mask` `[N, L]`,
# 1 on the real tokens (prompt and completion); `completion_mask` `[N, L]`, 1 on the completion's tokens only — the
# layout of TRL's DPO batches. Output: `[N]`, each row's sum, with gradients (DPO trains the policy through it; the
# caller wraps the reference's pass in `torch.no_grad()`).
#
# *Hint:* notebook 02's shift: the logits at position $t - 1$ predict token $t$, so compare `logits[:, :-1]` with
# `input_ids[:, 1:]` — and shift the mask the same way. The rows are right-padded, so the default position ids are
# right here (unlike the left-padded queries of notebook 05's exercise 5.3).

# %%
def sequence_logprobs(model, input_ids, attention_mask, completion_mask):
    """Sum of log p(x_t | x_<t) over the completion tokens of each right-padded row.  3 x [N, L] -> [N]."""
    ### BEGIN SOLUTION
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # position t-1 ...
    targets = input_ids[:, 1:]  # ... predicts token t
    token_logps = torch.gather(torch.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:].to(token_logps.dtype)).sum(dim=1)  # the mask, shifted the same way
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_sequence_logprobs(sequence_logprobs)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_sequence_logprobs` names each of these when your function makes it:
#
# - the prompt tokens counted (the attention mask used instead of the completion mask)
# - the padding counted (no mask)
# - the mask not shifted like the targets (completion_mask[:, :-1])
# - no shift (each token read from the logits at its own column)
# - the mean over the completion's tokens, or over the row, instead of the sum
# - no gradient (torch.no_grad(), .detach() or .item() inside)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Your function scores the eight candidates under the SFT policy:

# %%
prompt = "This movie was"
candidates = [" a great film.", " a lot of fun to watch.", " not very good.", " okay, I guess.",
              " boring and too long.", " the worst film I have ever seen.",
              " great great great great great great", " wonderful wonderful wonderful wonderful"]
prompt_ids = course.tokenizer(prompt)["input_ids"]
rows = [prompt_ids + course.tokenizer(c)["input_ids"] for c in candidates]
ids, attention = right_pad(rows, course.tokenizer.pad_token_id)
completion = torch.zeros_like(attention)
for i, row in enumerate(rows):
    completion[i, len(prompt_ids) : len(row)] = 1
with torch.no_grad():
    sft_logps = sequence_logprobs(course.sft, ids, attention, completion).double()  # your exercise 8.4
reference_logprobs = torch.log_softmax(sft_logps, 0)  # the SFT policy restricted to the eight candidates
rewards = course.scorer.score([prompt + c for c in candidates]).double()
toy = pd.DataFrame({"completion": candidates, "log pi_SFT (whole sequence)": sft_logps.numpy(),
                    "pi_ref (over the 8)": reference_logprobs.exp().numpy(), "reward": rewards.numpy()})
toy.round(3)

# %% [markdown]
# Now DPO, exactly. The policy is eight logits $\theta$ ($\pi_\theta = \mathrm{softmax}(\theta)$, started at
# $\pi_\text{ref}$). The preference data holds every one of the 28 pairs $(a, b)$ of the eight, labelled the way
# Bradley–Terry says a person with reward $r$ would: $a$ is chosen with probability $\sigma(r_a - r_b)$. DPO's loss
# on a pair with such a soft label is equation 7 for "a wins" weighted by $\sigma(r_a - r_b)$ plus equation 7 for
# "b wins" weighted by the rest. We minimise its mean over the pairs with Adam — once as the paper writes it, once with
# the reference's log-probabilities replaced by 0 (a "reference-free" DPO) — and compare both with your exercise
# 8.1's optimum, with the real reference and with a uniform one.
#
# **Predict first.** The reference-free DPO sees the same 28 soft-labelled pairs. Where will it put the probability?

# %%
guess = exercises.predict(
    "Reference-free DPO (log pi_ref replaced by 0) on the eight candidates, beta 0.5: where does most of the "
    "probability end up?",
    choices={"a": "on ' a great film.', as under the SFT policy: the pairs alone do not move it far",
             "b": "on ' a lot of fun to watch.', the best-rewarded fluent completion",
             "c": "on the two repetitions ('great great …', 'wonderful …'), which the SFT policy almost never writes",
             "d": "spread about evenly over the eight: without a reference nothing says which is likelier"})
guess.answer = None  # ← your answer, "a" … "d" (or press a button above)

# %%
def toy_dpo(reference_logprobs, rewards, beta, with_reference=True, steps=3000, lr=0.05):
    """Exact DPO on one prompt's K candidates: every pair once, Bradley-Terry soft labels -> log pi_theta [K]."""
    theta = reference_logprobs.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    a, b = torch.triu_indices(len(rewards), len(rewards), offset=1)  # the 28 pairs
    p_a_wins = torch.sigmoid(rewards[a] - rewards[b])  # the Bradley-Terry label
    reference = reference_logprobs if with_reference else torch.zeros_like(reference_logprobs)
    for _ in range(steps):
        logp = torch.log_softmax(theta, 0)
        margin = beta * ((logp[a] - reference[a]) - (logp[b] - reference[b]))  # equation 7's logit for "a wins"
        loss = -(p_a_wins * F.logsigmoid(margin) + (1 - p_a_wins) * F.logsigmoid(-margin)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.log_softmax(theta.detach(), 0)


beta = 0.5
with_ref = toy_dpo(reference_logprobs, rewards, beta)
without_ref = toy_dpo(reference_logprobs, rewards, beta, with_reference=False)
optimum = kl_regularised_optimum(reference_logprobs[None], rewards[None], beta)[0]  # your exercise 8.1
uniform_optimum = kl_regularised_optimum(torch.zeros_like(rewards)[None], rewards[None], beta)[0]


def kl_to_reference(logp):
    return float((logp.exp() * (logp - reference_logprobs)).sum())


policies = {"pi_ref": reference_logprobs, "pi* (8.1)": optimum, "DPO": with_ref, "DPO, no reference": without_ref}
table = pd.DataFrame({"completion": candidates, "reward": rewards.numpy(),
                      **{name: logp.exp().numpy() for name, logp in policies.items()}})
print(table.round(3).to_string(index=False))
print(pd.DataFrame({"expected reward": [float((logp.exp() * rewards).sum()) for logp in policies.values()],
                    "KL to pi_ref": [kl_to_reference(logp) for logp in policies.values()]},
                   index=list(policies)).round(3).T.to_string())
print(f"max |DPO - pi*| = {float((with_ref.exp() - optimum.exp()).abs().max()):.1e};  max |DPO without reference - "
      f"softmax(r / beta)| = {float((without_ref.exp() - uniform_optimum.exp()).abs().max()):.1e}")

# %%
assert torch.allclose(with_ref.exp(), optimum.exp(), atol=1e-3), "DPO should reach the KL-regularised optimum"
assert torch.allclose(without_ref.exp(), uniform_optimum.exp(), atol=1e-3), "and without the reference, softmax(r/beta)"
assert kl_to_reference(without_ref) > 5 * kl_to_reference(with_ref)

# %%
p_free = without_ref.exp()  # the reference-free policy over the eight candidates
mass = {"a": float(p_free[0]), "b": float(p_free[1]), "c": float(p_free[6] + p_free[7])}
truth = "d" if float(p_free.max() - p_free.min()) < 0.1 else max(mass, key=mass.get)
guess.reveal(truth, why=f"' a great film.' ends with {mass['a']:.0%}, ' a lot of fun to watch.' with {mass['b']:.0%}, "
                        f"the repetitions with {mass['c']:.0%}. Without log pi_ref the loss asks only that the pairs' "
                        "log-probability differences follow the rewards: it lands on softmax(r / beta), the optimum "
                        "under a uniform reference, however unlikely the SFT policy finds the winners.")

# %% [markdown]
# DPO with its reference lands on $\pi^*$, the RLHF optimum: it keeps the fluent positive completions the SFT policy
# would write and moves probability towards the better-rewarded of them. Without the reference, DPO lands on
# $\mathrm{softmax}(r/\beta)$ — the optimum with a *uniform* reference, which knows nothing about language — and
# most of the probability goes to the repetitions, the completions the reward model over-scores and the SFT policy
# would almost never write; its KL to the SFT policy is many times larger. The reference is DPO's KL leash:
# without it the loss still ranks the pairs correctly, and the policy it asks for is reward hacking.
#
# Two conditions made the toy reach $\pi^*$ exactly, and real data meets neither: every completion is in some pair
# (a completion in no pair gets no gradient of its own, so DPO leaves its probability to chance, where PPO would
# sample it and score it), and the labels are soft. With hard labels — the chosen one always wins — the loss keeps
# falling as the margins grow without bound; Azar et al. 2023 ("A General Theoretical Paradigm to Understand
# Learning from Human Preferences", section 4) analyse this and propose IPO as the fix.
#
# ## 3. Preference pairs from the SFT policy
#
# The paper's IMDb experiment (section 6.1) sampled completions of IMDb prefixes from the SFT policy and labelled
# pairs with its ground-truth sentiment classifier. We sample the same way — 4 completions of each train prompt,
# PPO's sampling (4–16 tokens, the full distribution) — and label **every** pair of them with **our reward model**,
# so that DPO learns from the same preference signal PPO gets (`sample_preference_pairs`; ties are dropped). The
# gold judge labels the same completions as a second set, the paper's setting. The sweep used 1,024 train prompts;
# live, a smaller set:

# %%
n_pair_prompts = budget(learner=1024, ci=64)
order = np.random.default_rng(0).permutation(len(course.train_prompts))[:n_pair_prompts]  # as the sweep draws them
pair_prompts = [list(map(int, course.train_prompts[int(i)])) for i in order]
pairs = sample_preference_pairs(course.sft, course.tokenizer, pair_prompts, course.scorer.score, k=4)
print(f"{len(pair_prompts)} prompts x 4 completions -> {len(pairs)} pairs (of {len(pair_prompts) * 6} possible)")
print({k: round(v, 3) for k, v in pair_statistics(pairs).items()})
print("the sweep's pairs:", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in card["pairs"].items()})

# %% [markdown]
# How often does the gold judge agree with the reward model's label? Score the chosen and the rejected completion of
# every pair with the gold judge's p(positive):

# %%
judge = course.judges["bag_of_words"]
gold_chosen = np.asarray(judge.probability([p + c for p, c, _ in pairs.texts]))
gold_rejected = np.asarray(judge.probability([p + r for p, _, r in pairs.texts]))
agree = float(np.mean(gold_chosen > gold_rejected))
print(f"the gold judge prefers the reward model's chosen completion in {agree:.1%} of the {len(pairs)} pairs")
examples = pd.DataFrame([{"prompt": p, "chosen": c, "rejected": r, "RM gap": float(g), "gold chosen": gc,
                          "gold rejected": gr}
                         for (p, c, r), g, gc, gr in zip(pairs.texts[:6], pairs.score_gap[:6], gold_chosen, gold_rejected)])
examples.round(3)

# %% [markdown]
# ## 4. DPO, live
#
# `train_dpo` runs the package's training loop (`core.training.train_loop`: AdamW, warm-up then cosine decay,
# checkpoints, resume) with the DPO loss. The reference is frozen, so its log-probabilities of every pair are computed
# once before training; a step is then one forward and backward of the policy on the chosen and rejected sequences of
# 32 pairs. Notebook 07's `HeldOutEvaluator` measures the policy on the 256 held-out prompts along the way — the same
# prompts, sampling seed, KL estimator and judges as every run in the frontier below. β = 0.1, the paper's middle
# setting.

# %%
live_config = DPOTrainConfig(beta=0.1, max_steps=budget(learner=200, ci=20), eval_every=budget(learner=50, ci=20),
                             checkpoint_every=budget(learner=50, ci=20))
live = train_dpo(copy.deepcopy(course.sft).requires_grad_(True), course.sft, pairs, live_config, WORK / "dpo",
                 course.evaluator, progress=False)
held_out = pd.DataFrame(live["history"])[["step", "kl", "reward", GOLD, "positive_rate/vader", "ref_perplexity"]]
print(f"{live['steps']} DPO steps in {live['train_seconds']:.0f} s (evaluations excluded)")
held_out.round(3)

# %%
train_log = pd.DataFrame(live["train_log"])
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
axes[0].plot(train_log["step"], train_log["loss"].rolling(10, min_periods=1).mean())
axes[0].axhline(np.log(2), color="grey", ls=":", label="log 2: the policy = the reference")
axes[0].set(xlabel="step", title="DPO loss (10-step mean)")
axes[0].legend()
axes[1].plot(train_log["step"], train_log["accuracy"].rolling(10, min_periods=1).mean(), label="live")
axes[1].set(xlabel="step", title="implicit reward ranks the pair right (train batches)")
sweep_rows = parts["dpo_b0.1"]["rows"]
axes[2].plot([r["kl"] for r in sweep_rows], [r[GOLD] for r in sweep_rows], "o-", label="sweep (6,144 pairs)")
axes[2].plot(held_out["kl"], held_out[GOLD], "s-", label=f"live ({len(pairs)} pairs)")
axes[2].set(xlabel="KL to SFT (nats, held out)", ylabel="gold p(positive)", title="held out, along the run (β = 0.1)")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The loss starts at $\log 2$ — the policy *is* the reference, every implicit reward is 0 — and the share of pairs
# the implicit reward ranks correctly rises from a coin flip. On held-out prompts the policy moves away from the SFT
# policy and the gold judge rises, quickly at first and then hardly at all: most of the gain is made in the first 50
# to 100 steps, while the KL keeps wandering. The live run used the sweep's pairs and settings, so its curve lies on
# the sweep's. The perplexity of the responses under the SFT policy is where DPO and PPO part: the cell below sets
# the last live row beside the sweep's and beside notebook 06's PPO policy (from notebook 07's run card: seed 0 of
# the sweep is 06's run), each read from its run, not retyped.

# %%
evaluation_card = read_run_card(shipped_results_dir("tiny"), "evaluation")  # notebook 07's (again in section 6)
ppo_of_06 = evaluation_card["parts"]["seeds"]["result"]["0"]["rows"][-1]
last = {"DPO, this live run": held_out.iloc[-1].to_dict(), "DPO, the sweep (same step)":
        next((r for r in sweep_rows if r["step"] == live["steps"]), sweep_rows[-1]),
        f"PPO, notebook 06 (step {ppo_of_06['step']})": ppo_of_06, "SFT policy": sweep_rows[0]}
print(pd.DataFrame({name: {k: row[k] for k in ["step", "kl", GOLD, "ref_perplexity"]} for name, row in last.items()})
      .T.round(3))

# %% [markdown]
# ### Our loss and TRL's `DPOTrainer`
#
# TRL 1.16's `DPOTrainer` takes text pairs, tokenizes them and computes the loss in `compute_loss`. Build one with
# the policy we just trained and the SFT policy as its reference, take its first collated batch, and compute both
# losses on it:

# %%
from trl import DPOConfig, DPOTrainer

from rlhf_helpers.beyond_ppo.trl_dpo import pairs_as_text
from rlhf_helpers.beyond_ppo.trl_evaluation import plain_copy

text_pairs = pairs_as_text(pairs).select(range(8))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # advisory warnings about options of transformers' Trainer we do not use
    trl_args = DPOConfig(output_dir=str(WORK / "trl_dpo"), beta=live_config.beta, per_device_train_batch_size=8,
                         use_cpu=True, bf16=False, report_to="none", max_length=128)
    # a plain float32 copy: the trained model's forward still carries the training loop's bf16 autocast
    trl_dpo = DPOTrainer(model=plain_copy(live["model"]), ref_model=copy.deepcopy(course.sft),
                         args=trl_args, train_dataset=text_pairs, processing_class=course.tokenizer)
batch = next(iter(trl_dpo.get_train_dataloader()))
trl_dpo.model.eval()
with torch.no_grad():
    trl_loss = trl_dpo.compute_loss(trl_dpo.model, batch).item()
    # your exercise 8.4, on TRL's batch: the chosen rows, then the rejected rows
    policy_logps = sequence_logprobs(trl_dpo.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    reference_logps = sequence_logprobs(course.sft, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
our_loss = dpo_loss(*policy_logps.chunk(2), *reference_logps.chunk(2), live_config.beta).item()  # your exercise 8.3
print(f"TRL DPOTrainer.compute_loss {trl_loss:.6f} | our dpo_loss {our_loss:.6f} | log 2 = {np.log(2):.6f}")
assert abs(trl_loss - our_loss) < 1e-4 * max(1.0, abs(trl_loss))

# %% [markdown]
# The same number: TRL's batch is the chosen rows stacked on the rejected rows, with a `completion_mask` that marks
# the completion tokens — the layout `sequence_logprobs` reads. (`tests/test_dpo.py` checks the same thing at two β
# on a random GPT-2.) The sweep also trained the SFT policy with TRL's trainer itself, on the same 6,144 pairs with
# the same settings (`beyond_ppo.trl_dpo.train_trl_dpo`); it is on the frontier below as "DPO (TRL)".
#
# ## 5. GRPO and RLOO, with TRL
#
# Notebook 04 read TRL's `GRPOTrainer` and `RLOOTrainer`; `rlhf_helpers.beyond_ppo.grpo_rloo` makes them train
# **our** SFT policy on **our** prompts against **our** reward model, with settings mirroring our PPO wherever TRL
# allows (`trl_config`'s docstring lists each one, with TRL's default beside it):
#
# * one round = 64 completions (16 prompts × k = 4), then passes over them in mini-batches of 16, as PPO;
# * clipping ε = 0.2, gradient norm 1, full-distribution sampling, at most 16 new tokens, dropout off, bf16 autocast
#   where the processor has fast bf16, as our PPO; β is the KL weight (GRPO: k3 in the loss; RLOO: k1 in the reward);
# * the reward model wrapped as TRL's reward function (`reward_function`: scores `prompt + completion`);
# * the position-id gap of notebook 04's section 4 closed by two small subclasses, `CourseGRPOTrainer` /
#   `CourseRLOOTrainer`, that override only the log-prob method to pass position ids built from the attention mask.
#
# A short live run of each — the first 20 rounds of the sweep's β = 0.05 runs, evaluated on the held-out prompts
# before and after by a `TrainerCallback` (`beyond_ppo.trl_evaluation.HeldOutCallback`), the same evaluator as
# everything else here:

# %%
from rlhf_helpers.beyond_ppo.grpo_rloo import train_trl, trl_prompt_dataset
from rlhf_helpers.core.precision import resolve_mixed_precision
from rlhf_helpers.evaluation.sweep import fast_recipe

recipe = fast_recipe(course.config.ppo, init_kl_coef=0.05, adaptive_kl=False)  # the sweep's settings, beta 0.05
live_rounds = budget(learner=20, ci=2)
live_recipe = dataclasses.replace(recipe, batch_size=budget(learner=recipe.batch_size, ci=16))
trl_prompts = trl_prompt_dataset(course.tokenizer, course.config, split="train")
trl_live = {}
for algorithm in ["grpo", "rloo"]:
    trl_live[algorithm] = train_trl(algorithm, WORK / algorithm, live_recipe, prompts=trl_prompts,
                                    evaluator=course.evaluator, eval_every=live_rounds, until_step=live_rounds,
                                    bf16=resolve_mixed_precision(recipe.mixed_precision) == "bf16")
    first, last = trl_live[algorithm]["evaluations"][0], trl_live[algorithm]["evaluations"][-1]
    print(f"{algorithm}: {trl_live[algorithm]['steps']} rounds ({trl_live[algorithm]['episodes']} completions) in "
          f"{trl_live[algorithm]['train_seconds']:.0f} s; held out: reward {first['reward']:+.2f} -> {last['reward']:+.2f}, "
          f"gold {first[GOLD]:.3f} -> {last[GOLD]:.3f}, KL {last['kl']:.2f}")
    swept = next((r for r in parts[f"{algorithm}_b0.05"]["rows"] if r["step"] == live_rounds), None)
    if swept is not None:  # the sweep's run of the same settings, at the same round
        print(f"      the sweep's {algorithm} run at round {live_rounds}: gold {swept[GOLD]:.3f}, KL {swept['kl']:.2f}")

# %% [markdown]
# ### Equal wall time: PPO vs GRPO vs RLOO
#
# `scripts/compare_algorithms.py --minutes 5` trains each algorithm from the SFT policy for the same 5 minutes on 2
# CPU cores with notebook 05's recipe, `PPOConfig`'s defaults (4 passes over each round, learning rate 5e-05,
# β = 0.2; model loading excluded), then evaluates every policy on the same 256 held-out prompts. The recorded run:

# %%
compare = read_run_card(shipped_results_dir("tiny"), "compare")
runs, evaluations = compare["metrics"]["runs"], compare["metrics"]["evaluations"]
print(f"recorded {compare['written_at']}, {compare['config']['minutes']} minutes per algorithm, "
      f"torch {compare['versions']['torch']}, trl {compare['versions']['trl']}")
labels = {"ppo": "PPO (ours)", "grpo": "GRPO (TRL)", "rloo": "RLOO (TRL)"}
kl_labels = {"ppo": "PPO: k1 at sampling time", "grpo": "GRPO: k3 of the loss, mean over the round's Adam steps",
             "rloo": "RLOO: k1 at sampling time"}
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for name, run in runs.items():
    minutes = [h["seconds"] / 60 for h in run["history"]]
    axes[0].plot(minutes, pd.Series([h["score"] for h in run["history"]]).rolling(5, min_periods=1).mean(), label=labels[name])
    axes[1].plot(minutes, pd.Series([h["kl"] for h in run["history"]]).rolling(5, min_periods=1).mean(), label=kl_labels[name])
axes[0].set(xlabel="training time (minutes)", ylabel="reward-model score (normalised)", title="reward on the training batches (5-step mean)")
axes[1].set(xlabel="training time (minutes)", ylabel="nats per response", title="KL to the SFT policy, as each trainer logs it")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()
columns = {"reward": "reward model", "positive_rate/vader": "positive: VADER", "positive_rate/bag_of_words": "positive: bag of words",
           "kl": "KL (nats/response)", "ref_perplexity": "perplexity under SFT", "distinct_2": "distinct-2"}
comparison = pd.DataFrame({("SFT (start)" if name == "sft" else labels[name]): {columns[k]: e["metrics"][k] for k in columns}
                           for name, e in evaluations.items()}).T
comparison["rounds in 5 min"] = [None] + [runs[name]["steps"] for name in runs]
comparison.round(3)

# %%
for name in runs:
    assert evaluations[name]["metrics"]["reward"] > evaluations["sft"]["metrics"]["reward"], f"{name}: reward should go up"
print("all three raised the reward model's score on held-out prompts")

# %% [markdown]
# The training curves' KLs are not one measurement — PPO's and RLOO's are k1 of the sampled completions, GRPO's the
# k3 term of its loss — while the table's KL is the same held-out measurement for all three. In equal time the
# three land at different KLs, so the table alone cannot say which trades reward for KL best. That is the frontier's
# question.
#
# ## 6. The reward–KL frontier
#
# Every run below starts from the shipped SFT policy and is evaluated at checkpoints along the way on the same 256
# held-out prompts: x = KL(π ‖ π_SFT) per response (k1, summed over the response's tokens), y = the gold judge's mean
# p(positive) (notebook 07's bag-of-words judge: independent of the reward model) and, in the second panel, VADER's
# share of positive verdicts. The runs:
#
# * **PPO** with notebook 06's recipe (one epoch, learning rate 2e-4, 150 steps): adaptive KL targets 3, 6, 9 and 12
#   (target 6: notebook 07's three seeds) and fixed β 0.05 and 0.5; **PPO on the gold reward** (the judge's log-odds
#   as the reward: the paper's "PPO-GT");
# * **DPO** at β 0.05, 0.1, 0.5 and 1 on the 6,144 reward-model pairs, 200 steps; at β 0.1 and 0.5 on the same
#   completions labelled by the gold judge; at β 0.1 with TRL's `DPOTrainer`;
# * **GRPO** and **RLOO** (TRL) at β 0.05 and 0.5, the PPO recipe's settings, 100 rounds;
# * **Preferred-FT**: supervised fine-tuning on the chosen completions of the reward-model pairs;
# * **best-of-n** from the SFT policy, n = 1 … 128, with its analytic KL $\log n - (n-1)/n$ (notebook 07).

# %%
seeds = evaluation_card["parts"]["seeds"]["result"]  # notebook 07's run card, read above
bon_rows = evaluation_card["parts"]["bon"]["result"]["rows"]


def method_of(name):
    return {"ppo_gold": "PPO on the gold reward", "preferred_ft": "Preferred-FT", "trl_dpo_b0.1": "DPO (TRL)"}.get(
        name, "PPO" if name.startswith("ppo") else "DPO, gold-labelled pairs" if name.startswith("dpo_gold")
        else "DPO" if name.startswith("dpo") else name.split("_")[0].upper())


def setting_of(name):
    if name.startswith("ppo_kl"):
        return f"KL target {name[6:]}"
    if "_b" in name:
        return f"β = {name.rsplit('_b', 1)[1]}"
    return {"ppo_gold": "KL target 6"}.get(name, "")


RUNS = {name: (method_of(name), setting_of(name), result["rows"]) for name, result in parts.items()}
for seed, run in seeds.items():
    RUNS[f"ppo_kl6_seed{seed}"] = ("PPO", f"KL target 6, seed {seed}", run["rows"])
STYLE = {"PPO": ("C0", "o"), "PPO on the gold reward": ("C0", "*"), "DPO": ("C3", "s"), "DPO (TRL)": ("C3", "x"),
         "DPO, gold-labelled pairs": ("C1", "D"), "GRPO": ("C2", "^"), "RLOO": ("C4", "v"), "Preferred-FT": ("C5", "P"),
         "best-of-n": ("k", ".")}

fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), sharex=True)
for ax, metric, title in [(axes[0], GOLD, "gold: bag-of-words p(positive)"),
                          (axes[1], "positive_rate/vader", "VADER: share positive")]:
    seen = set()
    for name, (method, setting, rows) in RUNS.items():
        color, marker = STYLE[method]
        ax.plot([r["kl"] for r in rows], [r[metric] for r in rows], marker=marker, color=color, alpha=0.45, lw=1,
                ms=5, label=None if method in seen else method)
        ax.plot(rows[-1]["kl"], rows[-1][metric], marker=marker, color=color, ms=10, mec="k", ls="")
        seen.add(method)
    ax.plot([r["kl"] for r in bon_rows], [r[metric] for r in bon_rows], marker=".", color="k", label="best-of-n")
    ax.set(title=title, xlabel="KL(π ‖ π_SFT), nats per response (held out)")
axes[0].set_ylabel("held-out score")
axes[0].legend(fontsize=8, loc="lower right")
plt.suptitle("every checkpoint of every run (small markers), the last one of each run (large)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same runs as a table: each run's last checkpoint, and the best gold any of its checkpoints reached.

# %% tags=["nbval-check-output"]
final = pd.DataFrame([{"method": method, "setting": setting, "KL": rows[-1]["kl"], "gold": rows[-1][GOLD],
                       "VADER": rows[-1]["positive_rate/vader"], "reward model": rows[-1]["reward"],
                       "best gold (at KL)": f"{max(r[GOLD] for r in rows):.3f} ({max(rows, key=lambda r: r[GOLD])['kl']:.1f})"}
                      for name, (method, setting, rows) in RUNS.items()])
for n in (16, 128):
    row = next(r for r in bon_rows if r["n"] == n)
    final.loc[len(final)] = {"method": "best-of-n", "setting": f"n = {n}", "KL": row["kl"], "gold": row[GOLD],
                             "VADER": row["positive_rate/vader"], "reward model": row["reward"], "best gold (at KL)": ""}
print(final.sort_values(["method", "KL"]).round(3).to_string(index=False))

# %% [markdown]
# A frontier is the best gold a method reaches *within* a KL budget. Over all checkpoints of all runs of each
# method:

# %%
def best_within(rows, budget_kl):
    inside = [r[GOLD] for r in rows if r["kl"] <= budget_kl]
    return max(inside) if inside else np.nan


methods = {}
for method, _, rows in RUNS.values():
    methods.setdefault(method, []).extend(rows)
methods["best-of-n"] = bon_rows
budgets = [2, 5, 10, 15, 25]
frontier = pd.DataFrame({method: [best_within(rows, b) for b in budgets] for method, rows in methods.items()},
                        index=[f"KL ≤ {b}" for b in budgets]).T
print("best held-out gold p(positive) within a KL budget (SFT policy: "
      f"{RUNS['dpo_b0.1'][2][0][GOLD]:.3f})")
frontier.round(3)

# %%
learned = [m for m in frontier.index if m not in ("PPO on the gold reward", "DPO, gold-labelled pairs")]
print("best within KL <= 5 (learned reward):", frontier.loc[learned, "KL ≤ 5"].idxmax(),
      "| within KL <= 15:", frontier.loc[learned, "KL ≤ 15"].idxmax())

# %% [markdown]
# What the far end of the frontier writes: held-out samples of the last checkpoint of the three weak-leash runs
# (β = 0.05), with the gold judge's p(positive):

# %%
for name in ["ppo_b0.05", "grpo_b0.05", "rloo_b0.05"]:
    last = parts[name]["rows"][-1]
    print(f"--- {name}: KL {last['kl']:.1f}, gold {last[GOLD]:.3f}")
    for sample in last["samples"][:4]:
        print(f"  {sample[GOLD]:.2f}  {sample['query']!r} -> {sample['response']!r}")

# %% [markdown]
# The live GRPO and RLOO runs of section 5 ended exactly on the sweep's checkpoints at round 20 (gold 0.898 at KL
# 15.42, 0.925 at KL 15.23): TRL's runs are deterministic here, seeds included.
#
# How to read the frontier.
#
# * **KL ≤ 2.** With a strong leash (β = 0.5) PPO, GRPO and RLOO barely move; DPO at β = 0.5–1 gets more gold for
#   the same KL (0.646 at KL 1.7, against PPO's 0.592 at 2.0 and GRPO's 0.608 at 1.6).
# * **KL ≤ 5.** Best-of-n is the one to beat: 0.737 at KL 3.86 (n = 128), above every trained method using the
#   reward model's signal (PPO 0.706 at KL 4.8, DPO 0.684, GRPO 0.609, RLOO 0.606). Only DPO on **gold-labelled**
#   pairs does better, 0.752 at KL 4.8 — it learns from the judge itself.
# * **KL ≤ 10.** PPO and DPO meet: PPO 0.802 at KL 6.9 (KL target 9), DPO 0.804 at KL 9.6 (β = 0.05).
# * **KL ≤ 15.** DPO (0.806 at KL 10.1) and PPO (0.802 at 6.9) lead among the methods that learn from the reward
#   model. The frontier is sparsely sampled here: GRPO and RLOO have no checkpoint between KL 3.4 and 15.2 (their
#   β = 0.05 runs were past KL 15 at round 20, with gold 0.898 and 0.925 there), and no PPO checkpoint lies between
#   KL 7.1 and 17.8 (its β = 0.05 run was at 17.8 after its first 25 steps).
# * **Beyond.** The weak-leash runs of PPO, GRPO and RLOO end at 0.887–0.963 gold at KL 18–32, and VADER calls
#   82–100% of their samples positive; the samples above show what that costs in fluency (notebook 07's reward
#   hacking). PPO on the gold reward is the ceiling: 0.914 at KL 13.6, 0.984 at 18.9.
# * **DPO ours vs TRL's**: the same loss, the same pairs and settings, nearly the same path (0.755 vs 0.746 gold at
#   KL 6.7 vs 6.6 after 200 steps). **Preferred-FT** hardly moves (0.533 at KL 0.74): the chosen completion of a pair
#   is only a little better than the rejected one, and imitating it imitates the SFT policy.
#
# ### Against the paper's Figure 2
#
# Rafailov et al. (Figure 2, left; gpt2-large, a sentiment classifier as the ground truth that also labelled the
# pairs) found DPO's frontier above every other method's at every KL: about 0.9 reward at KL 1–2 and 0.95–1.0 at KL
# 3–5, where PPO reached 0.85–0.9 only around KL 10–12. **We do not reproduce that.** With pairs labelled by the
# reward model, DPO leads PPO only under a strong leash (KL ≤ 2), trails it at KL ≤ 5, is level with it at KL ≤ 10,
# and stays below best-of-n as far as best-of-n reaches; with pairs labelled by the gold — the paper's setting — it
# leads at KL ≤ 5 (0.752 vs PPO's 0.706), but by a few points, not by the paper's margin, and it stops moving at
# KL ≈ 5. Differences that may explain it, none of them tested here: a 5 M-parameter policy instead of 774 M; 200
# steps on 6,144 pairs from 1,024 prompts; a gold judge that agrees with the reward model's labels on only 67.6% of
# the pairs and separates the two completions of a gold-labelled pair by 0.20 on average (so the labels are
# noisy); one seed per setting (notebook 07's three PPO seeds end 0.013 gold apart, at KL 5.3–5.5). Our PPO is the
# stronger baseline on this scale. The frontier is a measurement of these runs, not a ranking of the methods.
#
# ## Key takeaways
#
# * DPO is the RLHF objective solved backwards: the optimum $\pi^* \propto \pi_\text{ref}\, e^{r/\beta}$ makes
#   $\beta \log \pi/\pi_\text{ref}$ a reward (the implicit reward), Bradley–Terry needs only its differences, and
#   the partition function cancels — a classification loss on preference pairs, no reward model, no sampling.
# * The reference is the leash. DPO without it still fits the preferences, but towards the optimum under a uniform
#   prior: on the toy, most probability went to the repetitions the reward model over-scores.
# * Every log-probability in DPO is a sum over the completion's tokens only, given the prompt: the logits at $t - 1$
#   score token $t$, and the completion mask shifted the same way picks the terms.
# * DPO learns only from the pairs it is given (here sampled once from the SFT policy); PPO, GRPO and RLOO keep
#   sampling from the policy they train and score what it writes now. Where the policy drifts from the data, only
#   the on-policy methods see it.
# * Compare methods on one frontier — the same held-out prompts, the same KL estimator, an independent gold — not by
#   their training curves, whose KLs and rewards are not one measurement.
# * A method's place on the frontier depends on its settings (β, steps, learning rate) as much as on the method:
#   sweep them before ranking methods, and report the wall time and the seeds behind every point.
#
# ## Self-check
#
# 1. DPO's implicit reward is $\beta \log \pi(y|x)/\pi_\text{ref}(y|x)$, without the $\beta \log Z(x)$ of
#    equation 5. Why does leaving it out change nothing in training, and when would it matter?
#
#    <details><summary>Answer</summary>The loss compares two completions of the same prompt, and $\beta \log Z(x)$
#    depends on the prompt only, so it cancels in the difference. It matters when implicit rewards of completions of
#    <em>different</em> prompts are compared (e.g. used as an absolute score, or to rank prompts): there the missing
#    term differs from prompt to prompt.</details>
#
# 2. At the start of DPO training the loss is exactly $\log 2$ whatever the pairs. Why?
#
#    <details><summary>Answer</summary>The policy is initialised as the reference, so both log-ratios are 0, the
#    margin is 0 and $-\log \sigma(0) = \log 2$ for every pair.</details>
#
# 3. A larger β in DPO gives a policy closer to the SFT policy. Where in the loss does that come from, given that
#    there is no KL term in it?
#
#    <details><summary>Answer</summary>β scales the log-ratio margin inside the sigmoid: with a large β a small
#    change of the log-ratios already makes a pair's loss small (and its weight $\sigma(\hat r_l - \hat r_w)$ in the
#    gradient vanishes), so the policy stops moving sooner. It is the same β as the KL penalty's in the objective
#    DPO was derived from: $\pi^* \propto \pi_\text{ref} e^{r/\beta}$ moves less for large β.</details>
#
# 4. GRPO and RLOO need no value head, DPO needs no reward model and no sampling. What does each give up for it?
#
#    <details><summary>Answer</summary>GRPO and RLOO estimate the baseline from k completions of the same prompt,
#    so they sample k times per prompt and give one advantage to a whole completion (no per-token credit from a value
#    function). DPO gives up on-policy data: it learns from fixed pairs, so it cannot see or correct what the policy
#    writes once it drifts from them, and its only leash is the implicit one through β.</details>
#
# 5. Your `sequence_logprobs` sums over the attention mask instead of the completion mask, so every sum includes the
#    prompt's tokens. Why does DPO's loss not change for pairs whose two completions share a prompt, and what does?
#
#    <details><summary>Answer</summary>The prompt's tokens come before the completion, so a causal model gives them
#    the same log-probabilities in the chosen and the rejected row; in the margin $(\log\pi_c - \log\pi_{\text{ref},c})
#    - (\log\pi_r - \log\pi_{\text{ref},r})$ they cancel. What changes is every number that is not such a difference:
#    the implicit rewards logged during training, and any $\log \pi(y|x)$ compared across prompts.</details>
#
# **This is the last notebook of the course.** The same package functions train the real 124 M GPT-2 on the hub's
# IMDb with the `gpt2` profile (`--profile gpt2` or `RLHF_PROFILE=gpt2`; online, and a GPU helps): the frontier sweep
# at that scale is the natural next experiment.
