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
# # 02 — GPT-2 on IMDb: the supervised (SFT) policy
#
# RLHF starts from a model that already writes the right *kind* of text. InstructGPT (Ouyang et al., 2022)
# starts PPO from a supervised fine-tuned (SFT) model; the IMDb recipe of TRL started from `lvwerra/gpt2-imdb`,
# GPT-2 fine-tuned on IMDb reviews. This notebook builds that model:
#
# 1. the language-modelling objective, perplexity, and the next-token loss written by you (exercise 2.1);
# 2. a short **live training from scratch** (about 2 minutes on 2 idle CPU cores with bf16 instructions,
#    over 8 without or on a busy machine — 116 s in the run recorded here; the cell prints its own time), with its
#    loss curve and a resumed interruption;
# 3. the **shipped checkpoint**: a 4-layer GPT-2 trained by this course's own command, its perplexity on
#    held-out reviews against a random model, and samples;
# 4. **generation**: the one sampling helper the whole course uses (left padding, KV cache, temperature, top-k and
#    top-p, the last two written by you in exercises 2.2 and 2.3), and a widget to play with it.
#
# The offline `tiny` profile trains GPT-2's architecture from random weights: IMDb is its whole pretraining.
# The `gpt2` profile runs the *same* cells on the hub's 124M `gpt2` (see the end of the notebook).
#
# **Learning objectives.** After this notebook you can
# 1. write the next-token loss with its one-position shift, and relate it to perplexity (exercise 2.1);
# 2. explain the parts of a small training loop (warmup and cosine schedule, clipping, checkpoints that resume);
# 3. measure a language model against a random one on held-out text;
# 4. implement top-k and top-p filtering exactly as the course's sampler does (exercises 2.2, 2.3), and say why
#    PPO samples without them.
#
# **Prerequisites.** Notebook 01 (the tokenizer, the held-out split, the prompts); PyTorch tensors and
# `F.cross_entropy` / `F.log_softmax`; the softmax. **Time:** about 45 minutes: the three exercises, and cells
# that run about 2.5 minutes in all on 2 idle CPU cores with bf16 instructions (138 s in the run recorded here; the
# live training is most of it), over 10 on a CPU without bf16 or on a busy machine.
# **Takes from notebook 01:** the IMDb tokenizer (the same one, shipped with the policy), the train/eval split and
# `build_dataset`'s prompts.

# %%
import math
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from rlhf_helpers import build_dataset, exercises, get_config, load_imdb_splits
from rlhf_helpers.config import SFTConfig
from rlhf_helpers.core.run_card import read_run_card
from rlhf_helpers.course import budget
from rlhf_helpers.evaluation.judges import VaderJudge
from rlhf_helpers.pipeline import get_tokenizer
from rlhf_helpers.policy import count_parameters, load_policy, new_policy_model, shipped_policy_dir
from rlhf_helpers.policy.generation import filter_logits, generate
from rlhf_helpers.policy.sft import evaluate_perplexity, pack_texts, train_sft
from rlhf_helpers.reward.model import load_reward_model

torch.manual_seed(0)
config = get_config()
print("profile:", config.name)


def causal_lm(model):
    """`model`, told which loss it computes when given labels. transformers 5 infers that from the class name, which
    for GPT2LMHeadModel fails: it would log a warning and fall back to the causal-LM loss, the right one anyway."""
    model.loss_type = "ForCausalLM"
    return model

# %% [markdown]
# ## 1. The objective
#
# A language model assigns a probability to a sequence of tokens by the chain rule,
# $p_\theta(x_1, \dots, x_T) = \prod_t p_\theta(x_t \mid x_{<t})$, and is trained to minimise the average
# negative log-likelihood of real text — the cross-entropy of next-token prediction:
#
# $$\mathcal{L}(\theta) = -\frac{1}{T - 1} \sum_{t=1}^{T-1} \log p_\theta(x_{t+1} \mid x_{\le t}).$$
#
# **Perplexity** is $\exp(\mathcal{L})$ on held-out text. A model that guesses uniformly over a vocabulary of
# $V$ tokens has perplexity $V$ (8,192 here); a perplexity of 60 means the model is, on average, as unsure as if
# it were choosing among 60 equally likely tokens. Perplexities are only comparable with the same tokenizer.
#
# ### Exercise 2.1 — `next_token_loss`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 10 minutes
#
# A causal language model returns `logits` of shape `[B, T, V]` for `input_ids` of shape `[B, T]`; the logits at
# position $t$ are its prediction of the token at position $t + 1$. Write `next_token_loss(logits, input_ids)`
# returning the 0-d tensor $\mathcal{L}$ above, averaged over all $B \times (T - 1)$ predicted tokens (packed
# blocks have no padding):
#
# $$\mathcal{L} = -\frac{1}{B(T-1)} \sum_{b=1}^{B} \sum_{t=1}^{T-1} \log \operatorname{softmax}(\ell_{b,t})_{x_{b,t+1}}.$$
#
# *Hint:* the last position predicts nothing we have, and the first token is predicted by nothing: drop one of
# each. `F.cross_entropy` wants `[N, V]` logits and `[N]` targets.

# %%
def next_token_loss(logits, input_ids):
    """logits [B, T, V], input_ids [B, T] -> 0-d tensor: mean -log p(x_{t+1} | x_<=t) over the B*(T-1) targets."""
    ### BEGIN SOLUTION
    predictions = logits[:, :-1]  # [B, T-1, V]: position t predicts token t+1
    targets = input_ids[:, 1:]  # [B, T-1]
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1))
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_next_token_loss(next_token_loss)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_next_token_loss` names each of these when your function makes it:
#
# - no shift (logits[:, t] compared with token t)
# - shifted the wrong way round
# - the sign flipped (the log-likelihood)
# - the sum over tokens instead of the mean
# - the perplexity exp(loss) returned
# - no gradient (`.item()`, `.detach()`, numpy)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# **Packing.** Reviews are cleaned, tokenized, joined with `<|endoftext|>` between them and cut into blocks of
# 256 tokens, so no computation is spent on padding; the model learns where a review ends from the separator.
# The live training below needs only the first few thousand blocks; the shipped model trained on all of IMDb's
# train split.

# %%
tokenizer = get_tokenizer(config)
splits = load_imdb_splits(config)
block_size = 256 if config.name == "tiny" else 512
t0 = time.perf_counter()
train_blocks = pack_texts(splits["train"]["text"], tokenizer, block_size, max_blocks=budget(learner=4_000, ci=128))
eval_blocks = pack_texts(splits["eval"]["text"], tokenizer, block_size, max_blocks=budget(learner=64, ci=32))
print(f"train: {tuple(train_blocks.shape)} blocks = {train_blocks.numel() / 1e6:.2f} M tokens "
      f"(packed in {time.perf_counter() - t0:.0f} s); held out: {tuple(eval_blocks.shape)}")
print(repr(tokenizer.decode(train_blocks[0, :40])))

# %% [markdown]
# ## 2. Live training from scratch
#
# The training loop (`rlhf_helpers.policy.sft.train_sft`) is about 100 lines: AdamW (weight decay on matrices only),
# linear warmup then cosine decay of the learning rate, gradient clipping at 1.0, bf16 autocast where the
# processor supports it, a held-out perplexity check, a checkpoint every N steps. Device placement and
# mixed precision go through 🤗 `accelerate`, so the same loop runs on a GPU or on several with
# `accelerate launch -m rlhf_helpers sft`.
#
# Here it runs for a short budget; the shipped model trained far longer (its run card, read here, says how long).
# To show resuming, the run is "killed" half-way and restarted from its checkpoint. **The training cell takes
# about 2 minutes** on 2 idle CPU cores with bf16 instructions (AVX512-BF16 or AMX), and over 8 on one without or on
# a busy machine: the run recorded here took 116 s (a progress bar shows where it is; the last line prints the time). Nothing after this section uses the model it
# trains: sections 3 and 4 load the shipped policy, so you may skip this cell.

# %%
shipped_card = read_run_card(shipped_policy_dir("tiny"), "sft")
print(f"the shipped policy: {shipped_card['metrics']['steps']:,} steps of {shipped_card['config']['sft']['batch_size']} "
      f"blocks, {shipped_card['metrics']['train_seconds'] / 60:.0f} minutes of training")

# %%
demo_steps = budget(learner=120, ci=6)
demo_config = SFTConfig(max_steps=demo_steps, batch_size=budget(learner=16, ci=4), warmup_steps=max(demo_steps // 10, 1),
                        eval_every=budget(learner=demo_steps // 3, ci=demo_steps), checkpoint_every=max(demo_steps // 2, 1),
                        seed=config.seed)
demo_dir = tempfile.mkdtemp(prefix="sft-demo-")
model = causal_lm(new_policy_model(config, tokenizer))
print(f"a fresh GPT-2: {count_parameters(model) / 1e6:.2f} M parameters; {demo_steps} steps of "
      f"{demo_config.batch_size} blocks")
t0 = time.perf_counter()
half = train_sft(model, tokenizer, train_blocks, eval_blocks, demo_config, demo_dir, stop_after=demo_steps // 2)
print("interrupted:", half)
model = causal_lm(new_policy_model(config, tokenizer))  # a new process would start from nothing...
demo = train_sft(model, tokenizer, train_blocks, eval_blocks, demo_config, demo_dir)  # ...and resume
print(f"{demo['steps']} steps in {time.perf_counter() - t0:.0f} s; held-out perplexity "
      f"{demo['initial_eval_perplexity']:.0f} -> {demo['final_eval_perplexity']:.0f}")

# %%
shipped_losses = shipped_card["metrics"]["losses"]
# per-step losses were logged from step 501 on (the first 500 steps ran before that logging existed);
# the held-out perplexity history covers the whole run.
first_logged = shipped_card["metrics"]["steps"] - len(shipped_losses) + 1

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
axes[0].plot(range(1, len(demo["losses"]) + 1), demo["losses"], label=f"live demo ({demo['steps']} steps)")
axes[0].axvline(demo_steps // 2, color="grey", ls=":", label="interrupted + resumed here")
axes[0].set(xlabel="step", ylabel="training loss (nats/token)", title="live training from scratch")
axes[0].legend()
history = shipped_card["metrics"]["history"]
smooth = np.convolve(shipped_losses, np.ones(50) / 50, mode="valid")
axes[1].plot(np.arange(len(smooth)) + first_logged + 49, smooth, label="training loss (50-step mean)")
axes[1].plot([h["step"] for h in history[1:]], [np.log(h["eval_ppl"]) for h in history[1:]], "o-",
             label="held-out loss = log perplexity")
axes[1].set(xlabel="step", ylabel="nats/token", title=f"the shipped run: {shipped_card['metrics']['steps']:,} steps")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The resumed half of the live demo continues its curve without a jump: the checkpoint holds the model, the
# optimiser and scheduler state, and the batch order is a function of (seed, step). A few minutes of training
# take the model from random guessing (a perplexity near the vocabulary size) to a fraction of it; the shipped
# run's curve shows how much further the same loop goes.
#
# ## 3. The shipped policy
#
# Training long enough to write good text takes longer than a notebook should, so the course ships the
# result, made by its own command:
#
# ```bash
# python -m rlhf_helpers sft --profile tiny --sft.max-steps 4500 --export-to rlhf_helpers/assets/tiny/sft_policy
# ```
#
# (It was trained in several sittings on a busy 2-core machine, interrupted and resumed each time, and its schedule
# was extended once, early in the run, from the default length to the one in the command; the run card's history
# shows the whole run.) Its run card records the configuration, seed, library versions, timings and the metrics:

# %% tags=["nbval-check-output"]
policy, tokenizer = load_policy("tiny")
shipped_card = read_run_card(shipped_policy_dir("tiny"), "sft")
metrics = shipped_card["metrics"]
print(f"parameters: {count_parameters(policy) / 1e6:.2f} M | layers {policy.config.n_layer}, width {policy.config.n_embd}, "
      f"context {policy.config.n_positions}, vocabulary {policy.config.vocab_size}")
print(f"trained: {metrics['steps']} steps, {metrics['tokens_seen'] / 1e6:.1f} M tokens, mixed precision {metrics['mixed_precision']}")
print(f"held-out perplexity in the run card: {metrics['final_eval_perplexity']:.1f}")
size_mb = sum(f.stat().st_size for f in shipped_policy_dir("tiny").iterdir()) / 1e6
print(f"shipped directory: {size_mb:.1f} MB")

# %%
print(f"training time: {metrics['train_seconds'] / 60:.1f} min at {metrics['tokens_per_second']:.0f} tokens/s "
      f"on {shipped_card['machine']['processor']}, torch {shipped_card['versions']['torch']}")

# %% [markdown]
# ### Perplexity on held-out reviews: random weights vs the shipped policy
#
# The held-out reviews were never seen by the tokenizer or the model (the split of notebook 01). Your
# `next_token_loss` on the shipped policy's logits is the loss transformers computes when given `labels`, and
# its exponential is the perplexity:

# %%
policy = causal_lm(policy)
with torch.no_grad():
    blocks = eval_blocks[:8]
    yours = next_token_loss(policy(input_ids=blocks).logits, blocks)
    theirs = policy(input_ids=blocks, labels=blocks).loss
print(f"next_token_loss: {yours:.4f} | transformers' loss with labels: {theirs:.4f} | perplexity exp(loss): {yours.exp():.1f}")
assert torch.allclose(yours, theirs, atol=1e-4)

# %%
random_model = causal_lm(new_policy_model(config, tokenizer)).eval()
ppl_random = evaluate_perplexity(random_model, eval_blocks)
ppl_shipped = evaluate_perplexity(policy, eval_blocks)
print(f"held-out perplexity on {len(eval_blocks)} blocks  random init: {ppl_random:8.0f}   (uniform guessing: {len(tokenizer)})")
print(f"                                   shipped:     {ppl_shipped:8.1f}")
assert ppl_shipped <= 100, f"the shipped policy should reach perplexity <= 100, got {ppl_shipped:.1f}"
assert ppl_shipped < ppl_random

# %% [markdown]
# ## 4. Generation
#
# `rlhf_helpers.policy.generation.generate` is the one sampling function of the course — PPO's rollouts, the
# evaluation and this notebook all call it. What it does, and why:
#
# * **left padding** with an attention mask, and **position ids counted from the mask**: prompts of different
#   lengths end in the same column, so every row's next token is predicted at the same place; GPT-2 has learned
#   absolute positions, so padding must not shift them;
# * a **KV cache** (`past_key_values`): each new token attends to stored keys and values instead of re-running
#   the whole sequence;
# * **temperature**, **top-k** and **top-p** (nucleus) filtering;
# * it returns the **response tokens only** — never the prompt (an early TRL version could return prompt tokens
#   when generation stopped at EOS) — with a mask that is 1 up to and including the first `<|endoftext|>` and
#   padding after it.
#
# ### Exercise 2.2 — `top_k_filter`
# **Difficulty** ●●○○○ · **Importance** ●●●○○ · about 10 minutes
#
# Each step of generation turns the logits of the last position, `[B, V]`, into a distribution. **Top-k** sampling
# (Fan et al., 2018, *Hierarchical Neural Story Generation*) keeps, in each row, only the tokens whose logit is at least
# the row's $k$-th largest, $\ell^{(k)}$, and removes the rest by setting their logit to $-\infty$ (probability exactly
# 0 after the softmax):
#
# $$\tilde\ell_v = \begin{cases} \ell_v & \ell_v \ge \ell^{(k)} \\ -\infty & \text{otherwise} \end{cases}
# \qquad\text{shape } [B, V].$$
#
# Tokens tied with the $k$-th largest logit all stay (so a row may keep more than $k$). `k = 0` means "off": return
# the logits unchanged, as also for $k \ge V$. Return a new tensor; do not change `logits` in place.
# *Hint:* `torch.topk(logits, k, dim=-1).values[:, -1:]` is $\ell^{(k)}$ of every row, shape `[B, 1]`.

# %%
def top_k_filter(logits, k):
    """logits [B, V], k >= 0 -> [B, V]: -inf below each row's k-th largest logit (ties with it kept);
    k = 0 or k >= V: unchanged."""
    ### BEGIN SOLUTION
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # [B, 1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))  # a new tensor: the input stays as it was
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_top_k_filter(top_k_filter)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_top_k_filter` names each of these when your function makes it:
#
# - removed tokens set to 0 instead of −inf
# - one token too many per row (the (k+1)-th kept)
# - one token too few per row (`<=` instead of `<`)
# - probabilities returned instead of logits
# - the mask inverted (the k best removed)
# - a tie at the k-th value broken by position
# - `k = 0` not treated as 'no filtering'
# - the input logits changed in place
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# ### Exercise 2.3 — `top_p_filter`
# **Difficulty** ●●●○○ · **Importance** ●●●○○ · about 15 minutes
#
# **Top-p** or nucleus sampling (Holtzman et al., 2020, *The Curious Case of Neural Text Degeneration*) keeps the
# smallest set of most likely tokens whose probability reaches $p$. Sort each row's probabilities
# $\pi = \mathrm{softmax}(\ell)$ from the largest down, $\pi_{(1)} \ge \pi_{(2)} \ge \dots$; the token of rank $j$ is
# kept when the tokens ranked above it do not yet reach $p$:
#
# $$\text{keep rank } j \iff \sum_{i<j} \pi_{(i)} < p .$$
#
# So the token whose cumulative probability *crosses* $p$ is kept, and the most likely token always is (the sum above
# it is 0). Removed tokens get $-\infty$, in the original vocabulary order; input and output are `[B, V]`; `p = 1`
# means "off". A row may already hold $-\infty$ (after top-k): those tokens have probability 0 and stay removed.
# *Hint:* `torch.sort(..., descending=True)` returns the indices too; `torch.zeros_like(mask).scatter(-1, indices,
# mask_sorted)` puts a decision made in sorted order back in vocabulary order.

# %%
def top_p_filter(logits, p):
    """logits [B, V], 0 < p <= 1 -> [B, V]: -inf outside each row's nucleus (the smallest set of most likely
    tokens whose probability reaches p, the crossing token included); p = 1: unchanged."""
    ### BEGIN SOLUTION
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # [B, V]: probability of the tokens ranked above each one
    drop_sorted = mass_above >= p  # those above already reach p: this token is not needed
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_top_p_filter(top_p_filter)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_top_p_filter` names each of these when your function makes it:
#
# - removed tokens set to 0 instead of −inf
# - the token that crosses p dropped
# - the cumulative sum in vocabulary order (not sorted)
# - sorted from the least likely token up
# - logits accumulated instead of probabilities
# - the input logits changed in place
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# What the filters do to a real distribution: the shipped policy's next-token logits after a prompt. From here on
# the notebook uses the package's `filter_logits` (inside `generate`), which your two functions now match.

# %%
prompt_ids = tokenizer("The movie was", add_special_tokens=False, return_tensors="pt")["input_ids"]
with torch.no_grad():
    next_logits = policy(input_ids=prompt_ids).logits[:, -1].float()  # [1, V]
probs = next_logits.softmax(-1)[0]
top = probs.topk(8)
print("most likely next tokens:", ", ".join(f"{tokenizer.decode([int(i)])!r} {float(q):.3f}" for q, i in zip(top.values, top.indices)))
for name, filtered in [("top-k, k = 50", top_k_filter(next_logits, 50)), ("top-p, p = 0.9", top_p_filter(next_logits, 0.9)),
                       ("top-p, p = 0.5", top_p_filter(next_logits, 0.5))]:
    kept = torch.isfinite(filtered)
    print(f"{name:15}: keeps {int(kept.sum()):5d} of {next_logits.shape[-1]} tokens, "
          f"{float(probs[kept[0]].sum()):.1%} of the probability")
assert torch.equal(top_p_filter(next_logits, 0.9), filter_logits(next_logits, top_p=0.9))
assert torch.equal(top_k_filter(next_logits, 50), filter_logits(next_logits, top_k=50))

# %% [markdown]
# Now whole samples: the seed's prompt and a few others. The tiny 5 M-parameter policy writes reviews that are
# **locally fluent, globally incoherent** — IMDb is all it has ever read; the `gpt2` profile (section 5) runs the
# same cells with the real 124 M GPT-2.
# Beside each sample: its **reward** (notebook 03's shipped reward model, normalised so that 0 is a typical sample of
# this policy) and its **VADER** compound score (Hutto & Gilbert, 2014: a rule-based sentiment lexicon, −1 … +1, one of
# the course's independent judges). The `|` marks where the prompt ends.

# %%
reward_model = load_reward_model(config.name)
reward_model.check_same_tokenizer(tokenizer)
vader = VaderJudge()


def show_samples(out, width=None):
    """Print each sample with its reward and VADER score (both read the prompt + the response)."""
    texts = [prompt + text for prompt, text in zip(out.prompts, out.texts)]
    for prompt, text, reward, compound in zip(out.prompts, out.texts, reward_model.score(texts).tolist(),
                                              vader.compound(texts)):
        shown = f"{prompt!r:40} -> {text!r}" if width else f"{prompt}|{text}"
        print(f"reward {reward:+.2f} | VADER {compound:+.2f} | {shown}")


seed_prompts = ["The movie was a unique experience because", "This film", "I watched this movie last night and",
                "The acting was", "Honestly, the worst part"]
out = generate(policy, tokenizer, seed_prompts, max_new_tokens=40, temperature=1.0, top_k=0, top_p=0.95, seed=0)
show_samples(out)

# %% [markdown]
# And for IMDb prompts from notebook 01 (held-out reviews, 2–8 tokens), the way PPO will see them:

# %%
eval_prompts = build_dataset(tokenizer, config, split="eval")
batch = [ids.tolist() for ids in eval_prompts[:8]["input_ids"]]
out = generate(policy, tokenizer, batch, max_new_tokens=24, seed=1)  # top_k=0, top_p=1: PPO's recipe
print("query_ids:", tuple(out.query_ids.shape), "(left-padded) | response_ids:", tuple(out.response_ids.shape))
print("first row, mask:", out.query_mask[0].tolist(), "|", out.response_mask[0].tolist())
show_samples(out, width=40)

# %% [markdown]
# ### What the sampling knobs do
#
# Lower temperature or nucleus sampling make text more predictable (lower perplexity under the model itself)
# and less varied (fewer distinct bigrams). PPO samples with temperature 1, top-k 0 and top-p 1 — the model's
# own distribution — because the KL penalty assumes samples come from it (truncated sampling makes the KL
# estimate biased, even negative).

# %%
from rlhf_helpers.evaluation import distinct_n
from rlhf_helpers.policy.logprobs import response_logprobs

prompts64 = [ids.tolist() for ids in eval_prompts[: budget(learner=64, ci=8)]["input_ids"]]
rows = []
for temperature, top_k, top_p in [(0.7, 0, 1.0), (1.0, 0, 1.0), (1.3, 0, 1.0), (1.0, 50, 1.0), (1.0, 0, 0.9)]:
    o = generate(policy, tokenizer, prompts64, max_new_tokens=20, temperature=temperature, top_k=top_k, top_p=top_p,
                 seed=0, stop_at_eos=False)
    with torch.no_grad():
        lp = response_logprobs(policy, o.query_ids, o.query_mask, o.response_ids, o.response_mask)
    ppl = float(torch.exp(-lp.sum() / o.response_mask.sum()))
    rows.append((temperature, top_k, top_p, ppl, distinct_n(o.texts, 2)))
print(f"{'temperature':>11} {'top_k':>5} {'top_p':>5} | {'self-perplexity':>15} {'distinct-2':>10}")
for r in rows:
    print(f"{r[0]:11.1f} {r[1]:5d} {r[2]:5.1f} | {r[3]:15.1f} {r[4]:10.2f}")

# %% [markdown]
# ### Bad input gets a clear error

# %%
for kwargs in [dict(prompts=[""]), dict(prompts=["A film"], temperature=0.0), dict(prompts=["A film"], top_p=1.5),
               dict(prompts=["word " * 300])]:
    try:
        generate(policy, tokenizer, **{"max_new_tokens": 8, **kwargs})
    except ValueError as err:
        print(f"{str(kwargs)[:60]:62} -> ValueError: {err}")

# %% [markdown]
# ### Play with it
#
# Type a prompt and move the sliders (in a live Jupyter session). Each sample comes with its reward and VADER score.

# %%
import ipywidgets as widgets
from IPython.display import display

prompt_box = widgets.Text(value="The movie was a unique experience because", description="prompt", layout={"width": "600px"})
wide = {"description_width": "initial"}  # labels in full, not cut off
temperature_slider = widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.1, description="temperature", style=wide)
top_k_slider = widgets.IntSlider(value=0, min=0, max=200, step=5, description="top-k (0=off)", style=wide)
top_p_slider = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p", style=wide)
length_slider = widgets.IntSlider(value=40, min=4, max=120, description="new tokens")
samples_slider = widgets.IntSlider(value=3, min=1, max=8, description="samples")
button = widgets.Button(description="Generate", button_style="primary")
output = widgets.Output()


def on_generate(_=None):
    output.clear_output()
    with output:
        try:
            o = generate(policy, tokenizer, [prompt_box.value] * samples_slider.value, max_new_tokens=length_slider.value,
                         temperature=temperature_slider.value, top_k=top_k_slider.value, top_p=top_p_slider.value)
            show_samples(o)  # with each sample's reward and VADER score
        except ValueError as err:
            print("error:", err)


button.on_click(on_generate)
display(widgets.VBox([prompt_box, temperature_slider, top_k_slider, top_p_slider, length_slider, samples_slider, button, output]))
on_generate()

# %% [markdown]
# ## 5. With real GPT-2 (profile `gpt2`)
#
# Everything above is profile-agnostic. With `RLHF_PROFILE=gpt2` (online, ideally on a GPU) the tokenizer is
# GPT-2's, `load_imdb_splits` reads `stanfordnlp/imdb`, and the same SFT loop *fine-tunes* the hub's 124M `gpt2`
# (a lower learning rate, 5e-5, and 512-token blocks: `get_config("gpt2").sft`, from `rlhf_helpers.config`) — which is
# what `lvwerra/gpt2-imdb`, the starting point of TRL's original IMDb example, was. From the command line:
#
# ```bash
# python -m rlhf_helpers sft --profile gpt2 --sft.max-steps 2000          # one GPU
# accelerate launch -m rlhf_helpers sft --profile gpt2 --sft.max-steps 2000   # several GPUs, same code
# ```
#
# `load_policy("gpt2")` then returns the fine-tuned model from `artifacts/gpt2/sft_policy/`.

# %% [markdown]
# ## Key takeaways
#
# * The SFT objective is next-token cross-entropy with a **one-position shift**: the output at position $t$ predicts
#   token $t + 1$. Perplexity, $\exp$ of that loss on held-out text, is only comparable with the same tokenizer.
# * Training is resumable: the checkpoint holds model, optimiser, scheduler and step, and the batch order is a
#   function of (seed, step), so a killed run continues on the same curve.
# * Batched generation left-pads prompts, counts positions from the mask, caches keys and values, and returns the
#   response tokens only, with a mask that ends at the first `<|endoftext|>`.
# * Top-k keeps the tokens at or above the $k$-th largest logit; top-p keeps the smallest most-likely set that reaches
#   $p$, the crossing token included; both fill with $-\infty$. PPO samples with neither (`top_k=0, top_p=1`), because
#   its KL penalty assumes samples from the model's own distribution.
#
# ## Self-check
#
# 1. A random model over a vocabulary of 8,192 tokens: what loss and perplexity do you expect, and why?
#
#    <details><summary>Answer</summary>About $\log 8192 \approx 9.01$ nats per token and a perplexity of about 8,192:
#    with small random weights every token gets roughly the same probability, $1/V$.</details>
#
# 2. What goes wrong if the loss compares `logits[:, t]` with `input_ids[:, t]` (no shift)?
#
#    <details><summary>Answer</summary>The model is asked to predict the token it is reading. Causal attention lets
#    position $t$ see token $t$, so it learns to copy its input: the loss goes to almost 0 and the model learns nothing
#    about what comes next; generation then fails.</details>
#
# 3. Top-p with $p = 0.01$ on a row whose most likely token has probability 0.4: which tokens survive?
#
#    <details><summary>Answer</summary>Only the most likely one. Its own probability (0.4) already crosses 0.01, and the
#    mass above it is 0 < p, so it is kept; every other token has at least 0.4 above it.</details>
#
# 4. Why does the filter write $-\infty$ rather than 0 into the removed logits?
#
#    <details><summary>Answer</summary>A logit of 0 is an ordinary score: after the softmax it has weight $e^0 = 1$,
#    as much as any token with logit 0, so it could still be sampled. $e^{-\infty} = 0$ removes it exactly.</details>
#
# 5. Why does PPO sample with `top_k=0, top_p=1`?
#
#    <details><summary>Answer</summary>The KL penalty and the PPO ratio are computed with the model's full distribution.
#    Samples from a truncated distribution are not samples of that distribution, so the KL estimate is biased and can
#    even be negative.</details>
#
# **Next: notebook 03** trains the reward model that will tell PPO which reviews are positive — the reward shown beside
# the samples above.
