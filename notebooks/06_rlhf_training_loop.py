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
# shipped reward model, `PPOTrainer` repeats, for a few minutes on a laptop CPU:
#
# **rollout** (sample responses to IMDb prompts) → **score** (reward model, normalised) → **forward passes**
# (log-probs, values, reference log-probs) → **per-token rewards and GAE** → **PPO epochs** over mini-batches →
# **KL controller** update — with a checkpoint every few steps, from which a killed run resumes on the same
# trajectory.
#
# Did it work? The reward model's score is what PPO optimised, so it cannot be the evidence. We measure on
# **held-out prompts** with two **independent judges** that PPO never saw — VADER (a sentiment lexicon) and a
# bag-of-words classifier trained on IMDb labels — plus the KL to the reference and the perplexity of the
# samples under the reference (is it still fluent?).

# %%
import copy
import dataclasses
import os
import shutil
import tempfile

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import clear_output

from rlhf_helpers import build_dataset, get_config
from rlhf_helpers.evaluation import evaluate_policy
from rlhf_helpers.evaluation.judges import default_judges
from rlhf_helpers.policy import load_policy
from rlhf_helpers.ppo import PPOTrainer
from rlhf_helpers.ppo.value_head import PolicyWithValueHead
from rlhf_helpers.reward.model import load_reward_model

torch.manual_seed(0)
pd.set_option("display.max_colwidth", 90)
config = get_config()
IN_CI = os.environ.get("RLHF_CI") == "1"
sft, tokenizer = load_policy(config.name)
reward_model = load_reward_model(config.name)
reward_model.check_same_tokenizer(tokenizer)
judges = default_judges(config)  # VADER + a bag-of-words classifier fitted on the IMDb train rows
train_prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
eval_prompts = [ids.tolist() for ids in build_dataset(tokenizer, config, split="eval")["input_ids"][:256]]
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
# (`rlhf_helpers.config.PPOConfig`). The tiny profile changes a few: a smaller batch (64 rollouts: more updates per
# minute on a CPU), a larger learning rate (5e-5: a 5M-parameter model is not the 124M GPT-2), and bf16 autocast,
# which halves the time of every forward and backward pass on these cores.
#
# How the defaults were chosen — 5-minute runs from the shipped SFT policy, evaluated as in this notebook
# (256 held-out prompts; bag-of-words judge / VADER / KL per response):
#
# | change from the defaults | bag of words | VADER | KL | what happened |
# |---|---|---|---|---|
# | none, float32 (115 steps) | 82% | 66% | 4.8 | steady, still climbing when time ran out |
# | none, bf16 (179 steps) — **the defaults** | 90% | 71% | 5.1 | the same curve, further along |
# | learning rate 1e-4 | 82% | 69% | 6.4 | the KL budget goes on noise: KL 6 reached by step 40 at a lower score |
# | β = 0.05, KL target 5, horizon 1,000 | 93% | 87% | 11.9 | more reward, twice the KL: the controller was too slow to hold β |
# | the KL penalty's sign flipped (a bug) | 91% | 88% | 100 | reward hacking: "best best ۿ� splend nicely splend", perplexity 68,000 |
#
# The last row is a real accident of development, kept because it shows what the judges alone would miss: the
# "reviews" were byte salad that the reward model liked, and only the KL and the perplexity under the reference
# give it away. Runs with the same settings vary by a few points (two more bf16 runs with a longer learning-rate
# schedule, one with a lower KL target, gave 85% and 86%), so read the table as tendencies.

# %%
ppo_config = dataclasses.replace(config.ppo, seed=config.seed)  # the profile's PPO settings, copied
CI_STEPS = 100  # the test run: a fixed number of steps, so its result does not depend on the machine's speed
if IN_CI:
    ppo_config = dataclasses.replace(ppo_config, max_minutes=None)
pd.Series({k: str(v) for k, v in vars(ppo_config).items()}).to_frame("value")

# %% [markdown]
# ## 3. Train, with live plots — and an interruption
#
# The run is "killed" after a few steps, then a **new** trainer, built from scratch, resumes from the checkpoint on
# disk: model, value head, optimiser, scheduler, KL controller, history and step. Prompts, response lengths and
# sampling are pure functions of (seed, step), so the resumed run continues the very same trajectory (a unit test
# checks that 2 + 2 steps give the same weights as 4).

# %%
run_dir = tempfile.mkdtemp(prefix="ppo-")


def new_trainer():
    policy = PolicyWithValueHead(copy.deepcopy(sft))
    return PPOTrainer(policy, copy.deepcopy(sft), tokenizer, reward_model.score, train_prompts, ppo_config, run_dir,
                      run_config=config.to_dict())


trainer = new_trainer()
trainer.train(progress=not IN_CI, stop_after=4)  # ...and the process dies here
print("interrupted after", trainer.state["step"], "steps; on disk:", sorted(os.listdir(os.path.join(run_dir, "checkpoint"))))
del trainer

# %%
KEYS = [("score", "reward-model score (normalised)"), ("kl", "KL to reference (nats / response)"),
        ("kl_coef", "beta"), ("entropy", "policy entropy (nats / token)")]


def plot_history(history, final=False):
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


trainer = new_trainer()
print("resumed:", trainer.maybe_resume(), "at step", trainer.state["step"])
history = trainer.train(progress=not IN_CI, callback=None if IN_CI else live_plot,
                        stop_after=CI_STEPS - trainer.state["step"] if IN_CI else None)
clear_output(wait=True)
print(f"done: {trainer.state['step']} steps in {trainer.state['seconds'] / 60:.1f} min "
      f"({trainer.state['step'] * ppo_config.batch_size} episodes)")
plot_history(history, final=True)

# %% [markdown]
# ## 4. What the statistics say

# %%
frame = pd.DataFrame([{k: v for k, v in h.items() if k != "samples"} for h in history]).set_index("step")
fig, axes = plt.subplots(2, 4, figsize=(16, 6))
panels = [("raw_score", "reward model, raw"), ("response_length", "response length (tokens)"),
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
# show how far each update moves; **explained variance** rises as the value head learns (it starts at 0).
#
# ## 5. After: the same held-out prompts

# %%
ppo_policy = trainer.accelerator.unwrap_model(trainer.policy).lm.eval()
after, after_samples = evaluate_policy(ppo_policy, sft, tokenizer, eval_prompts, reward_model.score, judges)
table = pd.DataFrame({"SFT policy": before, "after PPO": after}).round(3)
table

# %%
rows = []
for b, a in list(zip(before_samples, after_samples))[:10]:
    rows.append({"prompt": b["query"], "SFT": b["response"], "PPO": a["response"],
                 "judges (SFT → PPO)": f"{'+' if b['vader'] else '-'}{'+' if b['bag_of_words'] else '-'} → "
                                        f"{'+' if a['vader'] else '-'}{'+' if a['bag_of_words'] else '-'}"})
pd.DataFrame(rows)

# %% [markdown]
# The prompts are the same, and so is the random seed of the sampler; only the policy changed.
#
# ## 6. Checks

# %%
assert after["reward"] > before["reward"] + 0.5, "the reward model's score should go up"
assert after["positive_rate/bag_of_words"] > before["positive_rate/bag_of_words"] + 0.2, "bag of words: positive rate should go up"
assert after["positive_rate/vader"] > before["positive_rate/vader"] + 0.1, "VADER: positive rate should go up"
assert after["kl"] <= 6.0, "the KL leash should hold (target: 6 nats per response)"
assert after["ref_perplexity"] < 1.5 * before["ref_perplexity"], "the reviews should stay about as fluent as the SFT policy's"
if not IN_CI:  # the full 5-minute run (the course's target is 90%; runs land between 85% and 90%, see section 2)
    assert after["positive_rate/bag_of_words"] >= 0.8, after
print("reward up, both judges up, KL within the leash, still fluent")

# %% [markdown]
# ## 7. Save it
#
# `trainer.save(directory)` writes the policy (a normal `transformers` checkpoint, loadable by `load_policy`), the
# value head, the tokenizer and a run card with the configuration, the per-step history and the time per phase.
# The same run from the command line (it also evaluates, and writes everything under `artifacts/tiny/`):
#
# ```bash
# python -m rlhf_helpers ppo --ppo.max-minutes 5 && python -m rlhf_helpers evaluate
# ```
#
# With `RLHF_PROFILE=gpt2` the same trainer runs on real GPT-2 with TRL's historical settings
# (`get_config("gpt2").ppo`); `accelerate launch -m rlhf_helpers ppo` spreads it over several GPUs.

# %%
saved = trainer.save(os.path.join(run_dir, "final"), metrics={"before": before, "after": after})
print(sorted(os.listdir(saved)))
shutil.rmtree(run_dir)
