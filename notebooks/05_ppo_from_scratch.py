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
# # 05 — PPO from scratch, piece by piece
#
# TRL no longer ships a PPO trainer or a value-head model (they were removed in 2026, TRL PR #7020; notebook 04 tells
# the story), so this course's PPO is written from scratch on plain `transformers` and `torch`. This notebook takes
# it apart. You write ten of its pieces yourself (exercises 5.1–5.10), each checked against the package's own
# function in `rlhf_helpers.ppo` or `rlhf_helpers.policy`; your log-probabilities, entropy and KL estimators then run
# the experiments of sections 4 and 5. The package runs one real PPO update on a batch of 8 prompts, and we look at
# what it did. Notebook 06 puts the pieces together in the training loop.
#
# **Learning objectives.** After this notebook you can
# 1. state RLHF as a reinforcement-learning problem (tokens are actions, the reward model's score arrives at the end,
#    a KL penalty at every token) and compute its per-token rewards;
# 2. compute the log-probabilities of a response from one forward pass over `[query | response]` — the
#    one-position shift, the sampling temperature, position ids for left-padded queries — and from them the
#    policy's entropy and the k1 and k3 estimates of the KL;
# 3. compute masked statistics and GAE advantages and returns on right-padded batches, and say what goes wrong
#    when a mask is forgotten;
# 4. derive PPO's clipped surrogate from REINFORCE — baseline, advantage, importance ratio, clipping — and write
#    the clipped policy and value losses;
# 5. read one PPO update's statistics (ratio, clip fraction, approx-KL) and explain what clipping bounds and what it
#    does not;
# 6. steer β with the adaptive KL controller.
#
# **Prerequisites:** notebooks 02 (sampling and log-probs) and 03 (the reward model and its normalisation); notebook
# 04's k3 estimator helps. Expectations and the gradient of a log-likelihood.
# **Time:** about two hours with the exercises; running every cell takes well under a minute on 2 CPU cores.
# **Takes from earlier notebooks:** the shipped SFT policy (02), the shipped reward model (03), the IMDb prompts (01).
#
# **RLHF as reinforcement learning.** A *prompt* $x$ is the start state. Each *action* is a token $y_t$; the
# *state* $s_t$ is $x$ plus the tokens so far; the *episode* ends after the response (4–16 tokens here). The
# *policy* $\pi_\theta$ is the language model. The reward is the reward model's score $r_\phi(x, y)$ at the end,
# minus a KL penalty at every token that keeps $\pi_\theta$ close to the frozen SFT model $\pi_{\text{ref}}$:
#
# $$R_t = -\beta \,\big(\log \pi_\theta(y_t \mid s_t) - \log \pi_{\text{ref}}(y_t \mid s_t)\big) \;+\; [t = T]\; r_\phi(x, y).$$
#
# **PPO** (Schulman et al., 2017, *Proximal Policy Optimization Algorithms*) takes several gradient steps on each
# batch of samples. Its clipped objective removes the *incentive* to push any token's probability ratio
# $\pi_\theta / \pi_{\text{old}}$ beyond $1 \pm \epsilon$ during those steps. That is weaker than keeping the policy
# within $\epsilon$ of the one that sampled: section 11 shows one update moving far past it, and says why.

# %%
import copy
import inspect
import math

import datasets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers

from rlhf_helpers import build_dataset, exercises, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.data import load_imdb_splits
from rlhf_helpers.policy import load_policy
from rlhf_helpers.policy.generation import generate, truncate_responses
from rlhf_helpers.ppo import collect_rollout, ppo_update
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values
from rlhf_helpers.reward.model import load_reward_model

transformers.utils.logging.disable_progress_bar()  # no weight-loading bars in the outputs
datasets.disable_progress_bars()  # nor the prompt dataset's map/filter bars
torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=140)
config = get_config()
sft, tokenizer = load_policy(config.name)
policy = PolicyWithValueHead(copy.deepcopy(sft))   # trained: the LM + a new value head
reference = copy.deepcopy(sft).requires_grad_(False)  # frozen: never updated
reward_model = load_reward_model(config.name)
reward_model.check_same_tokenizer(tokenizer)
# the first 8 prompts of the training split; prompts are built row by row, so its first 64 reviews are enough
first_reviews = load_imdb_splits(config)["train"].select(range(64))
prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, dataset=first_reviews)["input_ids"][:8]]
print([tokenizer.decode(p) for p in prompts])

# %% [markdown]
# ## 1. The policy and its value head
#
# The value $V(s_t)$ predicts the return still to come; PPO uses it as a baseline. Like the historical TRL
# `AutoModelForCausalLMWithValueHead`, ours is one linear layer on the last hidden state of the same GPT-2
# (`rlhf_helpers.ppo.value_head`). It starts at **zero**, and nothing has dropout (every pass must see the same
# network). With $V = 0$, $\gamma = 1$ and $\lambda = 0.95$ the first advantages are the *λ-discounted*
# rewards-to-go $\hat A_t = \sum_{l \ge 0} \lambda^l R_{t+l}$ — section 7 checks it.

# %%
print(inspect.getsource(PolicyWithValueHead.__init__))
print(inspect.getsource(PolicyWithValueHead.forward))

# %% [markdown]
# ## 2. Rollout: sample responses
#
# The seed's recipe: responses of 4–16 new tokens, sampled from the full distribution (`top_k=0`, `top_p=1`).
# One batched `generate` call samples up to 16 tokens and each row is then cut to its own length — the same
# as sampling that many tokens, because sampling is left to right. Prompts are left-padded, responses
# right-padded, and the masks say which tokens are real.

# %% tags=["nbval-check-output"]
out = generate(policy.lm, tokenizer, prompts, max_new_tokens=16, top_k=0, top_p=1.0, seed=0)
lengths = torch.tensor([4, 16, 8, 6, 12, 5, 10, 16])  # what LengthSampler(4, 16) might draw
response_ids, response_mask = truncate_responses(out.response_ids, out.response_mask, lengths, tokenizer.pad_token_id)
query_ids, query_mask = out.query_ids, out.query_mask
print("query_ids   ", tuple(query_ids.shape), " left-padded  | response_ids", tuple(response_ids.shape), "right-padded")
print("query_mask[0]   ", query_mask[0].tolist())
print("response_mask[0]", response_mask[0].tolist())

# %% [markdown]
# The reward model reads the query **and** the response (the whole text) and returns one number, normalised to mean
# 0 and std 1 on samples of the SFT policy (notebook 03). The tiny 5 M-parameter policy writes text that is
# **locally fluent, globally incoherent** — IMDb is all it has read — so judge the scores, not the prose; the `gpt2`
# profile (`RLHF_PROFILE=gpt2`, a
# GPU helps) runs the same cells with the real 124 M GPT-2.

# %%
responses = tokenizer.batch_decode([r[m.bool()] for r, m in zip(response_ids, response_mask)])
texts = [q + r for q, r in zip(out.prompts, responses)]
scores = reward_model.score(texts)
print("score  query -> response")
for q, r, score in zip(out.prompts, responses, scores):
    print(f"{score:+.2f}  {q!r} -> {r!r}")

# %% [markdown]
# ## 3. Averages over real tokens only
#
# Every statistic of PPO — the mean KL, the mean entropy, the losses, the whitening of advantages — is taken over
# **real** tokens. The padding of a batch holds whatever the code left there, and a statistic that counts it changes
# with the batch's padding, not with the policy.
#
# ### Exercise 5.1 — `masked_mean`
# **Difficulty** ●○○○○ · **Importance** ●●●●○ · about 5 minutes
#
# Inputs: `values` `[B, T]` (its padding may hold anything) and `mask` `[B, T]` (1.0 on real tokens, 0.0 on padding).
# Output: a 0-d tensor, the mean over the real tokens,
#
# $$\bar x = \frac{\sum_{b,t} m_{bt}\, x_{bt}}{\sum_{b,t} m_{bt}}.$$
#
# *Hint:* every real token weighs the same, whatever the length of its row — this is not a mean of per-row means.

# %%
def masked_mean(values, mask):
    """Mean of values [B, T] over the positions where mask [B, T] is 1 -> 0-d tensor."""
    ### BEGIN SOLUTION
    real = mask.bool()
    # torch.where rather than values * mask: 0 * NaN is NaN, and padding may hold anything
    total = torch.where(real, values, torch.zeros_like(values)).sum()
    return total / real.sum()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_masked_mean(masked_mean)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_masked_mean` names each of these when your function makes it:
#
# - averaged over every position, padding included
# - the masked sum divided by B·T
# - the mean of per-row means
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 5.2 — `masked_whiten`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# *Whitening* rescales values to mean 0 and standard deviation 1. PPO whitens the advantages of each mini-batch, so
# the size of a step does not depend on the scale of the reward. Inputs as in 5.1; output `[B, T]`:
#
# $$\hat x_{bt} = \frac{x_{bt} - \bar x}{\sqrt{\sigma^2 + 10^{-8}}} \text{ on real tokens, } 0 \text{ on padding},
# \qquad \sigma^2 = \frac{1}{n - 1}\sum_{b,t} m_{bt}\,(x_{bt} - \bar x)^2,$$
#
# with $\bar x$ the masked mean and $n$ the number of real tokens (the unbiased variance).
#
# *Hint:* `values[mask.bool()]` is a flat tensor of the real tokens only; `torch.var` is unbiased by default.

# %%
def masked_whiten(values, mask):
    """values [B, T] rescaled to mean 0, unbiased std 1 over the real tokens of mask [B, T]; padding -> 0."""
    ### BEGIN SOLUTION
    real = mask.bool()
    kept = values[real]
    whitened = (values - kept.mean()) / torch.sqrt(kept.var() + 1e-8)
    return torch.where(real, whitened, torch.zeros_like(whitened))
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_masked_whiten(masked_whiten)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_masked_whiten` names each of these when your function makes it:
#
# - whitened over the padding too
# - padding set to 0 but still counted in the mean and std
# - the padding not set to 0
# - the biased std (divided by n)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ## 4. Log-probabilities and values
#
# One forward pass over `[query | response]` gives, for every response token, its log-probability under the
# policy and the value of the state before it. The same pass through the frozen reference gives
# $\log\pi_{\text{ref}}$. Every later piece of PPO — the ratio, the KL penalty, the entropy — is computed from
# these numbers, and three details decide whether they are right (Huang et al., 2023, *The N Implementation Details
# of RLHF with PPO*, sections "General implementation details" and "Policy training implementation details"):
#
# * **The shift.** The logits at column $c$ predict the token at column $c + 1$. With a query of $P$ columns, the
#   response tokens sit at columns $P, \dots, P+R-1$ and are scored by the logits at columns $P-1, \dots, P+R-2$.
# * **The temperature.** The responses were sampled from $\operatorname{softmax}(z / T)$, so their log-probs must be
#   computed from $z / T$ too: otherwise the "old" log-probs are not those of the distribution the tokens came from.
# * **Left padding.** Queries are left-padded (section 2). GPT-2 has *learned absolute* position embeddings, so a
#   padded row needs position ids that start at 0 on its first real token — the default $0, 1, \dots$ would give
#   the same text different logits depending on how much padding its batch needed — and an attention mask that
#   hides the padding.
#
# ### Exercise 5.3 — `response_logprobs`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 20 minutes
#
# Inputs: a causal LM `model` (e.g. `GPT2LMHeadModel`, in eval mode), `query_ids` and `query_mask` `[B, P]`
# (left-padded), `response_ids` and `response_mask` `[B, R]` (right-padded), the sampling `temperature` $T$.
# Output: `[B, R]`, the log-probability of each response token, 0 on the response's padding,
#
# $$\log\pi(y_{b,t} \mid x_b, y_{b,<t}) = \log\operatorname{softmax}\big(z_{b,\,P-1+t} / T\big)\big[y_{b,t}\big],
# \qquad z = \text{the logits of } [\text{query} \mid \text{response}],$$
#
# with the model called on the concatenated ids, their concatenated mask, and position ids $\max(0,
# \operatorname{cumsum}(\text{mask}) - 1)$. Leave gradients alone: PPO's policy pass trains through this function,
# and the caller wraps the reference's pass in `torch.no_grad()`.
#
# *Hint:* `model(input_ids=..., attention_mask=..., position_ids=...).logits` is `[B, P+R, V]`; after the slice and
# `torch.log_softmax(..., dim=-1)`, `torch.gather(logp, 2, response_ids.unsqueeze(-1))` reads each token's entry.

# %%
def response_logprobs(model, query_ids, query_mask, response_ids, response_mask, temperature=1.0):
    """log pi(y_t | query, y_<t) of each response token -> [B, R], 0 on padding.

    query_ids, query_mask [B, P] left-padded; response_ids, response_mask [B, R] right-padded; one forward pass over
    [query | response] with the logits divided by the sampling temperature.
    """
    ### BEGIN SOLUTION
    n_query, n_response = query_ids.shape[1], response_ids.shape[1]
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1).long()
    # every row's first real token gets position 0, whatever its left padding (padding: a harmless 0)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    # the logits at column c predict the token at c + 1: columns P-1 … P+R-2 score the R response tokens
    logits = logits[:, n_query - 1 : n_query + n_response - 1].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = torch.gather(logprobs, 2, response_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked * response_mask.to(picked.dtype)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_response_logprobs(response_logprobs)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_response_logprobs` names each of these when your function makes it:
#
# - each token's log-prob read from its own column (logits[:, P:] instead of logits[:, P-1:-1])
# - the window not cut at the end (logits[:, P-1:], R + 1 columns)
# - the sampling temperature forgotten
# - the logits multiplied by the temperature instead of divided
# - neither the attention mask nor position ids passed (model(input_ids) alone)
# - the default position ids 0 … L−1 with left-padded queries
# - the attention mask not passed
# - probabilities (softmax without the log)
# - log_softmax over the positions instead of the vocabulary
# - the raw logits read at the tokens, not normalised
# - the padding not set to 0
# - no gradient (torch.no_grad(), .detach() or .item() inside)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 5.4 — `entropy_from_logits`
# **Difficulty** ●●○○○ · **Importance** ●●●○○ · about 5 minutes
#
# The entropy of the policy at each response position, $H = -\sum_v p_v \log p_v$ (nats), is the statistic that
# shows a policy collapsing onto a few tokens. Input: `logits` `[B, T, V]`; output: `[B, T]`, finite even where the
# softmax underflows to 0 (a confident policy) or a logit is $-\infty$ (a token banned outright, as top-k filtering
# leaves it) — there $p \log p = 0$ by convention.
#
# *Hint:* `torch.log_softmax` stays finite where `torch.log(torch.softmax(...))` is $-\infty$; for a banned token
# even `log_softmax` is $-\infty$, and $0 \cdot (-\infty)$ is NaN in floating point.

# %%
def entropy_from_logits(logits):
    """Entropy -sum p log p (nats) of the softmax over the last dim of logits [B, T, V] -> [B, T]."""
    ### BEGIN SOLUTION
    log_p = torch.log_softmax(logits, dim=-1)
    # log 0 = -inf raised to the most negative float, so that 0 * log 0 is 0, not NaN
    log_p = log_p.clamp(min=torch.finfo(log_p.dtype).min)
    return -(log_p.exp() * log_p).sum(dim=-1)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_entropy_from_logits(entropy_from_logits)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_entropy_from_logits` names each of these when your function makes it:
#
# - NaN on banned tokens (logit −inf): 0 · log 0 computed as 0 · (−inf)
# - `torch.log(torch.softmax(x))`, which underflows to −inf on large logits
# - the sign flipped (Σ p log p)
# - bits (log base 2) instead of nats
# - the logits used in place of the log-probabilities
# - the softmax over the positions instead of the vocabulary
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Now on our batch. The policy's log-probs and values come from the package's `response_logprobs_and_values` (one
# pass through the policy and its value head); the reference's from **your** `response_logprobs`, and the mean
# entropy from your `entropy_from_logits` and `masked_mean`.

# %%
with torch.no_grad():
    logprobs, logits, values = response_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask)
    ref_logprobs = response_logprobs(reference, query_ids, query_mask, response_ids, response_mask)  # yours (5.3)
print("log pi(y_t)     row 0:", logprobs[0, :6])
print("log pi_ref(y_t) row 0:", ref_logprobs[0, :6])
print("values          row 0:", values[0, :6], " <- the value head starts at exactly 0")
print("entropy of the policy per token:", masked_mean(entropy_from_logits(logits), response_mask).item())
gap = (logprobs - ref_logprobs)[response_mask.bool()].abs().max().item()
print(f"largest |log pi - log pi_ref| on a real token: {gap:.1e}")
assert torch.allclose(logprobs, ref_logprobs, atol=1e-5), "before any update, policy and reference are the same network"

# %% [markdown]
# Before the first update the policy *is* the reference, so every log-ratio is 0 (exactly, with the solution above,
# which does the package's operations in the package's order; another order of the same operations may leave float
# rounding). A KL that is not 0 at step 0 is a bug: dropout left on, a different temperature, position ids or padding
# handled differently in the two passes, padding counted as tokens.
#
# ## 5. The KL penalty: two estimators
#
# The KL of a response is a sum over its tokens, and we only have samples, so each token gets an estimate
# (Schulman, 2020, *Approximating KL Divergence*). With $\log r = \log\pi_{\text{ref}} - \log\pi$:
#
# * **k1** $= -\log r$: unbiased, but single tokens can be negative and it is noisy;
# * **k3** $= (r - 1) - \log r$: also unbiased, never negative, lower variance when the models are close (exercise
#   4.2 of notebook 04; TRL's GRPO uses it).
#
# ### Exercise 5.5 — `kl_penalty`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# Inputs: `logprobs` and `ref_logprobs` `[B, T]` — the sampled tokens' log-probs under the policy (which sampled
# them) and under the reference — and `estimator`, `"k1"` or `"k3"`. Output: `[B, T]`, the per-token estimate of
# $\mathrm{KL}(\pi \,\|\, \pi_{\text{ref}})$ (no masking: the callers mask).
#
# *Hint:* get the direction of $\log r = \log\pi_{\text{ref}} - \log\pi$ right first; `torch.expm1(x)` computes
# $e^x - 1$ without the rounding error of `torch.exp(x) - 1` for small $x$, so k3 stays $\ge 0$.

# %%
def kl_penalty(logprobs, ref_logprobs, estimator="k1"):
    """Per-token estimate [B, T] of KL(pi || pi_ref) from logprobs, ref_logprobs [B, T]: "k1" or "k3"."""
    ### BEGIN SOLUTION
    log_r = ref_logprobs - logprobs  # log r, r = pi_ref / pi: the tokens were sampled from pi
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.expm1(log_r) - log_r  # (r - 1) - log r >= 0
    raise ValueError(f"unknown estimator {estimator!r}: 'k1' or 'k3'")
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_kl_penalty(kl_penalty)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_kl_penalty` names each of these when your function makes it:
#
# - k1's sign flipped (log π_ref − log π)
# - |k1| (the absolute value, to make it non-negative)
# - k3's log-ratio the wrong way round (KL(π_ref ‖ π))
# - k2 = ½ (log r)² instead of k3
# - k3 without its − 1
# - k3 with + log r instead of − log r
# - one estimator returned whatever `estimator` asks for
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# To see them differ, compare the SFT model with a slightly different policy — the SFT model at temperature 1.3 —
# with your `response_logprobs` and your `kl_penalty`.

# %%
with torch.no_grad():
    warm = generate(sft, tokenizer, prompts * 32, max_new_tokens=12, temperature=1.3, seed=0, stop_at_eos=False)
    lp_warm = response_logprobs(sft, warm.query_ids, warm.query_mask, warm.response_ids, warm.response_mask, temperature=1.3)
    lp_ref = response_logprobs(sft, warm.query_ids, warm.query_mask, warm.response_ids, warm.response_mask, temperature=1.0)
k1, k3 = kl_penalty(lp_warm, lp_ref, "k1"), kl_penalty(lp_warm, lp_ref, "k3")
mask = warm.response_mask.bool()
print(f"per-token KL, mean  k1 = {k1[mask].mean():.4f}   k3 = {k3[mask].mean():.4f}")
print(f"per-token std       k1 = {k1[mask].std():.4f}   k3 = {k3[mask].std():.4f}")
print(f"negative tokens     k1: {(k1[mask] < 0).float().mean():.0%}   k3: {(k3[mask] < 0).float().mean():.0%}")
plt.figure(figsize=(6, 3))
plt.hist(k1[mask].numpy(), bins=80, alpha=0.6, label="k1")
plt.hist(k3[mask].numpy(), bins=80, alpha=0.6, label="k3")
plt.xlabel("per-token KL estimate (nats)"); plt.ylabel("tokens"); plt.legend(); plt.xlim(-3, 3)
plt.title("k1 is signed and noisy, k3 is never negative"); plt.show()
assert k3.min() > -1e-6  # never negative (an exp(x) - 1 may leave a rounding error of about 1e-7)

# %% [markdown]
# ## 6. Per-token rewards
#
# The score lands on the **last real** response token; every token also pays $-\beta \cdot \text{KL}_t$. That answers
# a common question, "why is the KL per token but the score at the end?": the score judges the whole response, but
# the KL of a response is a sum over its tokens, so each token can be charged its own share.
#
# ### Exercise 5.6 — `per_token_rewards`
# **Difficulty** ●●○○○ · **Importance** ●●●●● · about 10 minutes
#
# Inputs: `scores` `[B]` (one reward-model score per response), `logprobs` and `ref_logprobs` `[B, T]` (the sampled
# tokens' log-probs under the policy and the reference), `mask` `[B, T]` (right-padded: ones, then zeros) and
# `kl_coef` β (a float). Output: `rewards` `[B, T]` with the k1 estimate,
#
# $$R_{bt} = -\beta\,\big(\log\pi(y_{bt}) - \log\pi_{\text{ref}}(y_{bt})\big)\,m_{bt} \;+\; [t = \ell_b]\; \text{score}_b,
# \qquad \ell_b = \textstyle\sum_t m_{bt} - 1,$$
#
# so 0 on padding, and the score on each row's last real token.
#
# *Hint:* build the penalty first, then add the scores at `[torch.arange(B), last]` with advanced indexing.

# %%
def per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """-kl_coef * k1 on the real tokens of mask [B, T], plus scores [B] on each row's last real token -> [B, T]."""
    ### BEGIN SOLUTION
    real = mask.bool()
    kl = torch.where(real, logprobs - ref_logprobs, torch.zeros_like(logprobs))  # k1 per token, 0 on padding
    rewards = -kl_coef * kl
    last = real.sum(1) - 1  # right padding: the last real token of each row
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_per_token_rewards(per_token_rewards)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_per_token_rewards` names each of these when your function makes it:
#
# - the score on the last column instead of the last real token
# - the KL penalty's sign flipped
# - the KL not multiplied by kl_coef
# - a KL penalty charged on the padding
# - the score added at every token
# - the score on the first token
# - k3 instead of k1
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Now on our batch. Before any update the KL is exactly 0, so, to see the penalty, pretend the policy has moved a
# little:

# %%
noise = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(0))
moved = logprobs + 0.05 * noise * response_mask
rewards = per_token_rewards(scores, moved, ref_logprobs, response_mask, kl_coef=0.2)
print("row 0 (4 tokens):   ", rewards[0, :6])
print("row 2 (8 tokens):   ", rewards[2, :10])
penalty = (-0.2 * (moved - ref_logprobs) * response_mask).sum(1)
print(f"score of row 2: {scores[2].item():+.3f} | its summed KL penalty: {penalty[2].item():+.4f} "
      "(a sum of k1 terms, which can have either sign)")

# %% [markdown]
# ## 7. Advantages: GAE
#
# The advantage $\hat A_t$ says how much better the rest of the episode went than the value head expected.
# Generalised Advantage Estimation (Schulman et al., *High-Dimensional Continuous Control Using Generalized Advantage
# Estimation*, 2016 (ICLR; arXiv 2015); the sum below is its eq. 16) mixes the one-step errors $\delta_t$ with
# weights $(\gamma\lambda)^l$:
#
# $$\delta_t = R_t + \gamma V_{t+1} - V_t, \qquad \hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l\, \delta_{t+l}
# = \delta_t + \gamma\lambda\, \hat A_{t+1}, \qquad \text{return}_t = \hat A_t + V_t.$$
#
# $\lambda$ trades bias for variance: $\lambda = 0$ trusts the value head ($\hat A_t = \delta_t$), $\lambda = 1$
# trusts only the rewards ($\hat A_t$ = reward-to-go $- V_t$). RLHF uses $\gamma = 1$ (a response is short and only its
# end is scored) and $\lambda = 0.95$. The return is the value head's regression target.
#
# ### Exercise 5.7 — `compute_gae`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 20 minutes
#
# Inputs: `rewards` and `values` `[B, T]` (their padding may hold anything), `mask` `[B, T]` right-padded, `gamma`,
# `lam` (floats). Output: `(advantages, returns)`, both `[B, T]`, 0 on padding. The response ends after its last real
# token, so there $V_{t+1} = 0$ and $\hat A_{t+1} = 0$.
#
# *Hint:* zero the rewards and values on padding, then walk the columns backwards, `t = T-1, ..., 0`, carrying
# $V_{t+1}$ and $\hat A_{t+1}$ for the whole batch at once.

# %%
def compute_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """GAE on [B, T] rewards and values, mask [B, T] right-padded -> (advantages [B, T], returns [B, T])."""
    ### BEGIN SOLUTION
    mask = mask.to(rewards.dtype)
    rewards, values = rewards * mask, values * mask  # nothing happens after a response has ended
    batch, width = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(batch, dtype=rewards.dtype)      # V_{t+1}
    next_advantage = torch.zeros(batch, dtype=rewards.dtype)  # A_{t+1}
    for t in reversed(range(width)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value, next_advantage = values[:, t], advantages[:, t]
    returns = (advantages + values) * mask
    return advantages, returns
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_compute_gae(compute_gae)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_compute_gae` names each of these when your function makes it:
#
# - rewards masked but values not: bootstrapping from padded values
# - neither masked: bootstrapping from the padding
# - λ missing (λ = 1)
# - γ missing
# - off by one in the next value (V_t or V_{t+2} instead of V_{t+1})
# - discounted by γ²·λ
# - returns equal to the advantages
# - returns as A − V instead of A + V
# - returns as the discounted rewards-to-go
# - returns not 0 on padding
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# On our batch, where the value head still says 0 everywhere: with $\lambda = 1$ the advantages are the plain
# rewards-to-go, with $\lambda = 0.95$ the λ-discounted ones (the claim of section 1).

# %%
width = rewards.shape[1]
later = torch.arange(width)[None, :] - torch.arange(width)[:, None]  # t' - t
for lam in [1.0, 0.95]:
    advantages, returns = compute_gae(rewards, values, response_mask, gamma=1.0, lam=lam)
    weights = torch.where(later >= 0, lam ** later.clamp(min=0).float(), torch.zeros(()))  # lam^(t'-t), t' >= t
    assert torch.allclose(advantages, (rewards @ weights.T) * response_mask, atol=1e-6)
print(f"advantages row 2 (lam = {lam}):", advantages[2, :8])
white = masked_whiten(advantages, response_mask)
print(f"whitened over real tokens: mean {masked_mean(white, response_mask):+.3f}, "
      f"std {white[response_mask.bool()].std():.3f}; padding stays {white[0, 4:].abs().max():.0f}")

# %% [markdown]
# ## 8. From REINFORCE to PPO
#
# Where does PPO's loss come from? Four steps, each fixing a problem of the one before.
#
# **1. REINFORCE** (Williams, 1992, *Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
# Learning*). We want to maximise $J(\theta) = \mathbb{E}_{y \sim \pi_\theta}\big[\sum_t R_t\big]$. We cannot
# differentiate through sampling, but $\nabla_\theta \pi_\theta = \pi_\theta \nabla_\theta \log \pi_\theta$ turns the
# gradient into an expectation we can estimate from samples:
#
# $$\nabla_\theta J = \mathbb{E}\Big[\sum_t \nabla_\theta \log \pi_\theta(y_t \mid s_t)\; G_t\Big],
# \qquad G_t = \sum_{t' \ge t} \gamma^{t'-t} R_{t'} .$$
#
# Only the rewards from $t$ on weigh token $t$: earlier rewards do not depend on $y_t$, and their terms average to 0.
# Read it as "make each sampled token more likely in proportion to what followed it".
#
# **2. A baseline, and the advantage.** $G_t$ is noisy: every token of a good response is pushed up, lucky or not.
# Subtracting any baseline $b(s_t)$ that does not depend on $y_t$ leaves the gradient unbiased, because
# $\mathbb{E}_{y_t \sim \pi_\theta}\big[\nabla_\theta \log \pi_\theta(y_t \mid s_t)\big] = \sum_y \nabla_\theta
# \pi_\theta(y \mid s_t) = \nabla_\theta 1 = 0$. The natural baseline is the value $V(s_t)$, which leaves the
# **advantage** $A_t = G_t - V(s_t)$: push up what went better than expected, push down what went worse. GAE
# (section 7) is a lower-variance estimate $\hat A_t$ of it.
#
# **3. Reusing a batch: the importance ratio.** Sampling is the expensive part, so we want several gradient steps per
# batch. After the first step the samples come from an *older* policy $\pi_{\text{old}}$. Reweighting each token by
# the ratio $\rho_t(\theta) = \pi_\theta(y_t \mid s_t) / \pi_{\text{old}}(y_t \mid s_t)$ corrects for that:
#
# $$L^{\text{IS}}(\theta) = \mathbb{E}_{\pi_{\text{old}}}\big[\rho_t(\theta)\, \hat A_t\big], \qquad
# \nabla_\theta L^{\text{IS}}\big|_{\theta = \theta_{\text{old}}} = \mathbb{E}\big[\nabla_\theta \log \pi_\theta(y_t \mid s_t)\,
# \hat A_t\big],$$
#
# the policy gradient again at the first step (there $\rho_t = 1$ and $\nabla \rho_t = \rho_t \nabla \log \pi_\theta$).
# The correction is per token only: it ignores that the states $s_t$ (the tokens so far) would also come out
# differently under $\pi_\theta$. So $L^{\text{IS}}$ is a good guide only while $\pi_\theta$ stays near
# $\pi_{\text{old}}$ (the starting point of Schulman et al., 2015, *Trust Region Policy Optimization*) — and
# maximising it pushes a good token's ratio up without limit.
#
# **4. Clipping** (Schulman et al., 2017, section 3, "Clipped Surrogate Objective"). Take the pessimistic minimum of
# that objective and a version with the ratio clipped to $[1-\epsilon, 1+\epsilon]$:
#
# $$L^{\text{CLIP}}(\theta) = \mathbb{E}\Big[\min\big(\rho_t \hat A_t,\; \operatorname{clip}(\rho_t, 1-\epsilon,
# 1+\epsilon)\, \hat A_t\big)\Big].$$
#
# **Predict first**, from the formula alone: the cases and the plot below answer it, and the cell after the plot
# grades it.

# %%
guess = exercises.predict(
    "With ε = 0.2, a token has advantage A = +1 and its ratio has already reached ρ = 1.4 (past 1 + ε). What is the "
    "derivative of its objective min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) with respect to ρ?",
    choices={"a": "+1: the objective is still ρ·A, so the gradient keeps raising ρ",
             "b": "0: the objective is the constant (1 + ε)·A, so nothing pulls ρ either way",
             "c": "−1: the clip pulls ρ back towards 1 + ε"})
guess.answer = None  # ← your answer, "a", "b" or "c" (or press a button above)

# %% [markdown]
# Per token there are four cases, drawn below:
#
# * $\hat A > 0$ and $\rho \le 1+\epsilon$: the unclipped term is the minimum; the gradient raises $\rho$.
# * $\hat A > 0$ and $\rho > 1+\epsilon$: the minimum is the constant $(1+\epsilon)\hat A$. **Gradient 0**: nothing more to
#   gain from making this token likelier.
# * $\hat A < 0$ and $\rho \ge 1-\epsilon$: the unclipped term; the gradient lowers $\rho$.
# * $\hat A < 0$ and $\rho < 1-\epsilon$: the constant $(1-\epsilon)\hat A$. **Gradient 0**.
#
# And on the far sides — $\hat A > 0$ with $\rho < 1-\epsilon$, or $\hat A < 0$ with $\rho > 1+\epsilon$, a token pushed
# the *wrong* way by the updates of other tokens — the minimum is the unclipped term, so the gradient still pulls it
# back. Clipping only removes an incentive to go further; it never removes a correction.

# %%
def clipped_objective(ratio, advantage, eps=0.2):
    """Per-token min(rho * A, clip(rho) * A) and its derivative d/d rho, for an array of ratios."""
    rho = torch.as_tensor(ratio, dtype=torch.float64).clone().requires_grad_(True)
    objective = torch.minimum(rho * advantage, torch.clamp(rho, 1 - eps, 1 + eps) * advantage)
    objective.sum().backward()
    return objective.detach().numpy(), rho.grad.numpy()


eps = 0.2
ratios = np.linspace(0.4, 1.6, 601)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
for ax, advantage in zip(axes, [1.0, -1.0]):
    objective, slope = clipped_objective(ratios, advantage, eps)
    ax.axvspan(1 - eps, 1 + eps, color="grey", alpha=0.15, label=f"clip range [{1 - eps}, {1 + eps}]")
    ax.plot(ratios, ratios * advantage, "k:", lw=1, label=r"unclipped $\rho A$")
    ax.plot(ratios, objective, color="tab:blue", lw=2, label=r"$\min(\rho A,\ \mathrm{clip}(\rho) A)$")
    flat = np.where(slope == 0, objective, np.nan)
    ax.plot(ratios, flat, color="tab:red", lw=5, alpha=0.7, label="gradient 0 (clipped)")
    ax.axvline(1.0, color="grey", lw=0.8)
    wrong_way = 0.6 if advantage > 0 else 1.4  # a ratio moved against the advantage: not clipped
    ax.annotate("moved the wrong way:\nthe gradient still pulls back", xy=(wrong_way, wrong_way * advantage),
                xytext=(0.45 if advantage > 0 else 1.05, 1.3 if advantage > 0 else 0.2), fontsize=8,
                arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.set(title=f"advantage A = {advantage:+.0f}", xlabel=r"ratio $\rho = \pi_\theta / \pi_{old}$")
    ax.legend(fontsize=8, loc="lower right" if advantage > 0 else "upper right")
axes[0].set_ylabel("per-token objective (to maximise)")
plt.suptitle("PPO's clipped surrogate: where the gradient is zero", y=1.02)
plt.tight_layout(); plt.show()

# %%
rho = 1.4
slope = float(clipped_objective([rho], 1.0, eps)[1][0])  # d objective / d rho at rho = 1.4, A = +1, by autograd
guess.reveal("a" if slope > 0.5 else "c" if slope < -0.5 else "b",
             why=f"autograd gives {slope:+g} there: min({rho:g}·A, {1 + eps:g}·A) is the clipped term, which does not "
                 "depend on ρ (the red stretch of the left panel). The clip removes the incentive to go further; it "
                 "does not push back.")

# %% [markdown]
# ## 9. The clipped policy loss
#
# The optimiser *minimises*, so the loss is the negative objective — and the minimum of the objectives becomes the
# **maximum** of the negated terms, the answer to the sign question users ask most:
#
# $$\mathcal{L}_{\text{policy}} = \frac{1}{n}\sum_{\text{real } t} \max\big(-\rho_t \hat A_t,\;
# -\operatorname{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\, \hat A_t\big), \qquad \rho_t = \exp(\log\pi_\theta(y_t) -
# \log\pi_{\text{old}}(y_t)).$$
#
# ### Exercise 5.8 — `clipped_policy_loss`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 15 minutes
#
# Inputs: `logprobs` `[B, T]` (the current policy's log-probs of the sampled tokens, with gradient), `old_logprobs`
# `[B, T]` (the same tokens at rollout time: constants), `advantages` `[B, T]` (constants), `mask` `[B, T]`,
# `clip_range` $\epsilon$. Output: the 0-d loss above, averaged over real tokens, which `loss.backward()` can train
# with (the check compares its gradient too).
#
# *Hint:* zero the log-ratio on padding *before* `exp`: padding can hold junk, and an `inf` there turns the gradient
# into NaN even after masking (0 · inf).

# %%
def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    """PPO-clip loss to minimise, mean over the real tokens of mask [B, T] -> 0-d tensor."""
    ### BEGIN SOLUTION
    real = mask.bool()
    log_ratio = torch.where(real, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    advantages = torch.where(real, advantages.detach(), torch.zeros_like(advantages))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return torch.max(unclipped, clipped)[real].mean()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_clipped_policy_loss(clipped_policy_loss)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_clipped_policy_loss` names each of these when your function makes it:
#
# - the min of the two loss terms
# - the objective returned (not negated)
# - no clipping
# - only the clipped term
# - averaged over the padding too, or divided by B·T
# - the ratio the wrong way round
# - the mean of per-row means
# - no gradient reaches the log-probs
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ## 10. The clipped value loss
#
# The value head regresses on the returns of GAE. The historical TRL (after OpenAI's `baselines` `ppo2`) clips it the
# same way around the rollout's values, and halves it: the new value may move at most $c$ from the old one before the
# loss stops rewarding the move. It is not in the PPO paper, and Engstrom et al., 2020 (*Implementation Matters in
# Deep Policy Gradients: A Case Study on PPO and TRPO*) found that it does not always help; we keep it for fidelity
# to the recipe.
#
# ### Exercise 5.9 — `clipped_value_loss`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# Inputs: `values` `[B, T]` (current predictions, with gradient), `old_values` `[B, T]` (at rollout time), `returns`
# `[B, T]` (the targets), `mask` `[B, T]`, `clip_range_value` $c$. Output: the 0-d loss
#
# $$\mathcal{L}_{\text{value}} = \frac12 \cdot \frac{1}{n}\sum_{\text{real } t} \max\big((V_t - R_t)^2,\;
# (V^{\text{clip}}_t - R_t)^2\big), \qquad V^{\text{clip}}_t = V^{\text{old}}_t + \operatorname{clip}(V_t -
# V^{\text{old}}_t, -c, c).$$
#
# *Hint:* clip the *change* of the value around the old value, not the value itself.

# %%
def clipped_value_loss(values, old_values, returns, mask, clip_range_value=0.2):
    """0.5 * mean over real tokens of max((v - R)^2, (v_clip - R)^2), v_clip within c of old_values -> 0-d."""
    ### BEGIN SOLUTION
    real = mask.bool()
    old_values, returns = old_values.detach(), returns.detach()
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    worst = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * worst[real].mean()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_clipped_value_loss(clipped_value_loss)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_clipped_value_loss` names each of these when your function makes it:
#
# - the value clipped around 0 instead of its change
# - min instead of max of the two squared errors
# - the ½ missing
# - no clipping, or only the clipped error
# - averaged over the padding too, or divided by B·T
# - no gradient reaches the values
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ## 11. One PPO update
#
# `collect_rollout` runs sections 2–7 for a batch; `ppo_update` runs `ppo_epochs` passes over shuffled
# mini-batches, whitening advantages per mini-batch, with loss = policy loss + `vf_coef` × value loss,
# gradient clipping, and a guard that skips a mini-batch whose mean ratio explodes. Both are the package's; they
# use the same formulas as your functions. The update trains a **copy** of the policy, so the cells above still hold
# when you run them again.

# %%
from accelerate import Accelerator

ppo_config = PPOConfig(batch_size=8, mini_batch_size=4, ppo_epochs=4, seed=0)  # PPOConfig's class default learning
# rate, 5e-5 (the tiny profile's recipe trains with 2e-4)
updated = copy.deepcopy(policy)  # the copy that this section trains; `policy` stays the SFT model + a zero head
accelerator = Accelerator()
optimizer = torch.optim.Adam(updated.parameters(), lr=ppo_config.learning_rate)
updated_prepared, optimizer = accelerator.prepare(updated, optimizer)
rollout = collect_rollout(updated, reference, tokenizer, reward_model.score, prompts, kl_coef=0.2, config=ppo_config, step=0)
print(f"rollout: mean score {rollout.scores.mean():+.3f}, KL {(rollout.kl * rollout.response_mask).sum(1).mean():.3f} "
      "(exactly 0: nothing has moved yet)")
stats = ppo_update(updated_prepared, optimizer, accelerator, rollout, ppo_config, step=0)
print("statistics of the update (means over its 4 epochs x 2 mini-batches):")
for key in ["policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl", "ratio_mean", "value_clip_fraction"]:
    print(f"  {key:20s} {stats[key]:+.4f}")

# %%
with torch.no_grad():
    new_logprobs, _, new_values = response_logprobs_and_values(accelerator.unwrap_model(updated_prepared),
                                                                rollout.query_ids, rollout.query_mask,
                                                                rollout.response_ids, rollout.response_mask)
m = rollout.response_mask
eps = ppo_config.clip_range
ratio = torch.exp(new_logprobs - rollout.logprobs)[m.bool()]
outside = ((ratio < 1 - eps) | (ratio > 1 + eps)).float().mean().item()
print(f"per-token ratio pi_new / pi_old after the update: from {ratio.min():.2f} to {ratio.max():.2f}; "
      f"{outside:.0%} of the tokens lie outside [{1 - eps:.1f}, {1 + eps:.1f}]")
# (not a KL estimate: these responses were sampled from the old policy, so log p_new - log p_ref can average < 0)
moved = ((new_logprobs - rollout.logprobs) * m).sum(1)
print(f"change of each response's log-probability (nats): {moved}")
print(f"mean absolute change: {moved.abs().mean():.2f} nats; the most a response could move if every token stayed "
      f"inside the clip range: {m.sum(1).max() * math.log(1 + eps):.2f} nats")
high, low = rollout.advantages.sum(1).argmax(), rollout.advantages.sum(1).argmin()
print(f"the response with the highest advantage got more likely: {moved[high]:+.3f} nats")
print(f"the one with the lowest got less likely:                 {moved[low]:+.3f} nats")
print("values moved off zero:", new_values[0, :4])
assert moved[high] > moved[low]

# %% [markdown]
# **What clipping bounds, and what it does not.** The outputs above show a mean ratio well away from 1, a large share
# of clipped tokens, tokens whose ratio ended far outside $[1-\epsilon, 1+\epsilon]$, and whole responses whose
# log-probability moved by several nats — far more than $\log(1.2)$ per token. That does not mean clipping is broken:
# it promises less than "stay within ε".
#
# * **It removes the incentive, per token, for this batch.** Once a token's ratio is past $1+\epsilon$ (with
#   $\hat A > 0$) or below $1-\epsilon$ (with $\hat A < 0$), that token adds no gradient during the remaining epochs on
#   this batch.
# * **It does not bound the ratio itself.** The parameters are shared: a step taken for one mini-batch moves the
#   tokens of the other, and the tokens whose gradient is already 0. Adam's first steps move each weight by about the
#   learning rate whatever the size of its gradient (Huang et al., 2023, measured how much more PyTorch's Adam moves
#   early in training than TensorFlow's: section "PyTorch Adam optimizer numerical issues w.r.t RLHF"), so one step
#   can carry a token well past $1 \pm \epsilon$ — and on the favourable side nothing pulls it back.
# * **It does not bound a whole response.** A response's log-probability is a sum over up to 16 tokens, each of which
#   can move.
# * **It does not bound the movement across epochs.** In epochs 2–4, tokens whose own gradient is 0 keep moving with
#   the gradients of the others. `ratio_mean`, `clip_fraction` and `approx_kl` are measured on each mini-batch before
#   its step and averaged over all of them, so they include what the earlier epochs already did.
#
# What keeps the policy near the reference over a run is the KL penalty in the reward, a small learning rate and few
# epochs; what warns you is watching `approx_kl` and `clip_fraction` (the historical TRL also skipped a mini-batch
# whose mean ratio exceeded `ratio_threshold`). Eight responses with four epochs is a harsh setting; notebook 06
# trains on larger batches.
#
# ## 12. Controlling β
#
# A fixed β (TRL's later trainer used 0.05), or the adaptive controller of Ziegler et al., 2019 (*Fine-Tuning
# Language Models from Human Preferences*, section 2.2), which moves β in proportion to how far the measured KL per
# response is from a target.
#
# ### Exercise 5.10 — `adaptive_kl_update`
# **Difficulty** ●○○○○ · **Importance** ●●●●○ · about 5 minutes
#
# Inputs (all numbers): the current `beta`, the `kl` measured on a batch (nats per response, the mean over the batch
# of each response's summed KL), the `target` KL, the `horizon` (in samples: how slowly β reacts) and `n_steps` (the
# samples in the batch). Output: the new β,
#
# $$e = \operatorname{clip}\Big(\frac{\text{KL}}{\text{target}} - 1,\; -0.2,\; 0.2\Big), \qquad
# \beta \leftarrow \beta\,\Big(1 + e \cdot \frac{n_\text{steps}}{\text{horizon}}\Big).$$
#
# *Hint:* `min(max(x, -0.2), 0.2)` clips a Python float.

# %%
def adaptive_kl_update(beta, kl, target, horizon, n_steps):
    """One step of Ziegler et al.'s proportional controller -> the new beta (a float)."""
    ### BEGIN SOLUTION
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_adaptive_kl_update(adaptive_kl_update)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_adaptive_kl_update` names each of these when your function makes it:
#
# - the error not clipped to ±0.2
# - the sign flipped (β falls when the KL is too high)
# - n_steps ignored
# - the step not scaled by n_steps / horizon
# - the error as kl − target instead of kl / target − 1
# - the whole step clipped instead of the error
# - the factor returned instead of the new β
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Your controller on a simulated KL that starts below the target, jumps above it, then falls below again:

# %%
measured = [2.0] * 20 + [12.0] * 40 + [4.0] * 40
beta, betas = 0.2, []
for kl_value in measured:
    beta = adaptive_kl_update(beta, kl_value, target=6.0, horizon=1000, n_steps=64)
    betas.append(beta)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(measured, "k--", label="measured KL per response")
ax.axhline(6, color="grey", lw=0.8, label="target")
ax.set(xlabel="PPO step", ylabel="KL (nats)")
ax2 = ax.twinx(); ax2.plot(betas, color="tab:red", label="beta"); ax2.set_ylabel("beta", color="tab:red")
ax.legend(loc="upper left"); plt.title("adaptive KL: beta falls while KL < target, rises while KL > target"); plt.show()

# %% [markdown]
# ## 13. The implementation details that matter
#
# Each one is in the code, and each one has a source: Huang et al., 2023, *The N Implementation Details of RLHF with
# PPO* (its sections "General implementation details", "Reward model implementation details" and "Policy training
# implementation details"), Ziegler et al., 2019, and Schulman et al., 2017. The grouping below is ours:
#
# * **Reward model and value function read query + response; the reward is the last token's score** — `per_token_rewards`.
# * **Attention masks and correct position ids; prompts left-padded for generation** — `generate`, `response_logprobs_and_values`.
# * **Log-probs recomputed from `logits / temperature`** with the sampling temperature — `response_logprobs` (yours,
#   exercise 5.3; the package's in `rlhf_helpers.policy.logprobs`).
# * **Value head initialised to zero; no dropout** in policy, reference and value passes — `PolicyWithValueHead`; `response_logprobs` refuses a model with active dropout.
# * **Reward model output normalised** (mean 0, std 1 on samples of the reference policy) — `RewardModel.set_normalisation` (notebook 03).
# * **Per-token KL penalty; γ = 1, λ = 0.95; advantages whitened per mini-batch** — `PPOConfig`, `ppo_update`.
# * **Clipped value loss; adaptive KL; annealed learning rate; separate seeds per process** — `clipped_value_loss`, `AdaptiveKLController`, `PPOTrainer`.
# * **Optional EOS trick**: penalise responses that never end — `PPOConfig.missing_eos_penalty`.
#
# And the bugs users of RLHF libraries report most, with where this code avoids them:
#
# * **negative KL** — from top-k / top-p / min-length during sampling or from padding: we sample with `top_k=0, top_p=1` and mask; a KL that is not exactly 0 at step 0 is checked above;
# * **prompt tokens leaking into the response** when generation stops early — `generate` returns response tokens only (tested);
# * **pad = EOS** hides real EOS tokens — the tiny tokenizer has its own `<|pad|>`, and the code reads masks, never token ids;
# * **reward read from the wrong label** of a 2-class classifier — our reward model has a single scalar output;
# * **KL blow-up / mode collapse** ("great great great") — notebook 06 tabulates recorded runs with β too small and
#   with the penalty's sign flipped; notebook 07 shows reward hacking live.
#
# ## Key takeaways
#
# * RLHF is RL with one action per token: the score comes once, at the last real token, and the KL penalty at every
#   token. Every statistic and loss is taken over real tokens only; the padding must never count.
# * Everything starts from the response's log-probs: one pass over `[query | response]`, the logits at column $c$
#   scoring the token at $c + 1$, divided by the sampling temperature, with position ids counted from each row's first
#   real token. Any of the three done differently in two passes makes the KL nonzero at step 0.
# * GAE turns per-token rewards and values into advantages ($\hat A_t = \delta_t + \gamma\lambda\hat A_{t+1}$, nothing
#   after the response's end) and value targets ($\hat A_t + V_t$).
# * PPO's loss is REINFORCE with a baseline, an importance ratio to reuse a batch, and a pessimistic clip. The clip
#   removes the incentive to push a token's ratio past $1 \pm \epsilon$ within one batch's epochs; it does not bound
#   the ratio, a response's log-probability, or the movement across epochs.
# * The loss is the *max* of the negated terms; the value loss is clipped around the *old* value and halved.
# * The adaptive controller nudges β by at most $0.2 \cdot n/\text{horizon}$ per batch: slowly, on purpose.
#
# ## Self-check
#
# 1. A batch has responses of 4 and 16 tokens, padded to 16. Why must the score go to index `mask.sum(1) - 1` and not
#    to column 15?
#
#    <details><summary>Answer</summary>Column 15 is padding in the 4-token row: a score placed there is outside the
#    response. GAE zeroes the rewards on padding (the response has ended), so the score would vanish and that response
#    would be trained on its KL penalty alone.</details>
#
# 2. The value head is 0, γ = 1, λ = 0.95, and a 4-token response's only reward is its score r at the last token
#    (ignore the KL). What is the advantage of its first token?
#
#    <details><summary>Answer</summary>$\lambda^3 r \approx 0.857\, r$. With V = 0 every δ_t is the reward R_t, so
#    $\hat A_t = \sum_l \lambda^l R_{t+l}$, and the only reward is three tokens later.</details>
#
# 3. A token has advantage +1 and ratio 0.7, with ε = 0.2. Is its gradient zero?
#
#    <details><summary>Answer</summary>No. The minimum of 0.7·A and clip(0.7)·A = 0.8·A is 0.7·A, the unclipped
#    term, so the gradient raises the ratio. Clipping zeroes the gradient of a positive-advantage token only above
#    1 + ε.</details>
#
# 4. After one update the clip fraction is 0.4 and one response's log-probability rose by 15 nats. Is the clipping
#    broken?
#
#    <details><summary>Answer</summary>Not necessarily. Clipping stops a token's own gradient once it is past the
#    boundary; shared parameters, Adam's sign-like first steps and four epochs can still carry tokens far past it, and
#    a response sums up to 16 tokens. It is a signal to lower the learning rate or the epochs, or to watch approx-KL,
#    not evidence of a bug in the clip.</details>
#
# 5. KL = 12 with target 6, horizon 10,000, a batch of 64 and β = 0.2. What is the next β, and why so little?
#
#    <details><summary>Answer</summary>The error 12/6 − 1 = 1 is clipped to 0.2, so β ← 0.2 · (1 + 0.2 · 64/10,000) =
#    0.200256. The horizon is in samples: β needs thousands of samples to change by a lot, so one odd batch cannot
#    jerk it around.</details>
#
# 6. The policy's log-probs come from one function and the reference's from another. At step 0 their KL is not 0 on
#    batches whose queries have different lengths, and exactly 0 when every query has the same length. What does one
#    of the two functions get wrong?
#
#    <details><summary>Answer</summary>The left padding: the position ids (the default 0, 1, … instead of counting
#    from each row's first real token), or the attention mask. Without padding the default positions are the right
#    ones and there is nothing to mask, so the two functions agree; with it, one of them shifts or mixes in the
#    padding and scores the same tokens differently.</details>
#
# **Next: notebook 06** runs these pieces in a loop for a few minutes and measures what changed — with judges the
# policy never saw.
