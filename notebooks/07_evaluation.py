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
# # 07 — Evaluation and analysis: judges, seeds, over-optimisation, reward hacking, best-of-n
#
# Notebook 06 trained one PPO policy and found it better on held-out prompts. This notebook asks how much of that
# to believe, and what the reward model is really asking for. One PPO run is one sample of a random process, so we
# look at several seeds; the reward model is only a proxy of what we want, so we follow a *gold* score that PPO never
# saw as the policy is pushed further from the SFT model; we watch PPO with no leash at all turn the reward model's
# weaknesses into nonsense; we compare with best-of-n, which trains nothing; and at the end you debug a set of short
# PPO runs, all but one of them broken, from their training statistics alone.
#
# The long experiments (3 seeds, a 400-step run with a weak leash, a run with no leash, best-of-128, fine-tuning on
# positive reviews; 25 minutes on 2 cores in the recorded run) were run by `scripts/evaluation_sweep.py`, whose run card
# ships with the course; this notebook plots it and reruns small slices of the same functions live. The broken runs of
# the last section come from `scripts/debug_runs.py` and its own run card.
#
# **Learning objectives.** After this notebook you can
# 1. report a policy's result as a mean and spread over seeds, with reward, independent judges, KL, perplexity and
#    diversity side by side;
# 2. measure reward over-optimisation — proxy and gold against $d = \sqrt{\mathrm{KL}}$ — and fit the functional forms of
#    Gao, Schulman & Hilton (2022);
# 3. recognise reward hacking in the statistics and in the samples, and say which numbers give it away;
# 4. compute best-of-n's KL and compare it with PPO at matched KL;
# 5. probe what a reward model rewards: length, single words, and where it disagrees with the judges;
# 6. diagnose a broken PPO run from its per-step statistics: which number gives each common bug away.
#
# **Prerequisites:** notebook 06 (the PPO recipe and the evaluation), notebook 03 (the reward model).
# **Time:** about 70 minutes with the exercises (25 of them for the closing "debug this run"); running every cell takes about 2 minutes on 2 CPU cores.
# **Takes from earlier notebooks:** the shipped SFT policy (02), the shipped reward model (03), the prompts (01),
# notebook 06's PPO recipe.

# %%
import dataclasses
import json
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rlhf_helpers import exercises
from rlhf_helpers.core.assets import shipped_results_dir
from rlhf_helpers.core.run_card import read_run_card
from rlhf_helpers.course import budget, in_ci
from rlhf_helpers.evaluation.best_of_n import best_of_n_curve, draw_candidates
from rlhf_helpers.evaluation.broken_runs import STATISTICS
from rlhf_helpers.evaluation.judges import held_out_accuracy
from rlhf_helpers.evaluation.overoptimisation import fit_overoptimisation
from rlhf_helpers.evaluation.reward_analysis import disagreements, length_bias, word_attributions
from rlhf_helpers.evaluation.sweep import GOLD, Course, fast_recipe, ppo_run

torch.manual_seed(0)
pd.set_option("display.max_colwidth", 80)
pd.set_option("display.width", 160)
course = Course()  # the SFT policy, reward model, judges, prompts and the held-out evaluator (about 30 s)
card = read_run_card(shipped_results_dir("tiny"), "evaluation")
parts = {name: part["result"] for name, part in card["parts"].items()}
print(f"run card of {card['created']}: parts {sorted(parts)}; {card['eval_prompts']} held-out prompts; "
      f"machine: {card['machine']['threads']} threads, mixed precision {card['machine']['mixed_precision']}")
print("sweep wall time:", ", ".join(f"{name} {part['wall_seconds'] / 60:.1f} min" for name, part in card["parts"].items()),
      f"(total {sum(p['wall_seconds'] for p in card['parts'].values()) / 60:.0f} min)")

# %% [markdown]
# ## 1. The judges, and what they are worth
#
# Every number below leans on two judges that PPO never trains against: **VADER**, a sentiment lexicon with rules
# (no IMDb at all), and a **bag-of-words** logistic regression fitted on the IMDb train reviews' labels. Neither is
# a human. Before trusting them, measure them: accuracy on the held-out IMDb reviews, whole and cut to their first
# 20 words (closer to our short texts: a 2–8-token prompt and a 4–16-token response).

# %%
accuracy = pd.DataFrame({"whole reviews": held_out_accuracy(course.judges, course.config),
                         "first 20 words": held_out_accuracy(course.judges, course.config, first_words=20)})
accuracy.round(3)

# %% [markdown]
# The bag-of-words judge is the better reader of IMDb, and on short texts both are much weaker than on whole
# reviews: a judged "positive rate" of a policy is a noisy measurement. We use the bag-of-words judge's
# **p(positive)** (its probability, not only its verdict) as the course's **gold reward** — a continuous score,
# like the gold reward model of Gao et al. — and VADER as a second opinion from an unrelated method.
#
# ## 2. Notebook 06's policy, over three seeds
#
# Notebook 06 trained one run (seed 0). The sweep trained the same recipe with seeds 0, 1 and 2 — the seed changes
# the prompts drawn, the samples and the mini-batch order — and evaluated each every 25 steps on the same 256
# held-out prompts. Seed 0 *is* notebook 06's run: 06 asserts that its "after PPO" column equals this card's last
# row for seed 0, and the cell below asserts that the card's seed 0 ran 06's recipe (the same settings, 150 steps).

# %%
recipe_of_06 = dataclasses.replace(course.config.ppo, seed=0, max_minutes=None)  # notebook 06's `ppo_config`
assert parts["seeds"]["0"]["settings"] == json.loads(json.dumps(vars(recipe_of_06))), "the sweep ran another recipe"
assert parts["seeds"]["0"]["steps"] == 150, "notebook 06 trains 150 steps"
KEYS = {"reward": "reward model (proxy)", GOLD: "gold: bag-of-words p(positive)",
        "positive_rate/bag_of_words": "positive, bag of words", "positive_rate/vader": "positive, VADER",
        "kl": "KL to SFT (nats)", "ref_perplexity": "perplexity under SFT", "distinct_1": "distinct-1",
        "distinct_2": "distinct-2", "response_length": "response tokens"}
seeds = parts["seeds"]
final = pd.DataFrame({f"seed {s}": {k: run["rows"][-1][k] for k in KEYS} for s, run in seeds.items()})
sft_row = seeds["0"]["rows"][0]
table = pd.DataFrame({"SFT": {k: sft_row[k] for k in KEYS}, "PPO mean": final.mean(axis=1),
                      "PPO std": final.std(axis=1), **final})
table.index = [KEYS[k] for k in table.index]
table.round(3)

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for s, run in seeds.items():
    steps = [r["step"] for r in run["rows"]]
    for ax, key in zip(axes, ["reward", GOLD, "positive_rate/vader", "kl"]):
        ax.plot(steps, [r[key] for r in run["rows"]], marker="o", label=f"seed {s}")
        ax.set(title=KEYS[key], xlabel="PPO step")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Eight held-out prompts with the SFT policy's response and each seed's final response (the first eight prompts,
# not chosen; + means the judge calls the text positive). The tiny 5M-parameter policy writes locally fluent,
# globally incoherent text before and after PPO — for real GPT-2, run the `gpt2` profile.

# %%
def sample_table(rows_by_name: dict) -> pd.DataFrame:
    """Prompt, then each policy's response with its reward and judges, from evaluation rows' samples."""
    first = next(iter(rows_by_name.values()))
    out = {"prompt": [s["query"] for s in first]}
    for name, samples in rows_by_name.items():
        out[name] = [s["response"] for s in samples]
        out[f"{name} r"] = [round(s["reward"], 2) for s in samples]
        out[f"{name} judges"] = ["+" * s["vader"] + "−" * (not s["vader"]) + "+" * s["bag_of_words"]
                                 + "−" * (not s["bag_of_words"]) for s in samples]
    return pd.DataFrame(out)


sample_table({"SFT": sft_row["samples"], **{f"seed {s}": run["rows"][-1]["samples"] for s, run in seeds.items()}})

# %% [markdown]
# ### Exercise 7.1 — `distinct_n`
# **Difficulty** ●○○○○ · **Importance** ●●●○○ · about 10 minutes
#
# The table above has two diversity columns, distinct-1 and distinct-2 (Li et al. 2016, "A Diversity-Promoting
# Objective Function for Neural Conversation Models"): the number of *unique* word n-grams divided by the number of
# *all* word n-grams, pooled over every response. 1.0 means no n-gram repeats; a policy that collapses onto a few
# phrases ("a great film a great film") drives it down — a symptom of over-optimisation that the reward does not show.
#
# Inputs: `texts`, a list of responses (strings), and `n`. Output: a float. Split each response into words with
# `str.split()`; an n-gram never spans two responses; a response with fewer than n words contributes none.

# %%
def distinct_n(texts, n):
    """Unique word n-grams / all word n-grams over the responses in texts (pooled) -> float."""
    ### BEGIN SOLUTION
    grams = []
    for text in texts:
        words = text.split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_distinct_n(distinct_n)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_distinct_n` names each of these when your function makes it:
#
# - the responses joined, so n-grams run across two
# - each response's distinct-n averaged instead of pooled
# - character n-grams instead of word n-grams
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ## 3. Reward over-optimisation
#
# A reward model is fitted on a finite set of preferences; push a policy hard enough against it and the policy finds
# text the reward model over-scores. Gao, Schulman & Hilton (2022, "Scaling Laws for Reward Model
# Overoptimization") measured this with a *gold* reward model standing in for humans: as the policy moves away from
# its start — measured by $d = \sqrt{\mathrm{KL}(\pi \,\|\, \pi_\text{init})}$ — the proxy reward keeps rising while
# the gold rises, peaks and falls. For RL they found the gold gain over the initial policy follows
#
# $$R_\text{RL}(d) = d\,(\alpha_\text{RL} - \beta_\text{RL} \log d),$$
#
# and for best-of-n $R_\text{bon}(d) = d\,(\alpha_\text{bon} - \beta_\text{bon}\, d)$. Both are linear in
# (α, β): a least-squares fit without intercept, and the gold peaks where $dR/dd = 0$, at $d^* = e^{\alpha/\beta - 1}$
# for RL and $d^* = \alpha / 2\beta$ for best-of-n.
#
# Our sweep ran notebook 06's recipe with two weaker leashes: a fixed **β = 0.02** (a tenth of 06's) for 400 steps,
# and **β = 0** (no KL penalty) for 200 steps, each evaluated every 20 steps — and every 2 steps over the first 20,
# where the KL grows fastest (a rerun of the same settings: the same trajectory). Beside them, notebook 06's recipe
# (seed 0, evaluated every 3 steps over its first 30 and every 25 after).

# %%
def merged(*runs) -> list[dict]:
    """The rows of runs with the same settings (a dense rerun of the first steps and the full run), by step."""
    return sorted({row["step"]: row for run in runs for row in run["rows"]}.values(), key=lambda row: row["step"])


RUNS = {"β = 0.2, adaptive (06's recipe, seed 0)": merged(parts["early"], seeds["0"]),
        "β = 0.02 fixed": merged(parts["weak_leash_early"], parts["weak_leash"]),
        "β = 0 (no leash)": merged(parts["no_leash_early"], parts["no_leash"])}
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
for (name, rows), color in zip(RUNS.items(), ["C0", "C1", "C3"]):
    d = np.sqrt(np.clip([r["kl"] for r in rows], 0, None))
    axes[0].plot(d, [r["reward"] for r in rows], marker="o", color=color, label=name)
    axes[1].plot(d, [r[GOLD] for r in rows], marker="o", color=color, label=name)
    axes[2].plot(d, [r["positive_rate/vader"] for r in rows], marker="o", color=color, label=name)
axes[0].set(title="proxy: reward model", xlabel="d = sqrt(KL to SFT)", ylabel="normalised score")
axes[1].set(title="gold: bag-of-words p(positive)", xlabel="d = sqrt(KL to SFT)")
axes[2].set(title="VADER: share positive", xlabel="d = sqrt(KL to SFT)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 7.2 — fitting Gao et al.'s RL curve: `fit_rl_curve`
# **Difficulty** ●●●○○ · **Importance** ●●●●○ · about 15 minutes
#
# Inputs: `kl` `[N]` (nats) and `gold` `[N]`, numpy arrays of the points of one run, the first being the initial
# policy (KL 0). Output: `(alpha, beta)`, the least-squares fit of
#
# $$\text{gold} - \text{gold}_0 = \alpha\, d - \beta\, d \log d, \qquad d = \sqrt{\mathrm{KL}},$$
#
# with no intercept (the form has $R(0) = 0$). Take $d \log d = 0$ at $d = 0$ (its limit).
#
# *Hint:* `np.linalg.lstsq(A, y, rcond=None)[0]` solves $\min \lVert A x - y \rVert$ for a matrix $A$ whose columns are
# $d$ and $-d \log d$; `np.log(np.where(d > 0, d, 1.0))` avoids `log 0`.

# %%
def fit_rl_curve(kl, gold):
    """Least squares of gold - gold[0] = alpha d - beta d log d, d = sqrt(kl) -> (alpha, beta)."""
    ### BEGIN SOLUTION
    d = np.sqrt(np.clip(kl, 0.0, None))
    log_d = np.log(np.where(d > 0, d, 1.0))
    design = np.stack([d, -d * log_d], axis=1)
    alpha, beta = np.linalg.lstsq(design, gold - gold[0], rcond=None)[0]
    return alpha, beta
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_fit_rl_curve(fit_rl_curve)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_fit_rl_curve` names each of these when your function makes it:
#
# - fitted against the KL instead of d = √KL
# - the gold itself fitted instead of its gain over the initial policy
# - an intercept column added
# - the best-of-n form d(α − βd)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# The package's `fit_overoptimisation` is the same least squares, and also reports how much of the gain's variance
# the fit explains ($R^2$) and where the fitted gold peaks. We fit each run's gold
# — and, for comparison, its proxy.

# %%
fits = []
for name, rows in RUNS.items():
    kl = np.array([r["kl"] for r in rows])
    for label, key in [("gold", GOLD), ("proxy", "reward")]:
        fit = fit_overoptimisation(kl, np.array([r[key] for r in rows]), "rl")
        fits.append({"run": name, "of": label, "alpha": fit.alpha, "beta": fit.beta, "R²": fit.r_squared,
                     "peak d": fit.peak_d, "peak KL": fit.peak_kl, "largest KL reached": kl.max(),
                     "gold at the end": rows[-1][GOLD]})
fits = pd.DataFrame(fits)
fits.round(3)

# %%
fig, axes = plt.subplots(1, len(RUNS), figsize=(16, 3.8))
for ax, (name, rows) in zip(axes, RUNS.items()):
    kl, gold = np.array([r["kl"] for r in rows]), np.array([r[GOLD] for r in rows])
    fit = fit_overoptimisation(kl, gold, "rl")
    d = np.sqrt(np.clip(kl, 0, None))
    grid = np.linspace(0, d.max() * 1.05, 200)
    ax.plot(d, gold - gold[0], "o", label="measured gold gain")
    ax.plot(grid, fit(grid), "-", label=f"d(α − β log d): α={fit.alpha:.3f}, β={fit.beta:.3f}, R²={fit.r_squared:.2f}")
    ax.set(title=name, xlabel="d = sqrt(KL)", ylabel="gold − gold at SFT")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# What the fits say — honestly:
#
# * **The proxy never turns down.** In all three runs the reward model's score rises with $d$ and its fitted β is
#   negative: the reward model never says "enough".
# * **The gold does turn down, but not the way the RL form bends.** Without a leash the gold rises to 0.986 at
#   KL 48 (step 20) and then falls to 0.910 as the samples collapse into "outstanding outstanding …":
#   over-optimisation, measured. With β = 0.02 it reaches 0.966 by step 40 (KL 35) and then wanders between 0.935
#   and 0.962 to step 400, at KL 34–48. But fitted to the whole run, the
#   RL form puts the gold's peak far outside the data (see "peak KL" in the table): its slow $\log d$ bend cannot
#   follow a gold that climbs almost straight and then saturates near 1 (it is a probability) and drops in a few
#   steps when the samples collapse. **Our data do not follow Gao et al.'s RL form beyond its rising part.**
# * **06's recipe is still on the rising part:** its three seeds stay at KL ≤ 6.5, where the gold is still rising.
#
# Why does our gold forgive so much? The bag-of-words judge loves the same words as the reward model ("wonderful",
# "outstanding"): a gold that is itself a simple model of sentiment can be exploited in the same way, and VADER, an
# unrelated method, calls every one of the no-leash samples positive. Gao et al.'s gold was a far larger reward
# model than the proxy; ours is smaller. The evidence of hacking is in the KL, the perplexity and distinct-n.
#
# ## 4. Reward hacking, live
#
# Set β = 0 and nothing holds the policy near the SFT model. Before reading on, predict how far it drifts, measured
# by the perplexity of its samples under the SFT policy (how surprised the SFT model is by the text; section 2's
# table has it for the SFT policy and for 06's recipe, printed again here as the scale):

# %%
no_leash_steps = parts["no_leash"]["steps"]
print(f"perplexity under the SFT policy: the SFT policy's own samples {sft_row['ref_perplexity']:.0f}; 06's recipe "
      f"after {seeds['0']['steps']} steps {final.loc['ref_perplexity'].mean():.0f} (mean of the seeds)")
guess_perplexity = exercises.predict(f"With β = 0 (no leash), what will the perplexity of the policy's samples under "
                                     f"the SFT policy be after {no_leash_steps} steps?", number="", tolerance=0.5)
guess_perplexity.answer = None  # ← your prediction, a number (within 50% counts as right)

# %% [markdown]
# In the sweep's no-leash run the KL is 48 nats after 20 steps and distinct-2 has fallen from 0.934 to 0.505; by step 80
# it is 0.017 — nearly every response is "outstanding outstanding …". The reward model scores that 3.17, more than three
# standard deviations above the SFT policy's samples; the perplexity under the reference passes 6,000 by step 20; VADER
# calls all of it positive. This is **reward hacking**: the policy found the reward model's favourite word and repeats
# it. β = 0.02 drifts a little more slowly (KL 26 after 20 steps) and settles on a family of its own ("outstanding! A
# wonderful classic …", "Great fun. …").
#
# The same story, with a stranger ending, happened while this course was written: a flipped sign on the KL penalty
# (which *rewards* the policy for moving away from the reference) produced "best best ۿ� splend nicely splend" at
# KL 100 and a perplexity of 68,000 — while the judges called 91% (bag of words) and 88% (VADER) of it positive
# (notebook 06's table). A judge of sentiment alone cannot see hacking; the KL, the perplexity under the reference
# and distinct-n can.
#
# The samples of the run without a leash, from the run card (the first three held-out prompts, every 40 steps):

# %%
no_leash = parts["no_leash"]["rows"]
shown = [r for r in no_leash if r["step"] % 40 == 0]
pd.DataFrame({f"step {r['step']} (KL {r['kl']:.0f})": [s["response"] for s in r["samples"][:3]] for r in shown},
             index=[s["query"] for s in no_leash[0]["samples"][:3]]).T

# %%
fig, axes = plt.subplots(1, 5, figsize=(18, 3.2))
for (name, rows), color in zip(RUNS.items(), ["C0", "C1", "C3"]):
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes, ["kl", "ref_perplexity", "distinct_2", "reward", GOLD]):
        ax.plot(steps, [r[key] for r in rows], color=color, label=name)
        ax.set(title=KEYS[key], xlabel="PPO step")
axes[1].set_yscale("log")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %%
no_leash_ppl = [r["ref_perplexity"] for r in parts["no_leash"]["rows"]]
peak_row = parts["no_leash"]["rows"][int(np.argmax(no_leash_ppl))]
guess_perplexity.reveal(no_leash_ppl[-1], why=(
    f"{no_leash_ppl[-1] / sft_row['ref_perplexity']:.0f}× the SFT policy's own samples: the policy repeats the reward "
    f"model's favourite words, text the SFT model finds very unlikely, and with β = 0 nothing in the reward counts "
    f"that (it peaked at {peak_row['ref_perplexity']:.0f}, step {peak_row['step']}, as the samples collapsed)"))

# %% [markdown]
# Now live: the same recipe with β = 0 from the SFT policy, a few dozen steps (this cell takes about a minute; the
# tests run 20 steps). The sampling is a pure function of (seed, step), so on a machine with the same precision as
# the sweep's these rows repeat the run card's.

# %%
live_steps = budget(learner=60, ci=20)
live_dir = tempfile.TemporaryDirectory(prefix="hacking-")
live = ppo_run(course, fast_recipe(course.config.ppo, init_kl_coef=0.0, adaptive_kl=False), live_dir.name,
               steps=live_steps, every=10, progress=not in_ci())
hacked_samples = course.evaluator.last_samples  # the final policy's 256 held-out samples, for section 7
live_table = pd.DataFrame([{k: r[k] for k in ["step", "kl", "ref_perplexity", "distinct_2", "reward", GOLD,
                                              "positive_rate/vader"]} for r in live["rows"]]).set_index("step")
card_table = pd.DataFrame([{k: r[k] for k in ["step", "kl", "ref_perplexity", "distinct_2", "reward", GOLD,
                                              "positive_rate/vader"]} for r in RUNS["β = 0 (no leash)"]
                           if r["step"] <= live_steps and r["step"] % 10 == 0]).set_index("step")
print(f"{live['steps']} steps in {live['train_seconds']:.0f} s ({live['mixed_precision']}); the run card's run: "
      f"{card['machine']['mixed_precision']}")
live_table.round(3)

# %%
card_table.round(3)

# %%
leashed_kl = seeds["0"]["rows"][1]["kl"]  # 06's recipe after 25 steps
assert live_table["kl"].iloc[-1] > leashed_kl, f"without a leash the KL should pass the leashed run's {leashed_kl:.1f}"
assert live_table["reward"].iloc[-1] > live_table["reward"].iloc[0] + 0.5, "without a leash the proxy still rises"
print("no leash: the KL runs away while the proxy climbs")

# %% [markdown]
# ## 5. Best-of-n
#
# The simplest way to use a reward model trains nothing: sample n responses, keep the one the reward model scores
# highest. Its KL from the SFT policy is known in closed form.
#
# ### Exercise 7.3 — `best_of_n_kl`
# **Difficulty** ●○○○○ · **Importance** ●●●●○ · about 5 minutes
#
# Output: KL(best-of-n ‖ SFT) in nats for an integer n ≥ 1,
#
# $$\mathrm{KL}_\text{bon}(n) = \log n - \frac{n - 1}{n}$$
#
# (Stiennon et al. 2020, "Learning to summarize from human feedback"; Beirami et al. 2024, "Theoretical guarantees
# on the best-of-n alignment policy", show it is an upper bound, exact when no two samples tie). It grows only like
# log n: best-of-128 is about 3.9 nats from the SFT policy, less than notebook 06's PPO.

# %%
def best_of_n_kl(n):
    """KL(best-of-n || base policy) in nats -> float."""
    ### BEGIN SOLUTION
    return float(np.log(n) - (n - 1) / n)
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_best_of_n_kl(best_of_n_kl)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_best_of_n_kl` names each of these when your function makes it:
#
# - log n alone
# - (n − 1)/n added instead of subtracted
# - log base 2 instead of the natural log
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# The sweep drew 128 responses for each of the 256 held-out prompts and read every n = 1, 2, 4, … 128 off the same
# draws (each prompt's 128 draws cut into 128 / n groups of n; the best of each group kept; averaged). The more
# candidates, the harder best-of-n pushes on the reward model. Predict first:

# %%
bon_n_max = parts["bon"]["n_max"]
guess_bon = exercises.predict(f"From best-of-16 to best-of-{bon_n_max}, what does the gold (the bag-of-words judge's "
                              "p(positive)) do?",
                              choices={"a": "it keeps rising (by more than 0.01)",
                                       "b": "it stays flat (within ±0.01)",
                                       "c": "it falls by more than 0.01: the proxy is over-optimised"})
guess_bon.answer = None  # ← "a", "b" or "c"

# %% [markdown]
# Live, a smaller draw of the same kind, beside the run card's:

# %%
n_live = budget(learner=16, ci=4)
ev = course.evaluator
live_bon = best_of_n_curve(draw_candidates(course.sft, course.tokenizer, ev.prompts, course.scorer.score, course.judges,
                                           n_max=n_live, seed=ev.kwargs["seed"], progress=not in_ci()))
bon = pd.DataFrame(parts["bon"]["rows"]).set_index("n")
pd.concat({f"live, n ≤ {n_live}": pd.DataFrame(live_bon).set_index("n"), "run card": bon}, axis=1).round(3)

# %%
assert live_bon[-1][GOLD] > live_bon[0][GOLD] and live_bon[-1]["reward"] > live_bon[0]["reward"] + 0.3
print("best-of-n: proxy and gold both rise with n")

# %%
large, small = bon.loc[bon.index.max()], bon.loc[16]
gold_gain = large[GOLD] - small[GOLD]
guess_bon.reveal("a" if gold_gain > 0.01 else "c" if gold_gain < -0.01 else "b", why=(
    f"the gold moves by {gold_gain:+.3f} (the proxy by {large['reward'] - small['reward']:+.3f}) while the KL goes "
    f"only from {small['kl']:.1f} to {large['kl']:.1f} nats: best-of-n's KL grows like log n, so even n = "
    f"{bon.index.max()} stays close to the SFT policy, where section 3's PPO runs were still gaining gold"))

# %% [markdown]
# Best-of-n beside PPO, on the axes of Gao et al.: every point of the three seeds, the dense first 30 steps of
# seed 0 (evaluated every 3 steps), and best-of-n, with the fitted best-of-n form.

# %%
bon_fit = fit_overoptimisation(bon["kl"].to_numpy(), bon[GOLD].to_numpy(), "bon")
ppo_points = [r for run in seeds.values() for r in run["rows"]] + parts["early"]["rows"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
for ax, key, title in [(axes[0], GOLD, "gold: bag-of-words p(positive)"), (axes[1], "reward", "proxy: reward model")]:
    ax.scatter(np.sqrt(np.clip([r["kl"] for r in ppo_points], 0, None)), [r[key] for r in ppo_points], s=14,
               color="C0", label="PPO (06's recipe: 3 seeds + the first 30 steps)")
    ax.plot(np.sqrt(bon["kl"]), bon[key], "s-", color="C2", label="best-of-n, n = 1 … 128")
    ax.set(title=title, xlabel="d = sqrt(KL to SFT)")
grid = np.linspace(0, np.sqrt(bon["kl"].max()) * 1.1, 100)
axes[0].plot(grid, bon[GOLD].iloc[0] + bon_fit(grid), "--", color="C2",
             label=f"fit d(α − β d): α={bon_fit.alpha:.3f}, β={bon_fit.beta:.3f}, R²={bon_fit.r_squared:.2f}")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# At matched KL: for each n, PPO's gold and proxy interpolated at best-of-n's KL from the dense early run of seed 0.

# %%
early = sorted(parts["early"]["rows"], key=lambda r: r["kl"])
early_kl = np.clip([r["kl"] for r in early], 0, None)
matched = pd.DataFrame([{"n": n, "KL": row["kl"], "best-of-n gold": row[GOLD],
                         "PPO gold": np.interp(row["kl"], early_kl, [r[GOLD] for r in early]),
                         "best-of-n proxy": row["reward"],
                         "PPO proxy": np.interp(row["kl"], early_kl, [r["reward"] for r in early])}
                        for n, row in bon.iterrows() if n >= 4]).set_index("n")
matched.round(3)

# %% [markdown]
# At every KL it reaches, best-of-n beats PPO's early steps on the gold, and on the proxy by far more: at KL 3.9
# (n = 128) the gold is 0.737 against 0.622 for PPO at the same KL. Best-of-n spends its KL only on what the reward
# model ranks higher, while a PPO step from a 64-sample gradient also moves the policy in directions the reward does
# not ask for; Gao et al. saw the same for their models (RL needs more KL than best-of-n for the same gold). The
# price is paid at inference — 128 samples per prompt — and the KL grows only like log n: PPO passed 5 nats in 150
# steps and then samples one response. The best-of-n gold follows Gao et al.'s form $d(\alpha - \beta d)$ closely
# (its $R^2$ is in the legend); the fitted peak lies at KL ≈ 61, where best-of-n would need n ≈ e^62 samples.
#
# ## 6. Why not just fine-tune on positive reviews?
#
# The seed's own question, answered by experiment. Instead of a reward model and PPO, continue the SFT policy's
# training on the **positive** IMDb train reviews only: the same next-token loss as notebook 02, 120 steps of
# 16 × 256 tokens (about the wall time of one 150-step PPO run on the same machine), evaluated every 20 steps.

# %%
positive = parts["positive_sft"]
print(f"{positive['positive_reviews']} positive reviews -> {positive['train_blocks']} blocks of 256 tokens; "
      f"{positive['steps']} steps in {positive['train_seconds'] / 60:.1f} min "
      f"(PPO seeds: {np.mean([run['train_seconds'] for run in seeds.values()]) / 60:.1f} min each)")
versus = pd.DataFrame({"SFT": {k: sft_row[k] for k in KEYS},
                       "fine-tuned on positive reviews": {k: positive["rows"][-1][k] for k in KEYS},
                       "PPO (mean of 3 seeds)": final.mean(axis=1)})
versus.index = [KEYS[k] for k in versus.index]
versus.round(3)

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(np.sqrt(np.clip([r["kl"] for r in positive["rows"]], 0, None)), [r[GOLD] for r in positive["rows"]], "^-",
        color="C4", label="SFT on positive reviews (every 20 steps)")
ax.scatter(np.sqrt(np.clip([r["kl"] for r in ppo_points], 0, None)), [r[GOLD] for r in ppo_points], s=14, color="C0",
           label="PPO")
ax.plot(np.sqrt(bon["kl"]), bon[GOLD], "s-", color="C2", label="best-of-n")
ax.set(xlabel="d = sqrt(KL to SFT)", ylabel="gold: bag-of-words p(positive)", title="gold against distance from SFT")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# In about the same wall time (1.6 minutes against 1.6 for a PPO seed), fine-tuning on positive reviews moves the
# gold from 0.507 to 0.561 and the bag-of-words rate from 52% to 62%; PPO reaches 0.749 and 83%. The fine-tuned policy
# stays close to the SFT model (KL 0.41) and keeps its diversity (distinct-2 0.940): it learned to write like the
# positive IMDb reviews, most of whose words are plot, actors and asides rather than praise, so a 4–16-token
# continuation is rarely a verdict. Its curve sits at the bottom left of the figure, below best-of-2 (0.565 at
# KL 0.19). Maximum likelihood on positive text optimises the likelihood of positive text; PPO optimises the
# quantity we measure. (Notebook 08 meets this baseline again as "Preferred-FT", on the chosen completions.)
#
# ## 7. What does the reward model reward?
#
# Three probes of the reward model, on samples of this notebook's live runs.
#
# **Length.** PPO's responses get a random length of 4–16 tokens whatever their content, so a reward that rises with
# the length is rewarding length itself (Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations
# in RLHF"). On the SFT policy's 256 held-out samples:

# %%
course.evaluator(course.sft)
sft_samples = course.evaluator.last_samples
bias = length_bias(sft_samples, course.tokenizer)
by_length = pd.DataFrame(bias["by_length"]).T
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(by_length.index, by_length["reward"], "o-", label="reward model (normalised)")
ax2 = ax.twinx()
ax2.plot(by_length.index, by_length[GOLD], "s--", color="C1", label="gold p(positive)")
ax.set(xlabel="response length (tokens)", ylabel="mean reward")
ax2.set_ylabel("mean gold")
fig.legend(loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()
print("SFT policy, correlation with the response length:", {k: round(v, 3) for k, v in bias["correlation"].items()})

# %% [markdown]
# The same on the 256 samples of the live no-leash policy of section 4:

# %%
hacked_bias = length_bias(hacked_samples, course.tokenizer)
print("no-leash policy, correlation with the response length:",
      {k: round(v, 3) for k, v in hacked_bias["correlation"].items()})
pd.DataFrame(hacked_bias["by_length"]).T.round(3)

# %% [markdown]
# On the SFT policy's samples the reward model shows no length bias (correlation −0.04 with the response length;
# the gold −0.01). On the hacked policy's samples it shows a strong one: correlation 0.67 — a 16-token run of
# "outstanding" scores 3.75 on average, a 4-token run 2.44 — while the gold hardly moves (0.922 at 4 tokens, 0.964 at
# 16; correlation 0.25). The reward model learned that
# more positive words make a more positive review, without a ceiling; on the SFT policy's text that never mattered,
# and PPO without a leash found it. A reward model's biases live *off* the distribution it was trained on, which is
# exactly where optimisation takes the policy.
#
# **Words.** Occlusion: the reward of a text minus its reward with one word left out. On three samples of the live
# no-leash policy above:

# %%
for sample in hacked_samples[:3]:
    text = sample["query"] + sample["response"]
    parts_of_text = word_attributions(course.scorer.score, text)
    print(f"reward {sample['reward']:+.2f}:  " + "  ".join(f"{w}({a:+.2f})" for w, a in parts_of_text))

# %% [markdown]
# **Disagreements.** The samples of the live no-leash policy whose reward-model rank is furthest above their gold
# rank, and the reverse:

# %%
gaps = disagreements(hacked_samples, n=5)
columns = ["query", "response", "reward", GOLD, "vader", "rank_gap"]
pd.concat({"reward model ≫ gold": pd.DataFrame(gaps["proxy_over_gold"])[columns],
           "gold ≫ reward model": pd.DataFrame(gaps["gold_over_proxy"])[columns]}).round(2)

# %% [markdown]
# Every sample of the hacked policy repeats "outstanding"; what separates the two lists is how many times. The
# reward model keeps paying for more repetitions (3.45–3.76 for the long runs of the first list, even with a stray
# "poorly" among them), while the bag-of-words judge gives p ≈ 0.98–1.00 to the short runs of four to six positive
# words in the second list and 0.80–0.91 to the long ones. Occlusion missed it: leaving out one "outstanding" of
# twenty changes the reward by about 0.07 — the repetitions count together, which a one-word-at-a-time probe cannot
# see.

# %% [markdown]
# ## 8. Debug this run
#
# A bug in PPO rarely crashes anything: the run trains, prints numbers and saves a policy. What gives it away is the
# shape of the statistics every step logs. `scripts/debug_runs.py` trained the first steps of notebook 06's recipe
# several times — the same SFT policy, the same seed, so the same prompts and response lengths at every step — once
# as it is and every other time with one bug injected from outside the trainer (a config field, another reward
# function or reference model, or one of the trainer's functions swapped for a broken one). Its run card keeps
# each run's statistics under a neutral label, shuffled, and the answer key apart. (The bugs are defined in
# `rlhf_helpers/evaluation/broken_runs.py`; it names them, so open it only after the exercise.)

# %%
debug = read_run_card(shipped_results_dir("tiny"), "debug")
debug_runs = {label: part["result"] for label, part in debug["parts"].items()}
print(f"{len(debug_runs)} runs ({', '.join(debug_runs)}) of {debug['steps']} PPO steps each, "
      f"{sum(p['wall_seconds'] for p in debug['parts'].values()) / 60:.1f} minutes in all on "
      f"{debug['machine']['threads']} threads ({debug['machine']['mixed_precision']})")
print("\nThe options — each is the bug of exactly one run ('healthy': no bug):")
for name, what in sorted(debug["bugs"].items()):
    print(f"  {name:20s} {what}")

# %% [markdown]
# What each statistic is, and what it does in a run without bugs (`PPOTrainer`'s history, one value per step):
#
# * **score**: the reward model's mean score of the step's responses. Normalised to mean 0 and standard deviation 1
#   on the SFT policy's own samples, so it starts near 0; it is what PPO climbs, noisily.
# * **KL to the reference**: $\log \pi - \log \pi_\text{ref}$ at the sampled tokens, summed over a response,
#   averaged over the batch. At step 1 the policy *is* the reference (nothing has been updated yet), so a correct
#   estimate reads exactly 0 there; after that it grows, and the KL penalty keeps it from running away.
# * **KL coefficient β**: the adaptive controller (notebook 05) raises β a little when the KL is above its target
#   and lowers it when below; over a few dozen steps it moves only slightly, but the direction says on which side of
#   the target the KL is.
# * **entropy** of the policy's next-token distribution at the sampled positions: a fall towards 0 means the policy
#   keeps choosing the same few tokens.
# * **clip fraction**: the share of tokens whose ratio $\pi / \pi_\text{old}$ left $[1 - \epsilon, 1 + \epsilon]$ in
#   the direction the advantage favours, so their gradient was cut. Each step's later mini-batches see a policy that
#   has already moved, so it is small but not 0.
# * **value loss**: the value head's squared error against the returns. Its scale is the scale of the rewards.
# * **explained variance** $1 - \mathrm{Var}[R - V] / \mathrm{Var}[R]$: 0 for values that do no better than a
#   constant, creeping above 0 as the value head learns.

# %%
fig, axes = plt.subplots(len(debug_runs), len(STATISTICS), figsize=(2.5 * len(STATISTICS), 1.5 * len(debug_runs)),
                         sharex=True)
for row, (label, run) in zip(axes, debug_runs.items()):
    steps = [h["step"] for h in run["history"]]
    for ax, key in zip(row, STATISTICS):
        if key != "kl_coef":  # where 0 is (some statistics must be 0 at times, others never); β's moves are small
            ax.axhline(0, color="0.8", lw=0.8)
        ax.plot(steps, [h[key] for h in run["history"]], color="C0", lw=1.2)
        ax.tick_params(labelsize=7)
    row[0].set_ylabel(label, fontsize=11)
for ax, title in zip(axes[0], STATISTICS.values()):
    ax.set_title(title, fontsize=8)
for ax in axes[-1]:
    ax.set_xlabel("PPO step", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The same statistics as numbers — at step 1 (before any update has changed the policy) and averaged over the last
# five steps — and each run's last samples:

# %%
ends = {label: {(STATISTICS[key], when): (run["history"][0][key] if when == "step 1"
                                           else np.mean([h[key] for h in run["history"][-5:]]))
                for key in STATISTICS for when in ("step 1", "last 5")}
        for label, run in debug_runs.items()}
pd.DataFrame(ends).T.round(3)

# %%
pd.DataFrame({label: run["samples"][:2] for label, run in debug_runs.items()}, index=["sample 1", "sample 2"]).T

# %% [markdown]
# ### Exercise 7.4 — debug this run: `debug_diagnosis`
# **Difficulty** ●●●○○ · **Importance** ●●●●● · about 25 minutes
#
# Return a dict with one entry per run, `{"run A": bug name, ...}`, each bug name one of the options printed above
# (`"healthy"` for the run without a bug; every option is the answer for exactly one run). The check says, for each
# run you got wrong, which statistic should have given it away.
#
# *Hint:* go statistic by statistic rather than run by run. Which runs show a statistic that is *exactly* 0 where
# it should not be — or not 0 where it must be? Which runs drift far from the reference, and how do they differ from
# each other? Which run's numbers are on a different scale from the first step? What is left is the healthy run:
# the one with none of these.

# %%
def debug_diagnosis():
    """Which bug each debug run has -> {"run A": bug name, ...}: every run, each name one of the options."""
    ### BEGIN SOLUTION
    return {
        "run A": "top_p_mismatch",       # KL above 0 at step 1, when the policy still is the reference
        "run B": "ratio_always_one",     # clip fraction exactly 0 at every step: the ratio never leaves 1
        "run C": "reference_is_policy",  # KL exactly 0 at every step while the score climbs: no leash
        "run D": "no_value_loss",        # explained variance exactly 0 at every step: the values stay 0
        "run E": "healthy",              # none of the signatures
        "run F": "raw_scores",           # value loss many times the others' from step 1: rewards on another scale
        "run G": "kl_sign_flipped",      # KL runs away, β rises, entropy collapses, yet the score climbs
        "run H": "advantages_negated",   # the score falls from the first steps while the KL runs away
    }
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_debug_diagnosis(debug_diagnosis)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_debug_diagnosis` names each of these when your function makes it:
#
# - the healthy run called broken
# - the run with the flipped KL penalty not recognised
# - the run whose reference is the policy itself not recognised
# - the run trained on raw scores not recognised
# - the run without a value loss not recognised
# - the run with negated advantages not recognised
# - the run whose ratio is always 1 not recognised
# - the run with the top-p mismatch not recognised
# - a name that is not one of the options
# - a run left out
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Most of these bugs leave their mark in a statistic whose value in a correct run is *known*, not just "about
# right": the KL is exactly 0 at step 1 and not 0 afterwards; the clip fraction and the explained variance are
# small but not exactly 0 from the first steps; a normalised reward starts near 0 and its value loss is on the scale
# of its variance. A statistic stuck at exactly 0, or off 0 where it must be 0, is a bug, not bad luck. Two of the
# bugs look alike at first — both make the KL run away — and the score tells them apart. And the healthy run has
# none of these marks, which is why the first thing to know about a PPO run is what a healthy one looks like
# (notebook 06's statistics).
#
# ## Key takeaways
#
# * One run is one sample: report the mean and spread over seeds, and put the reward, independent judges, KL,
#   perplexity and diversity side by side — each alone can mislead.
# * The proxy reward always goes up; whether the policy got better is the gold's question. Measure both against
#   $d = \sqrt{\mathrm{KL}}$, the distance PPO's KL penalty controls.
# * Without a leash the KL runs away within a few dozen steps; perplexity under the reference and distinct-n show it
#   before any judge does.
# * Best-of-n trains nothing, has a closed-form KL of $\log n - (n-1)/n$, and is the baseline any RL method must beat
#   at matched KL.
# * Fine-tuning on positive text moves the policy too, but towards the whole distribution of positive reviews, not
#   towards what the reward model (or the judge) scores.
# * A broken PPO run still trains. Its per-step statistics say what is wrong — a KL that is 0, or not 0, when it
#   must not be; a clip fraction or explained variance stuck at exactly 0; a falling score; a value loss on the wrong
#   scale — provided you know what they look like in a healthy run.
#
# ## Self-check
#
# 1. The proxy rises all along a run while the gold rises and then falls. Which two numbers would you plot, against
#    what, to find the best checkpoint without a gold judge?
#
#    <details><summary>Answer</summary>You cannot find the gold's peak from the proxy alone — that is the point of
#    over-optimisation. What you can do is control the distance: plot the proxy and the KL (or d = √KL) against
#    steps, keep a held-out judge or human sample at a few KLs, and choose the KL budget (β or the KL target) where
#    the judged quality stops improving.</details>
#
# 2. Best-of-64 has a KL of about 3.2 nats. Why can best-of-n not reach the KL of 20 nats that the no-leash PPO run
#    reaches within a few dozen steps?
#
#    <details><summary>Answer</summary>Its KL grows like log n: 20 nats would need n ≈ e^21, about 10^9 samples per
#    prompt. Best-of-n can only reweight what the SFT policy already samples; PPO changes the policy itself and can
#    move its probability mass onto text the SFT policy would almost never write.</details>
#
# 3. A policy's distinct-2 falls from 0.93 to 0.5 while its reward and both judges rise. Is it better?
#
#    <details><summary>Answer</summary>On the reward and the judges, yes; but half of its bigrams now repeat — it is
#    collapsing onto a few phrases. Whether that is acceptable depends on what you wanted; the judges do not measure
#    it, which is why diversity is reported beside them.</details>
#
# 4. Why is the gold of this notebook the bag-of-words judge's p(positive) and not the reward model's score on a
#    second held-out set?
#
#    <details><summary>Answer</summary>The reward model is what PPO optimises; measuring it again on other prompts
#    measures how well PPO exploited it, not whether the reviews became positive. A gold must be independent of the
#    proxy — another model, trained differently (here on IMDb's labels, with a different model family).</details>
#
# 5. A run's clip fraction is exactly 0 at every step, and its score still rises. Why worry?
#
#    <details><summary>Answer</summary>A clip fraction of exactly 0 means the ratio π/π_old never left [1 − ε, 1 + ε]
#    in any mini-batch — impossible once an earlier mini-batch of the same step has moved the policy, unless the
#    "old" log-probs are recomputed from the current policy (ratio always 1). The run then does plain policy gradient
#    with no trust region: it may climb for a while and then take a step far too large, and nothing stops
#    it.</details>
#
# **Next: notebook 08** goes beyond PPO — DPO, GRPO, RLOO and best-of-n on one reward–KL frontier.
