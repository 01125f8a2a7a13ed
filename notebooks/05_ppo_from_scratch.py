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
# TRL no longer ships a PPO trainer or a value-head model (they were removed in 2026, TRL PR #7020), so this
# course's PPO is written from scratch on plain `transformers` and `torch`. This notebook takes it apart: every
# piece is a small function in `rlhf_helpers`, run here on a batch of 8 prompts with its output shown.
# Notebook 06 puts the pieces together in the training loop.
#
# **RLHF as reinforcement learning.** A *prompt* $x$ is the start state. Each *action* is a token $y_t$; the
# *state* is $x$ plus the tokens so far; the *episode* ends after the response (4–16 tokens here). The
# *policy* $\pi_\theta$ is the language model. The reward is the reward model's score $r_\phi(x, y)$ at the end,
# minus a KL penalty at every token that keeps $\pi_\theta$ close to the frozen SFT model $\pi_{\text{ref}}$:
#
# $$R_t = -\beta \,\big(\log \pi_\theta(y_t \mid x, y_{<t}) - \log \pi_{\text{ref}}(y_t \mid x, y_{<t})\big) \;+\; [t = T]\; r_\phi(x, y).$$
#
# **PPO** (Schulman et al., 2017) improves the policy with several gradient steps on each batch of samples,
# clipping the probability ratio so that no step moves far from the policy that collected the samples.

# %%
import copy
import inspect

import matplotlib.pyplot as plt
import torch

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.policy import load_policy
from rlhf_helpers.policy.generation import generate, truncate_responses
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.ppo import collect_rollout, ppo_update
from rlhf_helpers.ppo.advantages import compute_gae, masked_mean, masked_whiten
from rlhf_helpers.ppo.kl import AdaptiveKLController, kl_penalty, per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, entropy_from_logits
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values
from rlhf_helpers.reward.model import load_reward_model

torch.manual_seed(0)
torch.set_printoptions(precision=3, sci_mode=False, linewidth=140)
config = get_config()
sft, tokenizer = load_policy(config.name)
policy = PolicyWithValueHead(copy.deepcopy(sft))   # trained: the LM + a new value head
reference = copy.deepcopy(sft).requires_grad_(False)  # frozen: never updated
reward_model = load_reward_model(config.name)
reward_model.check_same_tokenizer(tokenizer)
prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="train")["input_ids"][:8]]
print([tokenizer.decode(p) for p in prompts])

# %% [markdown]
# ## 1. The policy and its value head
#
# The value $V(x, y_{<t})$ predicts the return still to come; PPO uses it as a baseline. Like the historical TRL
# `AutoModelForCausalLMWithValueHead`, ours is one linear layer on the last hidden state of the same GPT-2
# (`rlhf_helpers.ppo.value_head`). It starts at **zero** (so early advantages are just the rewards) and nothing has
# dropout (every pass must see the same network).

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
responses = tokenizer.batch_decode([r[m.bool()] for r, m in zip(response_ids, response_mask)])
for q, r in zip(out.prompts, responses):
    print(f"  {q!r} -> {r!r}")

# %% [markdown]
# ## 3. Log-probabilities and values
#
# One forward pass over `[query | response]` gives, for every response token, its log-probability under the
# policy and the value of the state before it. The same pass through the frozen reference gives
# $\log\pi_{\text{ref}}$. The logits are divided by the **sampling temperature** first (Huang et al. 2023):
# otherwise the "old" log-probs would not be those of the distribution the tokens came from.

# %%
with torch.no_grad():
    logprobs, logits, values = response_logprobs_and_values(policy, query_ids, query_mask, response_ids, response_mask)
    ref_logprobs = response_logprobs(reference, query_ids, query_mask, response_ids, response_mask)
print("log pi(y_t)     row 0:", logprobs[0, :6])
print("log pi_ref(y_t) row 0:", ref_logprobs[0, :6])
print("values          row 0:", values[0, :6], " <- the value head starts at exactly 0")
print("entropy of the policy per token:", masked_mean(entropy_from_logits(logits), response_mask).item())
assert torch.equal(logprobs, ref_logprobs), "before any update, policy and reference are the same network"

# %% [markdown]
# Before the first update the policy *is* the reference, so every log-ratio is exactly 0. A KL that is not 0 at
# step 0 is a bug: dropout left on, a different temperature, padding counted as tokens.
#
# ## 4. The KL penalty: two estimators
#
# The KL of a response is a sum over its tokens, and we only have samples, so each token gets an estimate
# (Schulman, 2020, *Approximating KL divergence*). With $\log r = \log\pi_{\text{ref}} - \log\pi$:
#
# * **k1** $= -\log r$: unbiased, but single tokens can be negative and it is noisy;
# * **k3** $= (r - 1) - \log r$: also unbiased, never negative, lower variance when the models are close.
#
# To see them differ, compare the SFT model with a slightly different policy — the SFT model at temperature 1.3.

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
assert (k3 >= 0).all()

# %% [markdown]
# ## 5. Scores and per-token rewards
#
# The reward model reads the query **and** the response (the whole text) and returns one number, already
# normalised to mean 0 / std 1 on samples of the SFT policy (notebook 03). It lands on the **last** response
# token; every token also pays $-\beta \cdot \text{KL}_t$. That answers a common question, "why is the KL per
# token but the score at the end?": the score judges the whole response, but the KL is a sum over tokens, so
# each token can be charged for its own share.

# %%
texts = [q + r for q, r in zip(out.prompts, responses)]
scores = reward_model.score(texts)
for text, score in zip(texts[:4], scores[:4]):
    print(f"{score:+.2f}  {text!r}")
# pretend the policy has moved a little, so that the KL is not zero
moved = logprobs + 0.05 * torch.randn_like(logprobs) * response_mask
rewards, kl = per_token_rewards(scores, moved, ref_logprobs, response_mask, kl_coef=0.2, estimator="k1")
print("\nrow 0 (4 tokens):   ", rewards[0, :6])
print("row 2 (8 tokens):   ", rewards[2, :10])
print("score of row 2:", round(scores[2].item(), 3), "| KL penalty of row 2:", (-0.2 * kl[2] * response_mask[2]).sum().item())

# %% [markdown]
# ## 6. Advantages: GAE
#
# The advantage $\hat A_t$ says how much better the rest of the episode went than the value head expected.
# Generalised Advantage Estimation (Schulman et al., 2016) mixes the one-step errors
# $\delta_t = R_t + \gamma V_{t+1} - V_t$ with weight $(\gamma\lambda)^k$:
# $\hat A_t = \sum_k (\gamma\lambda)^k \delta_{t+k}$, and the value target is $\hat A_t + V_t$. With $\gamma = 1$ (the
# episode is short and only its end is scored) and $\lambda = 0.95$. With $V = 0$ and $\lambda = 1$ the advantage is
# the reward-to-go:

# %%
print(inspect.getsource(compute_gae))

# %%
advantages, returns = compute_gae(rewards, values, response_mask, gamma=1.0, lam=1.0)
reward_to_go = rewards.flip(1).cumsum(1).flip(1) * response_mask
assert torch.allclose(advantages, reward_to_go, atol=1e-6)
advantages, returns = compute_gae(rewards, values, response_mask, gamma=1.0, lam=0.95)
print("advantages row 2:", advantages[2, :8])
white = masked_whiten(advantages, response_mask)
print(f"whitened over real tokens: mean {masked_mean(white, response_mask):+.3f}, "
      f"std {white[response_mask.bool()].std():.3f}; padding stays {white[0, 4:].abs().max():.0f}")

# %% [markdown]
# **Whitening** (subtracting the mean and dividing by the std of the advantages over the real tokens of a
# mini-batch) keeps the step size independent of the reward scale.
#
# ## 7. The clipped surrogate loss
#
# With the ratio $\rho_t = \pi_\theta(y_t) / \pi_{\theta_\text{old}}(y_t)$, PPO maximises
# $\min(\rho_t \hat A_t,\ \text{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_t)$. As a loss to *minimise* it is
# $\max(-\rho_t \hat A_t,\ -\text{clip}(\rho_t)\hat A_t)$ — the sign question users ask about. Once the ratio has
# moved $\epsilon$ in the direction the advantage wants, the loss goes flat and the gradient is zero:

# %%
ratios = torch.linspace(0.5, 1.5, 201)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
for ax, advantage in zip(axes, [1.0, -1.0]):
    losses = []
    for rho in ratios:
        lp = torch.log(rho).view(1, 1)
        loss, _ = clipped_policy_loss(lp, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), clip_range=0.2)
        losses.append(loss.item())
    ax.plot(ratios, losses)
    ax.axvspan(0.8, 1.2, color="grey", alpha=0.15, label="clip range [0.8, 1.2]")
    ax.set(title=f"advantage {advantage:+.0f}", xlabel="ratio pi / pi_old")
    ax.legend()
axes[0].set_ylabel("clipped policy loss")
plt.tight_layout(); plt.show()

# %% [markdown]
# The value loss is clipped the same way around the rollout's values (as the historical TRL and OpenAI's
# code did), and halved: $\tfrac12 \max\big((V - R)^2, (\text{clip}(V, V_\text{old} \pm \epsilon_v) - R)^2\big)$.
#
# ## 8. One PPO update
#
# `collect_rollout` runs steps 2–6 for a batch; `ppo_update` runs `ppo_epochs` passes over shuffled
# mini-batches, whitening advantages per mini-batch, with loss = policy loss + `vf_coef` × value loss,
# gradient clipping, and a guard that skips a mini-batch whose mean ratio explodes.

# %%
from accelerate import Accelerator

ppo_config = PPOConfig(batch_size=8, mini_batch_size=4, ppo_epochs=4, seed=0)  # the default learning rate, 5e-5
accelerator = Accelerator()
optimizer = torch.optim.Adam(policy.parameters(), lr=ppo_config.learning_rate)
policy_prepared, optimizer = accelerator.prepare(policy, optimizer)
rollout = collect_rollout(policy, reference, tokenizer, reward_model.score, prompts, kl_coef=0.2, config=ppo_config, step=0)
print(f"rollout: mean score {rollout.scores.mean():+.3f}, KL {(rollout.kl * rollout.response_mask).sum(1).mean():.3f} (exactly 0: nothing has moved yet)")
stats = ppo_update(policy_prepared, optimizer, accelerator, rollout, ppo_config, step=0)
for key in ["policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl", "ratio_mean", "value_clip_fraction"]:
    print(f"  {key:20s} {stats[key]:+.4f}")

# %%
with torch.no_grad():
    new_logprobs, _, new_values = response_logprobs_and_values(policy, rollout.query_ids, rollout.query_mask,
                                                                rollout.response_ids, rollout.response_mask)
m = rollout.response_mask
# (not a KL estimate: these responses were sampled from the old policy, so log p_new - log p_ref can average < 0)
print(f"after one update, the 8 responses' log-probs moved by {((new_logprobs - rollout.logprobs) * m).sum(1).abs().mean():.2f} nats on average")
high, low = rollout.advantages.sum(1).argmax(), rollout.advantages.sum(1).argmin()
print(f"the response with the highest advantage got more likely: {((new_logprobs - rollout.logprobs) * m).sum(1)[high]:+.3f} nats")
print(f"the one with the lowest got less likely:                 {((new_logprobs - rollout.logprobs) * m).sum(1)[low]:+.3f} nats")
print("values moved off zero:", new_values[0, :4])
assert ((new_logprobs - rollout.logprobs) * m).sum(1)[high] > ((new_logprobs - rollout.logprobs) * m).sum(1)[low]

# %% [markdown]
# ## 9. Controlling β
#
# A fixed β (TRL's later trainer used 0.05) or the adaptive controller of Ziegler et al. (2019), which moves β
# in proportion to how far the measured KL per response is from a target:
# $e = \text{clip}(\text{KL}/\text{target} - 1, -0.2, 0.2)$, $\beta \leftarrow \beta\,(1 + e \cdot n/\text{horizon})$,
# with $n$ the rollouts in the batch. Simulated on a KL that first overshoots, then undershoots:

# %%
controller = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=1000)
measured = [2.0] * 20 + [12.0] * 40 + [4.0] * 40
betas = []
for kl_value in measured:
    controller.update(kl_value, n_steps=64)
    betas.append(controller.value)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(measured, "k--", label="measured KL per response")
ax.axhline(6, color="grey", lw=0.8)
ax.set(xlabel="PPO step", ylabel="KL (nats)")
ax2 = ax.twinx(); ax2.plot(betas, color="tab:red", label="beta"); ax2.set_ylabel("beta", color="tab:red")
ax.legend(loc="upper left"); plt.title("adaptive KL: beta rises while KL > target, falls while KL < target"); plt.show()

# %% [markdown]
# ## 10. The implementation details that matter
#
# Each one is in the code, and each one has a source (Huang et al. 2023, *The N Implementation Details of RLHF
# with PPO*; Ziegler et al. 2019; Schulman et al. 2017):
#
# 1. **Reward model and value function read query + response; the reward is the last token's score** — `per_token_rewards`.
# 2. **Attention masks and correct position ids; prompts left-padded for generation** — `generate`, `response_logprobs_and_values`.
# 3. **Log-probs recomputed from `logits / temperature`** with the sampling temperature — `response_logprobs`.
# 4. **Value head initialised to zero; no dropout** in policy, reference and value passes — `PolicyWithValueHead`; `response_logprobs` refuses a model with active dropout.
# 5. **Reward model output normalised** (mean 0, std 1 on samples of the reference policy) — `RewardModel.set_normalisation` (notebook 03).
# 6. **Per-token KL penalty; γ = 1, λ = 0.95; advantages whitened per mini-batch** — `PPOConfig`, `ppo_update`.
# 7. **Clipped value loss; adaptive KL; annealed learning rate; separate seeds per process** — `clipped_value_loss`, `AdaptiveKLController`, `PPOTrainer`.
# 8. **Optional EOS trick**: penalise responses that never end — `PPOConfig.missing_eos_penalty`.
#
# And the bugs users of RLHF libraries report most, with where this code avoids them:
#
# * **negative KL** — from top-k / top-p / min-length during sampling or from padding: we sample with `top_k=0, top_p=1` and mask; a KL that is not exactly 0 at step 0 is checked above;
# * **prompt tokens leaking into the response** when generation stops early — `generate` returns response tokens only (tested);
# * **pad = EOS** hides real EOS tokens — the tiny tokenizer has its own `<|pad|>`, and the code reads masks, never token ids;
# * **reward read from the wrong label** of a 2-class classifier — our reward model has a single scalar output;
# * **KL blow-up / mode collapse** ("great great great") — notebook 06 shows what happens when β is too small, and when the penalty has the wrong sign.
#
# **Next:** notebook 06 runs these pieces in a loop for a few minutes and measures what changed.
