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
# # 06 — The RLHF training loop
#
# Notebook 05 built each piece of PPO; here they run together. Starting from the shipped SFT policy and the
# shipped reward model, one PPO step is:
#
# **rollout** (sample responses to IMDb prompts) → **score** (reward model, normalised) → **forward passes**
# (log-probs, values, reference log-probs) → **per-token rewards and GAE** → **PPO epochs** over mini-batches →
# **KL controller** update.
#
# You write that step yourself (exercises 6.1 and 6.2), check that it equals one step of the package's
# `PPOTrainer` on the same seed and batch, then let the trainer repeat it for a few minutes — with checkpoints, from
# which a killed run resumes on the same trajectory.
#
# Did it work? The reward model's score is what PPO optimised, so it cannot be the evidence. We measure on
# **held-out prompts** with two **independent judges** that PPO never saw — VADER (a sentiment lexicon) and a
# bag-of-words classifier trained on IMDb labels — plus the KL to the reference and the perplexity of the
# samples under the reference (how unlikely the SFT model finds the new text).
#
# **Learning objectives.** After this notebook you can
# 1. write one PPO step — rollout, score, advantages, update — from the pieces of notebook 05, and show it equals the
#    package's trainer step on the same seed and batch;
# 2. run PPO with checkpoints and resume an interrupted run on the same trajectory;
# 3. read the training statistics (score, KL, β, entropy, clip fraction, explained variance) and tell a healthy run
#    from a broken one;
# 4. evaluate a policy on held-out prompts with judges it never saw, and name what each number costs.
#
# **Prerequisites:** notebook 05 (every function used here), notebook 03 (the reward model and its normalisation).
# **Time:** about 60 minutes of work (the two exercises are budgeted at 20 and 30 minutes), plus the 2–3-minute
# training run (section 4) and a minute of evaluation, on 2 CPU
# cores. **Takes from earlier notebooks:** the shipped SFT policy (02) and reward model (03), the prompts (01).

# %%
import contextlib
import copy
import dataclasses
import json
import os
import tempfile

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import clear_output, display

from rlhf_helpers import build_dataset, exercises, get_config
from rlhf_helpers.config import PPOConfig
from rlhf_helpers.core.assets import shipped_results_dir
from rlhf_helpers.core.run_card import read_run_card
from rlhf_helpers.core.thread_invariance import numerics_threads
from rlhf_helpers.course import budget, in_ci
from rlhf_helpers.evaluation import evaluate_policy
from rlhf_helpers.evaluation.judges import default_judges
from rlhf_helpers.policy import generate, load_policy
from rlhf_helpers.policy.generation import sample_responses
from rlhf_helpers.policy.logprobs import response_logprobs
from rlhf_helpers.ppo import PPOTrainer, Rollout, sample_prompt_batch
from rlhf_helpers.ppo.advantages import compute_gae, masked_whiten
from rlhf_helpers.ppo.kl import per_token_rewards
from rlhf_helpers.ppo.losses import clipped_policy_loss, clipped_value_loss
from rlhf_helpers.ppo.rollout import sampling_seeds
from rlhf_helpers.ppo.trainer import minibatch_seed
from rlhf_helpers.ppo.value_head import PolicyWithValueHead, response_logprobs_and_values
from rlhf_helpers.reward.model import load_reward_model

torch.manual_seed(0)
pd.set_option("display.max_colwidth", 90)
config = get_config()
sft, tokenizer = load_policy(config.name)
reward_model = load_reward_model(config.name)
reward_model.check_same_tokenizer(tokenizer)
judges = default_judges(config)  # VADER + a bag-of-words classifier fitted on the IMDb train rows
train_prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
eval_prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:256]]
workdir = tempfile.TemporaryDirectory(prefix="ppo-")  # every run of this notebook writes under here; removed at exit
print(f"{len(train_prompts)} training prompts, {len(eval_prompts)} held-out prompts for evaluation")

# %% [markdown]
# ## 1. Before: the SFT policy
#
# 256 held-out prompts, one response each, sampled as in training (4–16 tokens, full distribution).

# %%
before, before_samples = evaluate_policy(sft, sft, tokenizer, eval_prompts, reward_model.score, judges)
pd.Series(before).round(3).to_frame("SFT policy")

# %% [markdown]
# The SFT policy writes what IMDb contains, positive and negative alike: the bag-of-words judge calls about half
# of its reviews positive; VADER, which needs explicitly positive words and reads these short fragments more
# strictly, fewer. The KL of the SFT policy to itself is 0 by definition.
#
# ## 2. The configuration
#
# Every default has a comment and, where it exists, the value of the historical TRL IMDb recipe beside it
# (`rlhf_helpers.config.PPOConfig`). `PPOConfig`'s defaults change a few: a smaller batch (64 rollouts: more
# updates per minute on a CPU), a larger learning rate (5e-5: a 5M-parameter model is not the 124M GPT-2), and bf16
# autocast where the CPU has bf16 instructions (`mixed_precision="auto"`: AVX512-BF16 or AMX, else float32), which
# halves the time of every forward and backward pass on such cores. The tiny profile then runs the faster recipe
# described below (`get_config("tiny").ppo`).
#
# How `PPOConfig`'s defaults were chosen — 5-minute runs from the shipped SFT policy, evaluated as in this notebook
# (256 held-out prompts; bag-of-words judge / VADER / KL per response):
#
# | change from the defaults | bag of words | VADER | KL | what happened |
# |---|---|---|---|---|
# | none, float32 (115 steps) | 82% | 66% | 4.8 | steady, still climbing when time ran out |
# | none, bf16 (179 steps) — **`PPOConfig`'s defaults** | 90% | 71% | 5.1 | the same curve, further along |
# | learning rate 1e-4 | 82% | 69% | 6.4 | the KL budget goes on noise: KL 6 reached by step 40 at a lower score |
# | β = 0.05, KL target 5, horizon 1,000 | 93% | 87% | 11.9 | more reward, twice the KL: the controller was too slow to hold β |
# | the KL penalty's sign flipped (a bug) | 91% | 88% | 100 | reward hacking: "best best ۿ� splend nicely splend", perplexity 68,000 |
#
# The last row is a real accident of development, kept because it shows what the judges alone would miss: the
# "reviews" were byte salad that the reward model liked, and only the KL and the perplexity under the reference
# give it away (notebook 07 tells that story in full). The defaults themselves vary from run to run, because a
# 5-minute budget buys as many steps as the machine's load allows: three later 5-minute runs with these defaults on
# this machine took 116–126 steps and reached 84–86% on the bag-of-words judge. Read the table as tendencies.
#
# **This notebook trains with the tiny profile's faster recipe** (`benchmarks/ppo_time_to_result.py` measures it)
# — the fast path (the response passes on real tokens only, the LM head only where it is read, sampling with a
# preallocated KV cache, one log-softmax, fused Adam; the command line also scores the rollouts in bf16), one PPO
# epoch instead of four, learning rate 2e-4 — for a fixed **150 steps** (the learning rate still anneals over the
# default 200). In the benchmark this recipe reaches in 2.5 minutes what `PPOConfig`'s defaults reach in 5. A fixed
# number of steps, not minutes, makes the result independent of the machine's speed (a time budget buys as many
# steps as the CPU allows). The tests run the same recipe for 60 steps.

# %%
ppo_config = dataclasses.replace(config.ppo, seed=config.seed, max_minutes=None)  # the tiny profile's: the fast recipe
steps_this_run = budget(learner=150, ci=60)
pd.Series({k: str(v) for k, v in vars(ppo_config).items()}).to_frame("value")

# %% [markdown]
# ## 3. One PPO step, written out
#
# `PPOTrainer.train` repeats `PPOTrainer.step`. Before using it, write the step yourself from the functions of
# notebook 05 (you wrote each of them there; here the package's versions, which your solutions matched, are
# imported). The trainer we will compare with is built first: it also sets this process's `accelerate` state
# (bf16 autocast on CPUs with bf16 instructions, else float32: the cell says which), which your update
# uses too.

# %%
def new_trainer(settings, directory):
    """A fresh PPOTrainer from the shipped SFT policy: the policy gets a new value head, the reference is frozen."""
    return PPOTrainer(PolicyWithValueHead(copy.deepcopy(sft)), copy.deepcopy(sft), tokenizer, reward_model.score,
                      train_prompts, settings, directory, run_config=config.to_dict())


step_config = PPOConfig(seed=config.seed)  # PPOConfig's defaults (the plain path, 4 epochs) for the comparison
race = new_trainer(step_config, tempfile.mkdtemp(dir=workdir.name))
print("accelerate's mixed precision in this process:", race.accelerator.mixed_precision)

# %% [markdown]
# ### Exercise 6.1 — `rollout`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 20 minutes
#
# Steps 1–4 of a PPO step for a batch of `prompts` (token-id lists), returning a `Rollout` (its fields and shapes:
# `rlhf_helpers.ppo.rollout.Rollout`; B rollouts, P prompt tokens left-padded, R response tokens right-padded):
#
# 1. **sample** with `sample_responses(policy.lm, tokenizer, prompts, min_tokens, max_tokens, length_seed=..., temperature,
#    top_k, top_p, stop_at_eos, generator=...)`, seeded by `sampling_seeds(config.seed, step)` — the seeds make the step
#    a pure function of (seed, step), which is what lets a killed run resume on the same trajectory;
# 2. **score** the whole text, query + response, with `reward_fn` (a `[B]` tensor of normalised scores);
# 3. **log-probs and values** of the response tokens under the policy (`response_logprobs_and_values`) and log-probs under
#    the frozen reference (`response_logprobs`), at `config.temperature`, inside `autocast()` (like sampling);
# 4. **per-token rewards** $R_t = -\beta\,\mathrm{KL}_t + [t = T]\,r$ (`per_token_rewards`) and **GAE** (`compute_gae`).
#
# Use `raw_scores = scores` (the trainer keeps the scores before its optional penalties there; they are off by default).
# *Hint:* everything here is data for the update — no gradients (the check calls you under `torch.no_grad()`).

# %%
def rollout(policy, reference, tokenizer, reward_fn, prompts, kl_coef, config, step, autocast=None):
    """Steps 1-4 of a PPO step for `prompts` (B token-id lists) -> Rollout ([B, P] queries, [B, R] responses)."""
    ### BEGIN SOLUTION
    autocast = autocast or contextlib.nullcontext
    token_seed, length_seed = sampling_seeds(config.seed, step)
    with autocast():  # 1. sample: 4-16 tokens per prompt, from the full distribution (top_k 0, top_p 1)
        out = sample_responses(policy.lm, tokenizer, prompts, config.response_min_tokens, config.response_max_tokens,
                               length_seed=length_seed, temperature=config.temperature, top_k=config.top_k,
                               top_p=config.top_p, stop_at_eos=config.stop_at_eos,
                               generator=torch.Generator().manual_seed(token_seed))
    q, qm, r, rm = out.query_ids, out.query_mask, out.response_ids, out.response_mask
    # 2. score: the reward model reads the whole text, at its own precision (outside autocast)
    scores = torch.as_tensor(reward_fn([p + t for p, t in zip(out.prompts, out.texts)]), dtype=torch.float32)
    with autocast():  # 3. the "old" log-probs and values, and the frozen reference's log-probs
        logprobs, _, values = response_logprobs_and_values(policy, q, qm, r, rm, config.temperature)
        ref_logprobs = response_logprobs(reference, q, qm, r, rm, config.temperature)
        # 4. -kl_coef * KL_t on every token, the score on the last real one; then GAE
        rewards, kl = per_token_rewards(scores, logprobs, ref_logprobs, rm, kl_coef, config.kl_estimator)
        advantages, returns = compute_gae(rewards, values, rm, config.gamma, config.lam)
    return Rollout(q, qm, r, rm, logprobs, ref_logprobs, values, scores, scores, rewards, kl, advantages, returns,
                   out.prompts, out.texts)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_rollout(rollout)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_rollout` names each of these when your function makes it:
#
# - the per-token KL penalty with the wrong sign
# - GAE with λ = 1
# - the response scored alone instead of query + response
# - any other field that differs, named with the function that computes it
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 6.2 — `ppo_update`
# **Difficulty** ●●●●○ · **Importance** ●●●●● · about 30 minutes
#
# Step 5: `config.ppo_epochs` passes over the rollout in shuffled mini-batches of `config.mini_batch_size`. One
# `torch.Generator` seeded with `minibatch_seed(config.seed, step)` draws a fresh `torch.randperm(config.batch_size)`
# for every epoch. For each mini-batch:
#
# 1. whiten its advantages over its real tokens (`masked_whiten`);
# 2. recompute log-probs and values (`response_logprobs_and_values`, inside `accelerator.autocast()`);
# 3. loss = clipped policy loss + `config.vf_coef` × clipped value loss (`clipped_policy_loss` with `config.clip_range`,
#    `clipped_value_loss` with `config.clip_range_value`, against the rollout's old log-probs, values and returns);
# 4. `accelerator.backward(loss)`; if the policy loss's `ratio_mean` statistic is above `config.ratio_threshold`, throw
#    the gradient away and skip the mini-batch (the guard); else clip the gradient norm to `config.max_grad_norm`,
#    `optimizer.step()`, `optimizer.zero_grad()`.
#
# Return a dict with the mean `policy_loss` and `value_loss` over the mini-batches that stepped. Keep the policy in
# `eval()` mode: gradients still flow, and no dropout changes the network between the rollout and the update.

# %%
def ppo_update(policy, optimizer, accelerator, rollout, config, step):
    """Step 5 of a PPO step: config.ppo_epochs passes of shuffled mini-batches -> dict of mean losses."""
    ### BEGIN SOLUTION
    policy.eval()
    generator = torch.Generator().manual_seed(minibatch_seed(config.seed, step))
    policy_losses, value_losses = [], []
    for _ in range(config.ppo_epochs):
        order = torch.randperm(config.batch_size, generator=generator)
        for start in range(0, config.batch_size, config.mini_batch_size):
            idx = order[start : start + config.mini_batch_size]
            mask = rollout.response_mask[idx]
            advantages = masked_whiten(rollout.advantages[idx], mask)  # per mini-batch
            with accelerator.autocast():
                logprobs, _, values = response_logprobs_and_values(
                    policy, rollout.query_ids[idx], rollout.query_mask[idx], rollout.response_ids[idx], mask,
                    config.temperature)
            pg_loss, pg_stats = clipped_policy_loss(logprobs, rollout.logprobs[idx], advantages, mask,
                                                    config.clip_range)
            vf_loss, _ = clipped_value_loss(values, rollout.values[idx], rollout.returns[idx], mask,
                                            config.clip_range_value)
            accelerator.backward(pg_loss + config.vf_coef * vf_loss)
            if pg_stats["ratio_mean"] > config.ratio_threshold:  # moved too far from the rollout: garbage gradient
                optimizer.zero_grad(set_to_none=True)
                continue
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            policy_losses.append(pg_loss.item())
            value_losses.append(vf_loss.item())
    return {"policy_loss": sum(policy_losses) / len(policy_losses),
            "value_loss": sum(value_losses) / len(value_losses)}
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_ppo_update(ppo_update)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_ppo_update` names each of these when your function makes it:
#
# - the permutation: the rollouts not shuffled, the first epoch's order repeated, or another generator
# - the advantages whitened once over the whole rollout instead of per mini-batch
# - the advantages not whitened
# - the policy loss differs (its gradient, with the value loss's agreeing)
# - the value loss differs, lacks config.vf_coef, or is missing
# - gradients accumulated across mini-batches (no `zero_grad`)
# - the gradient norm not clipped, or clipped to another norm
# - one epoch only, or another number of optimiser steps
# - no optimiser step at all
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Your step against the trainer's
#
# The same starting weights (the SFT policy, a new zero value head), the same seed, the same batch of 64 prompts, the
# same β: one step of `PPOTrainer` and one step of your two functions. The trainer adds what a long run needs
# (sharding over processes, timers, statistics, the KL controller's update, the learning-rate schedule); the
# arithmetic must be the same.

# %%
their_stats = race.step()
their_policy = race.accelerator.unwrap_model(race.policy)
their_rollout = race.last_rollout

mine = PolicyWithValueHead(copy.deepcopy(sft))
reference = copy.deepcopy(sft).eval().requires_grad_(False)
optimizer = torch.optim.Adam(mine.parameters(), lr=step_config.learning_rate)
batch = sample_prompt_batch(race.prompts, step_config.batch_size, 0, step_config.seed)  # the trainer's step-0 prompts
with torch.no_grad():
    my_rollout = rollout(mine, reference, tokenizer, reward_model.score, batch, step_config.init_kl_coef, step_config,
                         0, autocast=race.accelerator.autocast)
my_stats = ppo_update(mine, optimizer, race.accelerator, my_rollout, step_config, 0)

weights_apart = max((a - b).abs().max().item() for a, b in zip(mine.parameters(), their_policy.parameters()))
moved = max((a - b).abs().max().item() for a, b in zip(mine.parameters(), PolicyWithValueHead(copy.deepcopy(sft)).parameters()))
side_by_side = pd.DataFrame({
    "PPOTrainer.step": [their_rollout.scores.mean().item(), (their_rollout.kl * their_rollout.response_mask).sum(1).mean().item(),
                        their_rollout.advantages.abs().sum().item(), their_stats["policy_loss"], their_stats["value_loss"]],
    "your rollout + ppo_update": [my_rollout.scores.mean().item(), (my_rollout.kl * my_rollout.response_mask).sum(1).mean().item(),
                                  my_rollout.advantages.abs().sum().item(), my_stats["policy_loss"], my_stats["value_loss"]],
}, index=["mean score", "KL per response", "sum |advantages|", "policy loss (mean over mini-batches)",
          "value loss (mean over mini-batches)"])
print(side_by_side.to_string(float_format=lambda v: f"{v:+.6f}"))
print(f"\nlargest weight change in the update: {moved:.2e}; largest difference between the two policies after it: "
      f"{weights_apart:.2e}")
assert torch.equal(my_rollout.response_ids, their_rollout.response_ids), "the same tokens were sampled"
assert torch.allclose(torch.tensor(side_by_side.iloc[:, 0].values), torch.tensor(side_by_side.iloc[:, 1].values),
                      rtol=1e-4, atol=1e-5), side_by_side
assert weights_apart < 1e-3 * moved, (weights_apart, moved)

# %% [markdown]
# The same numbers, and after the update the same weights. On one process the trainer whitens each mini-batch
# with `masked_whiten` itself; on several processes it whitens from sums added across the processes' shards, which
# is the same formula rounded differently in the last bits — which is why the assertions above allow a tolerance
# instead of demanding equality. So `PPOTrainer` *is* this loop; from here on it runs it, because it also
# checkpoints, resumes and logs.
#
# ## 4. Train, with live plots — and an interruption
#
# The run is "killed" after a few steps, then a **new** trainer, built from scratch, resumes from the checkpoint on
# disk: model, value head, optimiser, scheduler, KL controller, history and step. Prompts, response lengths and
# sampling are pure functions of (seed, step), so the resumed run continues the very same trajectory (a unit test
# checks that 2 + 2 steps give the same weights as 4).
#
# **This cell takes about 1.5 minutes** on 2 cores with bf16 instructions (150 steps in 1.4 min in the run recorded
# here; the cell prints its time), about 1.5 times as long on a CPU without them (float32), and longer when other
# programs share the cores; the plots refresh every 5 steps.
#
# **Predict first.** Section 1 measured the SFT policy: the bag-of-words judge calls about half of its held-out
# reviews positive. After these 150 steps, with the KL held near 6 nats, what share will it call positive? Write
# your number (a fraction, e.g. 0.6) in the box or in `guess.answer` before you run the training cell; section 6
# grades it.

# %%
guess = exercises.predict("After 150 PPO steps, what fraction of held-out continuations will the bag-of-words "
                          "judge call positive?", number="")
guess.answer = None  # ← your prediction, e.g. 0.6

# %%
run_dir = tempfile.mkdtemp(dir=workdir.name)  # a fresh directory: re-running this cell starts a new run
trainer = new_trainer(ppo_config, run_dir)
trainer.train(progress=not in_ci(), stop_after=4)  # ...and the process dies here
print("interrupted after", trainer.state["step"], "steps; on disk:", sorted(os.listdir(os.path.join(run_dir, "checkpoint"))))
del trainer

# %%
KEYS = [("score", "reward-model score (normalised)"), ("kl", "KL to reference (nats / response)"),
        ("kl_coef", "beta"), ("entropy", "policy entropy (nats / token)")]


def plot_history(history):
    fig, axes = plt.subplots(1, 4, figsize=(16, 3))
    steps = [h["step"] for h in history]
    for ax, (key, title) in zip(axes, KEYS):
        ax.plot(steps, [h[key] for h in history])
        ax.set(title=title, xlabel="PPO step")
    plt.tight_layout()
    plt.show()


def live_plot(stats):
    if stats["step"] % 5 == 0:
        clear_output(wait=True)
        print(f"step {stats['step']}: score {stats['score']:+.2f}, KL {stats['kl']:.2f}, beta {stats['kl_coef']:.3f}")
        plot_history(trainer.state["history"])


trainer = new_trainer(ppo_config, run_dir)
print("resumed:", trainer.maybe_resume(), "at step", trainer.state["step"])
history = trainer.train(progress=not in_ci(), callback=None if in_ci() else live_plot,
                        stop_after=None if steps_this_run is None else steps_this_run - trainer.state["step"])
clear_output(wait=True)
print(f"done: {trainer.state['step']} steps in {trainer.state['train_seconds'] / 60:.1f} min "
      f"({trainer.state['step'] * ppo_config.batch_size} episodes)")
plot_history(history)

# %% [markdown]
# ## 5. What the statistics say

# %%
frame = pd.DataFrame([{k: v for k, v in h.items() if k != "samples"} for h in history]).set_index("step")
fig, axes = plt.subplots(2, 4, figsize=(16, 6))
panels = [("raw_score", "reward model, normalised, before penalties"), ("response_length", "response length (tokens)"),
          ("clip_fraction", "clip fraction"), ("approx_kl", "approx. KL(old || new) per update"),
          ("value_loss", "value loss"), ("explained_variance", "explained variance of the values"),
          ("episodes_per_second", "episodes / second")]
for ax, (key, title) in zip(axes.flat, panels):
    ax.plot(frame.index, frame[key])
    ax.set(title=title, xlabel="PPO step")
phases = frame[[c for c in frame.columns if c.startswith("time_")]].mean()
axes.flat[-1].bar([p.replace("time_", "") for p in phases.index], phases.values)
axes.flat[-1].set(title="seconds per step, by phase")
plt.tight_layout()
plt.show()
print(frame[["score", "kl", "kl_coef", "entropy", "clip_fraction", "explained_variance"]].iloc[[0, len(frame) // 2, -1]].round(3))

# %% [markdown]
# How to read them: the **score** climbs while the **KL** grows towards its target and **β** adapts; **entropy**
# falls as the policy concentrates on what the reward model likes; the **clip fraction** and **approximate KL**
# show how far each update moves; **explained variance** starts at 0 (the value head starts at zero) and rises as
# the head learns — 0.000, 0.320 and 0.468 at the three steps printed above — though not steadily (its panel), since
# its targets move with the policy. The
# reward model's output is already normalised (mean 0, std 1 on SFT samples, notebook 03); "before penalties" means
# before the optional missing-EOS penalty and score clipping, both off by default, so the first panel equals the
# score.
#
# ## 6. After: the same held-out prompts

# %%
ppo_policy = trainer.accelerator.unwrap_model(trainer.policy).lm.eval()
after, after_samples = evaluate_policy(ppo_policy, sft, tokenizer, eval_prompts, reward_model.score, judges)
table = pd.DataFrame({"SFT policy": before, "after PPO": after}).round(3)
table

# %%
guess.reveal(after["positive_rate/bag_of_words"], why="the reward model was trained on IMDb's labels, as was this "
             "judge (on other rows): what one learned to score, the other tends to call positive")

# %% [markdown]
# **The same run in notebook 07.** Notebook 07 studies this recipe over three seeds, from the run card that
# `scripts/evaluation_sweep.py` wrote (`rlhf_helpers/assets/tiny/results/run_card_evaluation.json`). Its seed 0 *is*
# this run: the same settings, seed and 150 steps, and the same held-out evaluation. The card's last row for seed 0
# beside this notebook's "after PPO" column, and the assertion that they are the same run:

# %%
evaluation_card = read_run_card(shipped_results_dir("tiny"), "evaluation")
seed_0 = evaluation_card["parts"]["seeds"]["result"]["0"]
card_after = {k: seed_0["rows"][-1][k] for k in after}
print(pd.DataFrame({"this notebook": after, "run card, seed 0": card_after}).round(3))
this_recipe = json.loads(json.dumps({k: v for k, v in vars(ppo_config).items() if not k.startswith("_")}))
assert seed_0["settings"] == this_recipe, "the sweep ran another recipe: run scripts/evaluation_sweep.py again"
# Bit for bit only on the card's kind of machine: bf16 or float32, and the number of cores, change the last digits
# of every sum, and 150 steps of training carry them on. (Not the load: a busy machine's fewer threads compute
# what all its cores would, `numerics_threads()`; see rlhf_helpers.core.thread_invariance.)
card_machine = evaluation_card["machine"]
same_machine = (trainer.mixed_precision, numerics_threads()) == (card_machine["mixed_precision"],
                                                                 card_machine["threads"])
if trainer.state["step"] == seed_0["steps"] and same_machine:  # the full 150 steps (the tests train 60)
    differ = [k for k in after if abs(after[k] - card_after[k]) > 1e-3 * max(1.0, abs(card_after[k]))]
    assert not differ, f"this run and the run card's seed 0 differ in {differ}"
    print(f"the same run: every metric agrees to 3 significant figures at step {seed_0['steps']}")
else:
    print(f"not compared: {trainer.state['step']} steps, {trainer.mixed_precision} on {numerics_threads()} "
          f"threads' numbers here; the card: {seed_0['steps']} steps, {card_machine['mixed_precision']} on "
          f"{card_machine['threads']} threads")

# %% [markdown]
# Ten held-out prompts (the first ten, not chosen), each with the SFT policy's and the PPO policy's response, the
# reward model's score and the two judges' verdicts (+ positive, − not). The 5M-parameter tiny policy writes
# locally fluent, globally incoherent text, before and after; for real GPT-2 run the `gpt2` profile
# (`RLHF_PROFILE=gpt2`, a GPU helps).

# %%
def verdicts(sample):
    return ("+" if sample["vader"] else "−") + ("+" if sample["bag_of_words"] else "−")


rows = [{"prompt": b["query"], "SFT": b["response"], "SFT reward": round(b["reward"], 2), "SFT judges": verdicts(b),
         "PPO": a["response"], "PPO reward": round(a["reward"], 2), "PPO judges": verdicts(a)}
        for b, a in list(zip(before_samples, after_samples))[:10]]
print("judges: VADER, bag of words")
pd.DataFrame(rows)

# %% [markdown]
# The prompts are the same, and so is the random seed of the sampler; only the policy changed.
#
# ### Try your own prompt
#
# Type the start of a review; both policies continue it (same seed), and the reward model and judges score both.

# %%
def side_by_side_for(prompt="I watched this movie last night and", seed=0):
    texts = {}
    for name, lm in [("SFT", sft), ("PPO", ppo_policy)]:
        out = generate(lm, tokenizer, [prompt], max_new_tokens=16, top_k=0, top_p=1.0, seed=seed)
        texts[name] = prompt + out.texts[0]
    scores = reward_model.score(list(texts.values())).tolist()
    judged = {name: judge(list(texts.values())) for name, judge in judges.items()}
    return pd.DataFrame({"text": list(texts.values()), "reward": [round(v, 2) for v in scores],
                         **{name: ["+" if v else "−" for v in verdict] for name, verdict in judged.items()}},
                        index=list(texts))


display(side_by_side_for())
widgets.interact_manual(side_by_side_for, prompt=widgets.Text(value="The acting in this film", layout={"width": "60%"}),
                        seed=widgets.IntSlider(value=0, min=0, max=20));

# %% [markdown]
# ## 7. Checks

# %%
assert after["reward"] > before["reward"] + 0.5, "the reward model's score should go up"
assert after["positive_rate/bag_of_words"] > before["positive_rate/bag_of_words"] + 0.2, "bag of words: positive rate should go up"
assert after["positive_rate/vader"] > before["positive_rate/vader"] + 0.1, "VADER: positive rate should go up"
# The adaptive controller steers the KL towards its target but does not cap it: each step it multiplies beta by
# 1 + e * 64 / 10,000 with the relative error e clipped to +-0.2 (at most 0.13% a step), so a 150-step run can end a
# little above the target; far above it means the leash is not working.
assert after["kl"] <= 1.25 * ppo_config.kl_target, f"the KL leash should hold (target {ppo_config.kl_target} nats)"
assert after["ref_perplexity"] < 1.5 * before["ref_perplexity"], "perplexity under SFT should not blow up"
if not in_ci():  # the full 150 steps (the benchmark's run of this recipe: 82.8% after 119 steps, 89.1% after 156)
    assert after["positive_rate/bag_of_words"] >= 0.75, after
print("reward up, both judges up, KL near its target, perplexity under SFT did not blow up")

# %% [markdown]
# ## 8. Save it
#
# `trainer.save(directory)` writes the policy (a normal `transformers` checkpoint, loadable by `load_policy`), the
# value head, the tokenizer and a run card with the configuration, the per-step history and the time per phase.
# The same recipe from the command line, for the tiny profile's 200 steps instead of 150 (it also evaluates, and
# writes everything under `artifacts/tiny/`):
#
# ```bash
# python -m rlhf_helpers ppo && python -m rlhf_helpers evaluate
# ```
#
# With `RLHF_PROFILE=gpt2` the same trainer runs on real GPT-2 with TRL's historical settings
# (`get_config("gpt2").ppo`); `accelerate launch -m rlhf_helpers ppo` spreads it over several GPUs.

# %%
saved = trainer.save(os.path.join(run_dir, "final"), metrics={"before": before, "after": after})
print(sorted(os.listdir(saved)))

# %% [markdown]
# ## Key takeaways
#
# * One PPO step is a rollout (sample, score, log-probs, values, per-token rewards, GAE) and an update (epochs of
#   whitened, clipped mini-batches). You wrote it in two functions, and it equals the trainer's step.
# * Seeding every random draw by (seed, step) makes a run resumable on the same trajectory.
# * The reward model's score is not evidence that the policy improved; held-out prompts and judges that PPO never
#   saw are. The KL and the perplexity under the reference are what the gain cost.
# * A healthy run: score up, KL rising to its target and held there by β, entropy falling slowly, explained variance
#   up from 0 (not necessarily steadily). A KL that runs away with a score that keeps climbing is reward hacking
#   (notebook 07).
#
# ## Self-check
#
# 1. Why does the rollout run under `torch.no_grad()` while the update recomputes the log-probs with gradients?
#
#    <details><summary>Answer</summary>The rollout's log-probs, values, rewards and advantages are fixed data: the
#    "old" policy of the ratio and the targets of the losses. Gradients are needed only for the policy being updated,
#    whose log-probs change after every optimiser step, so the update must recompute them.</details>
#
# 2. On one process your step and the trainer's agree to the last bit. On four processes they would differ in the
#    last bits. Where would the difference come from, and why is it harmless?
#
#    <details><summary>Answer</summary>Whitening: with several processes each holds a shard of every mini-batch, so the
#    trainer computes the mean and variance from sums that the processes add together, while `masked_whiten` works on
#    centred values of one tensor. Both are the same formula; floating point rounds them differently in the last bits,
#    far below the size of one update.</details>
#
# 3. Halfway through a run the score keeps rising, the KL passes 20 nats and the perplexity under the reference
#    explodes. What is happening, and which knob do you turn?
#
#    <details><summary>Answer</summary>Reward hacking: the policy found text the reward model over-scores, far from
#    anything the reference writes. Tighten the leash — a larger β or a lower KL target (and check the KL penalty's
#    sign) — and judge the result with the independent judges, not the reward.</details>
#
# 4. Why is the explained variance of the values 0 at the first step?
#
#    <details><summary>Answer</summary>The value head starts at exactly zero, so it predicts nothing yet; it learns from
#    the value loss, and its explained variance rises from 0 as it does (then moves with its targets).</details>
#
# **Next: notebook 07** evaluates policies properly: several seeds, over-optimisation of the reward model, reward
# hacking live, and best-of-n.
