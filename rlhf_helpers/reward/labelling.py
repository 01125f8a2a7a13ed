"""Human feedback by your own hand: label pairs, compare your labels with the judges, fit Bradley–Terry on them.

Notebook 03 trains the reward model on preferences made from IMDb's labels. This module lets the learner be the
human of "reinforcement learning from *human* feedback" for a few minutes, and measures what that buys:

* `draw_label_pairs`: pairs of SFT-policy continuations of the same held-out prompt, drawn from a seed;
* `LabellingSession`: your labels ("A", "B" or "tie" — *can't tell*), saved after every click to a small JSON
  file that a later session resumes from; `.widget()` is the ipywidgets UI; `scripted_labeller` stands in for you
  when the tests run the notebook (or for the pairs you left unlabelled);
* `agreement_matrix`: how often two raters (you, the reward model, the judges) pick the same side;
* `reward_model_step` (the reference of exercise 3.4), `FrozenFeatureRewardModel` and `fit_head` /
  `bootstrap_accuracy`: Bradley–Terry fitted on a few dozen labels, a linear head on frozen transformer features;
* `label_noise_curve`: held-out accuracy of a bag-of-words Bradley–Terry model as a share of its training labels
  is flipped.

The labels file (``labels.json``) is one JSON object::

    {"format": 1, "question": "...", "choices": {"A": "...", "B": "...", "tie": "..."},
     "seed": 0, "profile": "tiny", "updated": "2025-01-01T12:00:00+00:00",
     "pairs": [{"prompt": "...", "a": "...", "b": "..."}, ...],      # the texts, so a later session needs no model
     "labels": [null, "A", "tie", "B", ...]}                            # one per pair; null: not labelled yet

Only your own clicks are written there; a stand-in's labels live in memory (`LabellingSession.completed`).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import BadValueError
from ..core.files import read_json_file, write_json_whole
from ..core.tensors import last_token_index, position_ids_from_mask, right_pad

__all__ = ["CHOICES", "QUESTION", "LabelPair", "draw_label_pairs", "LabellingSession", "scripted_labeller",
           "verdicts", "agreement_matrix", "preference_pairs", "reward_model_step", "FrozenFeatureRewardModel",
           "PairBatch", "pair_batch", "fit_head", "pair_accuracy_of", "bootstrap_accuracy", "flip_mask",
           "label_noise_curve"]

QUESTION = "Which continuation makes the more positive review?"
#: The three answers, as stored in the file, with the text of their buttons.
CHOICES = {"A": "A is more positive", "B": "B is more positive", "tie": "can't tell"}
FORMAT = 1


# ----------------------------------------------------------------------------------------------
# The pairs to label
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelPair:
    """One question: a prompt and two continuations of it, ``a`` and ``b`` (each starts where the prompt ends)."""

    prompt: str
    a: str
    b: str

    def texts(self) -> tuple[str, str]:
        """The two whole reviews, ``(prompt + a, prompt + b)``: what the reward model and the judges read."""
        return self.prompt + self.a, self.prompt + self.b


def draw_label_pairs(policy, tokenizer, config, n_pairs: int = 40, seed: int = 0, min_tokens: int = 12,
                     max_tokens: int = 20) -> list[LabelPair]:
    """`n_pairs` pairs of continuations of held-out prompts, sampled from `policy`; the same seed, the same pairs.

    Prompts: the held-out ("eval") prompts of `rlhf_helpers.data.build_dataset` (2–8 tokens of a review), shuffled
    with `seed`. Continuations: `sample_responses` with PPO's sampling (``config.ppo``: temperature, top-k/top-p),
    A and B of a pair from one random stream, both cut to the *same* length (drawn per pair from
    ``min_tokens..max_tokens``): with equal lengths, "longer" cannot be what decides.
    """
    from ..data import build_dataset
    from ..policy.generation import sample_responses

    if n_pairs < 1:
        raise BadValueError(f"n_pairs must be >= 1, got {n_pairs}")
    prompts = build_dataset(tokenizer, config, split="eval").shuffle(seed=seed)
    queries = [ids.tolist() for ids in prompts.select(range(min(n_pairs, len(prompts))))["input_ids"]]
    generator = torch.Generator().manual_seed(seed)
    ppo = config.ppo
    sides = [sample_responses(policy, tokenizer, queries, min_tokens, max_tokens, length_seed=seed,  # same lengths
                              temperature=ppo.temperature, top_k=ppo.top_k, top_p=ppo.top_p, generator=generator)
             for _ in ("a", "b")]
    return [LabelPair(prompt, a, b) for prompt, a, b in zip(sides[0].prompts, sides[0].texts, sides[1].texts)]


# ----------------------------------------------------------------------------------------------
# The labelling session: your labels, saved after every click
# ----------------------------------------------------------------------------------------------


def _check_choice(choice) -> str | None:
    if choice is None:
        return None
    canonical = {"a": "A", "b": "B", "tie": "tie"}.get(str(choice).strip().lower())
    if canonical is None:
        raise BadValueError(f"a label is one of {list(CHOICES)} (or None to clear it), got {choice!r}")
    return canonical


class LabellingSession:
    """Your labels of `pairs`, kept in the JSON file `path` (written whole after every change).

    ``labels[i]`` is "A", "B", "tie" (can't tell) or None (not labelled yet). Open an existing file with
    `LabellingSession.open`, which resumes: the pairs come from the file, so they are the ones you labelled.
    """

    def __init__(self, pairs: Sequence[LabelPair], path: str | Path, labels: Sequence | None = None,
                 meta: dict | None = None):
        if not pairs:
            raise BadValueError("a labelling session needs at least one pair")
        self.pairs = list(pairs)
        self.path = Path(path)
        labels = [None] * len(self.pairs) if labels is None else [_check_choice(x) for x in labels]
        if len(labels) != len(self.pairs):
            raise BadValueError(f"{len(labels)} labels for {len(self.pairs)} pairs")
        self.labels: list[str | None] = labels
        self.meta = dict(meta or {})

    # -- the file ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, draw: Callable[[], Sequence[LabelPair]], meta: dict | None = None):
        """Resume from `path` if it exists; otherwise call `draw()` for the pairs and write the file at once."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        session = cls(draw(), path, meta=meta)
        session.save()
        return session

    @classmethod
    def load(cls, path: str | Path) -> "LabellingSession":
        path = Path(path)
        data = read_json_file(path, "labels file")
        way_out = f"Delete {path} to start labelling again from new pairs."
        try:
            pairs = [LabelPair(p["prompt"], p["a"], p["b"]) for p in data["pairs"]]
            labels = data["labels"]
        except (KeyError, TypeError) as err:
            raise BadValueError(f"{path} is not a labels file (no {err} in it). {way_out}") from err
        try:
            return cls(pairs, path, labels, meta={k: data[k] for k in ("seed", "profile") if k in data})
        except BadValueError as err:
            raise BadValueError(f"{path}: {err}. {way_out}") from err

    def to_dict(self) -> dict:
        return {"format": FORMAT, "question": QUESTION, "choices": CHOICES, **self.meta,
                "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "pairs": [asdict(p) for p in self.pairs], "labels": self.labels}

    def save(self) -> None:
        """Write the file whole (`write_json_whole`: a temporary file beside it, then a rename), so an interrupted save
        leaves the previous file, never half of the new one."""
        write_json_whole(self.path, self.to_dict())

    # -- labelling --------------------------------------------------------------------------------

    def label(self, i: int, choice) -> None:
        """Set pair `i`'s label ("A", "B", "tie"; None clears it) and save."""
        if not 0 <= i < len(self.pairs):
            raise BadValueError(f"pair {i} does not exist: there are {len(self.pairs)} (0..{len(self.pairs) - 1})")
        self.labels[i] = _check_choice(choice)
        self.save()

    @property
    def n_labelled(self) -> int:
        return sum(x is not None for x in self.labels)

    def next_unlabelled(self, after: int = -1) -> int | None:
        """The first unlabelled pair after index `after` (wrapping round), or None when every pair is labelled."""
        n = len(self.pairs)
        for k in range(1, n + 1):
            i = (after + k) % n
            if self.labels[i] is None:
                return i
        return None

    def completed(self, stand_in: Callable[[list[LabelPair]], list[str]]) -> tuple[list[str], list[str]]:
        """``(labels, who)`` for every pair: your label where you gave one, `stand_in`'s elsewhere; ``who[i]`` is
        "you" or "stand-in". Nothing is written: the file keeps only your own labels."""
        theirs = stand_in(self.pairs)
        labels = [mine if mine is not None else _check_choice(other) for mine, other in zip(self.labels, theirs)]
        return labels, ["you" if mine is not None else "stand-in" for mine in self.labels]

    # -- the UI -----------------------------------------------------------------------------------

    def widget(self) -> "LabellingWidget":
        """The labelling UI (ipywidgets): the pair, three answer buttons, previous/next, a progress line."""
        return LabellingWidget(self)


class LabellingWidget:
    """What `LabellingSession.widget` returns: displays as its ``box``; ``buttons`` ("A", "B", "tie", "previous",
    "next") can be clicked from code (``.click()``), which is how the tests drive it without a browser."""

    def __init__(self, session: LabellingSession):
        import ipywidgets as widgets

        self.session = session
        first = session.next_unlabelled()
        self.position = 0 if first is None else first
        self.progress = widgets.HTML()
        self.pair = widgets.HTML(layout={"width": "760px"})
        self.buttons = {choice: widgets.Button(description=text, layout={"width": "180px"},
                                               button_style="success" if choice != "tie" else "")
                        for choice, text in CHOICES.items()}
        self.buttons["previous"] = widgets.Button(description="◀ previous", layout={"width": "110px"})
        self.buttons["next"] = widgets.Button(description="next ▶", layout={"width": "110px"})
        for choice in CHOICES:
            self.buttons[choice].on_click(lambda _, choice=choice: self.answer(choice))
        self.buttons["previous"].on_click(lambda _: self.move(-1))
        self.buttons["next"].on_click(lambda _: self.move(+1))
        self.box = widgets.VBox([self.progress, self.pair,
                                 widgets.HBox([self.buttons[c] for c in CHOICES]),
                                 widgets.HBox([self.buttons["previous"], self.buttons["next"]])])
        self.show()

    def answer(self, choice: str) -> None:
        """Record `choice` for the pair shown (saved at once), then show the next unlabelled pair."""
        self.session.label(self.position, choice)
        following = self.session.next_unlabelled(after=self.position)
        if following is not None:
            self.position = following
        self.show()

    def move(self, step: int) -> None:
        self.position = (self.position + step) % len(self.session.pairs)
        self.show()

    def show(self) -> None:
        s, i = self.session, self.position
        pair, current = s.pairs[i], s.labels[i]
        done = "every pair labelled: run the cells below" if s.next_unlabelled() is None else ""
        self.progress.value = (f"<b>{s.n_labelled} of {len(s.pairs)} labelled</b> · pair {i + 1} · saved to "
                               f"<code>{escape(str(s.path))}</code> {done}")
        label = f"your answer: <b>{escape(CHOICES[current])}</b>" if current else "not labelled yet"
        quote = "style='margin: 4px 0 4px 0; padding: 4px 8px; border-left: 4px solid {}'"
        self.pair.value = (f"<p><b>{escape(QUESTION)}</b> ({label})</p>"
                           f"<p><i>prompt:</i> {escape(pair.prompt)} …</p>"
                           f"<p {quote.format('#1f77b4')}><b>A</b> … {escape(pair.a)}</p>"
                           f"<p {quote.format('#ff7f0e')}><b>B</b> … {escape(pair.b)}</p>")

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)


def scripted_labeller(score: Callable[[list[str]], np.ndarray], noise: float = 0.1, tie_margin: float = 0.1,
                      seed: int = 0) -> Callable[[list[LabelPair]], list[str]]:
    """A stand-in for a human: labels each pair by a judge's score, with the kind of noise people add.

    `score` maps texts to numbers (higher = more positive), e.g. VADER's compound score. A pair is "tie" (can't
    tell) when its two reviews score within `tie_margin`; otherwise the higher one wins, and a share `noise` of
    those verdicts is flipped at random (seeded: the same pairs get the same labels).
    """
    if not 0 <= noise <= 1:
        raise BadValueError(f"noise is a probability in [0, 1], got {noise}")

    def label(pairs: list[LabelPair]) -> list[str]:
        a, b = (np.asarray(score([p.texts()[side] for p in pairs]), dtype=float) for side in (0, 1))
        flips = np.random.default_rng(seed).random(len(pairs)) < noise
        out = []
        for delta, flip in zip(a - b, flips):
            if abs(delta) < tie_margin:
                out.append("tie")
            else:
                out.append("A" if (delta > 0) != flip else "B")
        return out

    return label


# ----------------------------------------------------------------------------------------------
# Agreement between raters
# ----------------------------------------------------------------------------------------------


def verdicts(score_a, score_b) -> list[str]:
    """"A", "B" or "tie" for each pair from two score arrays ``[N]`` (higher = more positive; equal = tie)."""
    a, b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    return ["A" if x > y else "B" if y > x else "tie" for x, y in zip(a, b)]


def agreement_matrix(raters: dict[str, Sequence[str]]):
    """``(agree, n)``: two square DataFrames over the raters. ``agree[r][s]`` is the share of pairs on which raters
    r and s pick the same side, among the ``n[r][s]`` pairs where neither said "tie" (NaN when there are none)."""
    import pandas as pd

    names = list(raters)
    lengths = {len(v) for v in raters.values()}
    if len(lengths) != 1:
        raise BadValueError(f"every rater must label the same pairs; got lengths {sorted(lengths)}")
    agree = pd.DataFrame(np.nan, index=names, columns=names)
    n = pd.DataFrame(0, index=names, columns=names)
    for r in names:
        for s in names:
            both = [(x, y) for x, y in zip(raters[r], raters[s]) if x != "tie" and y != "tie"]
            n.loc[r, s] = len(both)
            if both:
                agree.loc[r, s] = float(np.mean([x == y for x, y in both]))
    return agree, n


def preference_pairs(pairs: Sequence[LabelPair], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(chosen texts, rejected texts)`` of the labelled pairs; a "tie" says nothing Bradley–Terry can use."""
    chosen, rejected = [], []
    for pair, label in zip(pairs, labels):
        a, b = pair.texts()
        if label == "A":
            chosen.append(a), rejected.append(b)
        elif label == "B":
            chosen.append(b), rejected.append(a)
    return chosen, rejected


# ----------------------------------------------------------------------------------------------
# Bradley–Terry on a few labels: one training step, a head on frozen features
# ----------------------------------------------------------------------------------------------


def reward_model_step(model, optimizer, chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> float:
    """One Bradley–Terry training step (the reference of exercise 3.4); returns the loss before the step.

    Args:
        model: called as ``model(input_ids [N, L], attention_mask [N, L]) -> rewards [N]``, each read at its row's
            last real token (`RewardModel`, `FrozenFeatureRewardModel`).
        optimizer: a torch optimizer over the parameters to train.
        chosen_ids, chosen_mask: ``[B, Lc]``, the preferred text of each pair; rejected_ids, rejected_mask:
            ``[B, Lr]``. The two sides are scored in two forward passes, so they may be padded to other lengths.
    Returns:
        ``mean(−log σ(r_c − r_r))`` as a Python float (the tensor, with its graph, is freed).
    """
    r_chosen = model(chosen_ids, chosen_mask)  # [B]
    r_rejected = model(rejected_ids, rejected_mask)  # [B]
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    optimizer.zero_grad()  # gradients add up in .grad: clear the previous step's first
    loss.backward()
    optimizer.step()
    return loss.item()


class FrozenFeatureRewardModel(nn.Module):
    """``r(x) = w · h(x)``: a frozen transformer's hidden state at the last real token, and a trainable linear head.

    The cheapest honest Bradley–Terry fit on a few dozen labels: only the head's H numbers learn (H = 256 for the
    tiny profile), so 40 labels are not asked to move 5 million weights. The transformer never changes, so the
    features of a text are computed once and cached (keyed by its real tokens: the same text padded otherwise
    gives the same features, as position ids come from the mask). ``forward(input_ids [N, L], attention_mask
    [N, L]) -> rewards [N]``, like `RewardModel`'s.
    """

    def __init__(self, transformer: nn.Module):
        super().__init__()
        # Kept out of the registered sub-modules: it is frozen, not part of what `parameters()` trains or saves.
        self._transformer = [transformer]
        self.head = nn.Linear(transformer.config.n_embd, 1, bias=False)  # no bias: BT sees only differences
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.reset_head()

    def reset_head(self) -> None:
        """A fresh head, zero: every text scores 0, every pair is a coin flip until it learns (and the fit is
        deterministic: no random start)."""
        nn.init.zeros_(self.head.weight)

    @torch.no_grad()
    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """``[N, H]`` hidden states at each row's last real token (the rows not cached yet in batches)."""
        keys = [tuple(t for t, m in zip(ids, mask) if m)  # the real tokens of each row (lists: fast to walk)
                for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            self._compute(missing, batch_size)
        return torch.stack([self.cache[k] for k in keys])

    def _compute(self, rows: list[tuple[int, ...]], batch_size: int) -> None:
        transformer = self._transformer[0]
        was_training = transformer.training
        transformer.eval()  # no dropout: a text always gets the same features
        try:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                ids, mask = right_pad([list(r) for r in chunk], 0)  # the pad id is never read: masked out
                hidden = transformer(input_ids=ids, attention_mask=mask,
                                     position_ids=position_ids_from_mask(mask)).last_hidden_state  # [n, L, H]
                last = hidden[torch.arange(len(chunk)), last_token_index(mask)].float()  # [n, H]
                self.cache.update(zip(chunk, last))
        finally:
            transformer.train(was_training)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask)).squeeze(-1)


@dataclass
class PairBatch:
    """Tokenized pairs, padded on the right: ``chosen_ids / chosen_mask [B, Lc]``, ``rejected_ids / rejected_mask
    [B, Lr]``. ``batch[rows]`` selects pairs (a bootstrap resample is ``batch[random rows]``)."""

    chosen_ids: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_ids: torch.Tensor
    rejected_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.chosen_ids)

    def __getitem__(self, rows) -> "PairBatch":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return PairBatch(*(t[rows] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.chosen_ids, self.chosen_mask, self.rejected_ids, self.rejected_mask


def pair_batch(tokenizer, chosen: Sequence[str], rejected: Sequence[str], max_length: int = 256) -> PairBatch:
    """Tokenize and right-pad `chosen` and `rejected` texts (each cut to its first `max_length` tokens)."""
    if len(chosen) != len(rejected) or not chosen:
        raise BadValueError(f"need as many chosen as rejected texts, at least one: got {len(chosen)} and {len(rejected)}")
    encode = lambda texts: [ids[:max_length] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return PairBatch(*right_pad(encode(chosen), tokenizer.pad_token_id), *right_pad(encode(rejected), tokenizer.pad_token_id))


def fit_head(model: FrozenFeatureRewardModel, batch: PairBatch, step: Callable = reward_model_step, steps: int = 100,
             learning_rate: float = 0.01) -> list[float]:
    """Fit `model`'s head on `batch` from zero: `steps` full-batch Adam steps, each taken by ``step(model, optimizer,
    chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> loss`` (your exercise 3.4, or the reference). Returns the
    losses. The number of steps is the only brake on the weights (a few dozen pairs are separable in 256
    dimensions, where the best fit has infinite weights): few steps, a small model."""
    model.reset_head()
    optimizer = torch.optim.Adam(model.head.parameters(), lr=learning_rate)
    return [float(step(model, optimizer, *batch.tensors())) for _ in range(steps)]


@torch.no_grad()
def pair_accuracy_of(model, batch: PairBatch) -> float:
    """The share of `batch`'s pairs whose chosen text `model` scores strictly higher."""
    r_c = model(batch.chosen_ids, batch.chosen_mask)
    r_r = model(batch.rejected_ids, batch.rejected_mask)
    return (r_c > r_r).float().mean().item()


def bootstrap_accuracy(model: FrozenFeatureRewardModel, train: PairBatch, heldout: PairBatch, n_resamples: int = 20,
                       seed: int = 0, size: int | None = None, replace: bool = True, step: Callable = reward_model_step,
                       **fit) -> np.ndarray:
    """Held-out accuracy of `n_resamples` heads, each fitted on a resample of `train`: how much the result depends
    on *which* few pairs were labelled. ``[n_resamples]``.

    By default a bootstrap resample (as many pairs as `train`, drawn with replacement): all one has when the labels
    are one's own 40. With ``size=k, replace=False`` each head gets k different pairs of a larger pool instead: a new
    labelling session of k pairs each time. `fit`: `fit_head`'s settings (``steps``, ``learning_rate``).
    """
    size = len(train) if size is None else size
    if not replace and size > len(train):
        raise BadValueError(f"cannot draw {size} different pairs from {len(train)}")
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(n_resamples):
        fit_head(model, train[rng.choice(len(train), size, replace=replace)], step=step, **fit)
        accuracies.append(pair_accuracy_of(model, heldout))
    return np.array(accuracies)


# ----------------------------------------------------------------------------------------------
# Label noise: how wrong labels hurt a reward model
# ----------------------------------------------------------------------------------------------


def flip_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``[n]`` bools, exactly ``round(fraction · n)`` of them True, at seeded random places: the pairs to flip."""
    if not 0 <= fraction <= 1:
        raise BadValueError(f"fraction is in [0, 1], got {fraction}")
    flips = np.zeros(n, dtype=bool)
    flips[np.random.default_rng(seed).choice(n, int(round(fraction * n)), replace=False)] = True
    return flips


def label_noise_curve(train_chosen: Sequence[str], train_rejected: Sequence[str], test_chosen: Sequence[str],
                      test_rejected: Sequence[str], fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
                      seeds: Sequence[int] = (0, 1, 2), C: float = 4.0, ngram_range: tuple[int, int] = (1, 1)):
    """Held-out pairwise accuracy of a bag-of-words Bradley–Terry model when a share of its training pairs is flipped.

    The model: TF-IDF features φ (fitted on the training texts) and a linear reward r(x) = w·φ(x). Bradley–Terry on
    a pair is logistic regression on the difference φ(chosen) − φ(rejected) with label 1; each pair also enters
    mirrored (−difference, label 0), so the fit is symmetric and needs no intercept. A flipped pair is a label that
    says the rejected text was preferred. For every flip fraction and seed, the pairs to flip are drawn
    (`flip_mask`), the model refitted, and the accuracy measured on the clean test pairs (strictly higher counts).

    Returns a DataFrame with columns ``flipped`` (the fraction), ``seed``, ``accuracy``.
    """
    import pandas as pd
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from ..data import clean_review

    if len(train_chosen) != len(train_rejected) or len(test_chosen) != len(test_rejected):
        raise BadValueError("chosen and rejected texts must pair up (as many of each)")
    clean = lambda texts: [clean_review(t) for t in texts]
    vectorizer = TfidfVectorizer(ngram_range=ngram_range, min_df=2, sublinear_tf=True)
    vectorizer.fit(clean(train_chosen) + clean(train_rejected))
    difference = vectorizer.transform(clean(train_chosen)) - vectorizer.transform(clean(train_rejected))  # [N, V]
    test = vectorizer.transform(clean(test_chosen)) - vectorizer.transform(clean(test_rejected))  # [M, V]
    n = difference.shape[0]
    rows = []
    for fraction in fractions:
        for seed in seeds:
            sign = np.where(flip_mask(n, fraction, seed), -1.0, 1.0)  # a flipped pair: chosen and rejected swapped
            signed = sp.diags(sign) @ difference
            features = sp.vstack([signed, -signed])
            labels = np.r_[np.ones(n), np.zeros(n)]
            model = LogisticRegression(C=C, fit_intercept=False, max_iter=2000).fit(features, labels)
            margin = test @ model.coef_[0]  # r(chosen) − r(rejected) of each test pair
            rows.append({"flipped": fraction, "seed": seed, "accuracy": float((margin > 0).mean())})
    return pd.DataFrame(rows)
