"""The reward model: a GPT-2 that reads a text and returns one number, trained on preference pairs.

**Bradley–Terry** (Bradley & Terry 1952). Give each text y a hidden "quality" r(y); the probability that
a person prefers y_c to y_r is modelled as

    P(y_c ≻ y_r) = exp r(y_c) / (exp r(y_c) + exp r(y_r)) = σ(r(y_c) − r(y_r)).

Maximum likelihood on pairs (y_c chosen, y_r rejected) minimises

    L = −E log σ(r_θ(y_c) − r_θ(y_r))                                   (Ouyang et al. 2022, eq. 1)

Only *differences* of rewards enter: adding a constant to every reward changes nothing. So (1) the head
has no bias (it would get zero gradient), and (2) the scale is set afterwards: we **normalise** the
reward to mean 0 and std 1 on responses sampled from the reference (SFT) policy (Ziegler et al. 2019;
Huang et al. 2023, "Reward model implementation details": reward normalisation) and store mean/std *in the model*, so every consumer gets the same scale.

**Architecture** (InstructGPT practice): the SFT policy's transformer (``GPT2Model``, initialised from the
policy) + a linear head ``n_embd → 1`` applied to the hidden state of the **last real token**, found from
the attention mask (padding may be on the left, the right, or both, as in PPO's ``[query | response]``).
Position ids are computed from the mask, so padding never shifts GPT-2's absolute positions.

This file: `RewardModel`, `bradley_terry_loss`, batching of pairs, save / load (safetensors + json +
tokenizer in one directory) and `RewardScorer`, what PPO and the notebooks call. Training, normalisation
and the ``reward`` stage are in `rlhf_helpers.reward.training`.

Shapes: B = pairs in a batch, N = texts, L = padded length, H = n_embd.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from ..core.errors import (
    BadTypeError, BadValueError, DamagedFileError, MissingError, NonFiniteLossError, NotADirectoryRefusal,
)
from ..sources import resolve_source
from ..core.precision import autocast
from ..core.tensors import last_token_index, position_ids_from_mask, right_pad
from ..data.preferences import truncate
from ..core.files import permissions_from_umask, read_json_file, restore_hint
from ..data.tokenizer import load_tokenizer, tokenizer_fingerprint
from ..policy.model import (
    check_tokenizer_matches, expected_tokenizer_fingerprint, refuse_other_kind, safetensors_keys, source_of,
)

WEIGHTS_NAME = "model.safetensors"
REWARD_CONFIG_NAME = "reward_config.json"


# ----------------------------------------------------------------------------------------------
# The model and the loss
# ----------------------------------------------------------------------------------------------


class RewardModel(nn.Module):
    """GPT-2 transformer + scalar head on the last real token; returns one reward per sequence.

    ``forward(input_ids [N, L], attention_mask [N, L]) -> raw rewards [N]`` (float32).
    ``normalise(raw)`` maps raw rewards to ``(raw - reward_mean) / reward_std``.
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        # No bias: the Bradley–Terry loss sees only differences r_c - r_r, so a bias would never learn.
        self.head = nn.Linear(config.n_embd, 1, bias=False)
        # Stiennon et al. 2020 initialise the reward head with std 1/sqrt(d_model + 1): rewards start
        # at the scale of a unit-variance input projected once, neither zero nor large.
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(config.n_embd + 1))
        # Normalisation, saved with the weights (persistent buffers).
        self.register_buffer("reward_mean", torch.zeros((), dtype=torch.float32))
        self.register_buffer("reward_std", torch.ones((), dtype=torch.float32))

    @classmethod
    def from_policy(cls, policy: GPT2LMHeadModel, seed: int = 0) -> "RewardModel":
        """A reward model whose transformer is a copy of the policy's (InstructGPT: RM from the SFT model)."""
        torch.manual_seed(seed)
        model = cls(GPT2Config.from_dict(policy.config.to_dict()))
        model.transformer.load_state_dict(policy.transformer.state_dict())
        return model

    @classmethod
    def from_sequence_classifier(cls, classifier) -> "RewardModel":
        """Wrap a ``GPT2ForSequenceClassification`` with ``num_labels=1`` (e.g. trained by TRL): same weights."""
        if classifier.config.num_labels != 1:
            raise BadValueError(f"A reward model has one output; this classifier has num_labels={classifier.config.num_labels}.")
        model = cls(GPT2Config.from_dict(classifier.config.to_dict()))
        model.transformer.load_state_dict(classifier.transformer.state_dict())
        model.head.weight.data.copy_(classifier.score.weight.data)
        return model.to(classifier.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) rewards ``[N]`` in float32, read at each row's last real token."""
        if input_ids.shape != attention_mask.shape:
            raise BadValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ in shape.")
        if input_ids.shape[1] > self.config.n_positions:
            raise BadValueError(f"Sequences of {input_ids.shape[1]} tokens exceed the context of {self.config.n_positions}; "
                                "truncate them first (RewardScorer does).")
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state  # [N, L, H]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = hidden[rows, last_token_index(attention_mask)]  # [N, H]
        # The head in float32 even under bf16 autocast: rewards are compared by small differences.
        with torch.autocast(device_type=last.device.type, enabled=False):
            return self.head(last.float()).squeeze(-1)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.reward_mean) / self.reward_std

    def set_normalisation(self, mean: float, std: float) -> None:
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise BadValueError(f"Normalisation needs a finite mean and a finite std > 0; got mean={mean}, std={std}.")
        self.reward_mean.fill_(mean)
        self.reward_std.fill_(std)


def bradley_terry_loss(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> torch.Tensor:
    """``mean(−log σ(r_c − r_r))`` over pairs: the negative log-likelihood of the Bradley–Terry model.

    Args:
        rewards_chosen, rewards_rejected: ``[B]`` rewards of the chosen and rejected text of each pair.
    Returns:
        Scalar loss. ``log σ`` is computed as ``F.logsigmoid`` (= −softplus(−x)), which stays finite for
        large negative margins where ``log(sigmoid(x))`` would underflow to log(0) = −inf.
    """
    if rewards_chosen.shape != rewards_rejected.shape:
        raise BadValueError(f"chosen {tuple(rewards_chosen.shape)} and rejected {tuple(rewards_rejected.shape)} rewards differ in shape.")
    return -F.logsigmoid(rewards_chosen - rewards_rejected).mean()


# ----------------------------------------------------------------------------------------------
# Batches of pairs
# ----------------------------------------------------------------------------------------------


def collate_pairs(chosen_ids: list[list[int]], rejected_ids: list[list[int]], pad_id: int):
    """One ``[2B, L]`` batch: the B chosen rows first, then the B rejected rows (one forward pass for both)."""
    return right_pad(list(chosen_ids) + list(rejected_ids), pad_id)


def pair_rewards(model: RewardModel, chosen_ids, rejected_ids, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards ``([B], [B])`` of the chosen and rejected sides of B tokenized pairs."""
    ids, mask = collate_pairs(chosen_ids, rejected_ids, pad_id)
    rewards = model(ids.to(device), mask.to(device))
    return rewards.chunk(2)


@torch.no_grad()
def evaluate_pairs(model: RewardModel, pairs, pad_id: int, batch_size: int = 64, autocast_dtype=None) -> dict:
    """Loss, accuracy (chosen strictly higher) and mean margin of `model` on tokenized pairs.

    `pairs`: a `Dataset` or dict with ``chosen_ids`` / ``rejected_ids`` columns (`preferences.tokenize_pairs`).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen_ids, rejected_ids = list(pairs["chosen_ids"]), list(pairs["rejected_ids"])
    chosen_all, rejected_all = [], []
    # Pairs sorted by length waste less compute on padding; the order does not change the metrics.
    order = sorted(range(len(chosen_ids)), key=lambda i: max(len(chosen_ids[i]), len(rejected_ids[i])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        with autocast(device, autocast_dtype):
            r_c, r_r = pair_rewards(model, [chosen_ids[i] for i in chunk], [rejected_ids[i] for i in chunk], pad_id, device)
        chosen_all.append(r_c.float().cpu())
        rejected_all.append(r_r.float().cpu())
    model.train(was_training)
    r_c, r_r = torch.cat(chosen_all), torch.cat(rejected_all)
    return {"loss": bradley_terry_loss(r_c, r_r).item(), "accuracy": (r_c > r_r).float().mean().item(),
            "margin": (r_c - r_r).mean().item()}


# ----------------------------------------------------------------------------------------------
# Save / load and the scorer
# ----------------------------------------------------------------------------------------------


def save_reward_model(model: RewardModel, tokenizer, directory: str | Path, extra: dict | None = None) -> Path:
    """Write weights + normalisation (``model.safetensors``), GPT-2 ``config.json``, ``reward_config.json``
    (human-readable copy of the normalisation and settings) and the tokenizer files to `directory`.

    The tokenizer's fingerprint goes into both configs (``tokenizer_fingerprint``); a tokenizer that is not the
    one the model's config records is refused.
    """
    directory = Path(directory)
    fingerprint = tokenizer_fingerprint(tokenizer)
    check_tokenizer_matches(model, tokenizer, where="(saving the reward model)")
    model.config.tokenizer_fingerprint = fingerprint
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    model.config.save_pretrained(str(directory))
    info = {**(extra or {}), "reward_mean": model.reward_mean.item(), "reward_std": model.reward_std.item(),
            "tokenizer_fingerprint": fingerprint,
            "architecture": "GPT2Model + Linear(n_embd, 1, bias=False) on the last real token"}
    (directory / REWARD_CONFIG_NAME).write_text(json.dumps(info, indent=2) + "\n")
    tokenizer.save_pretrained(str(directory))
    permissions_from_umask(directory)
    return directory


def _resolve_reward_dir(profile_or_path) -> Path:
    """The directory a profile name or path means (`rlhf_helpers.sources.resolve_source`)."""
    return Path(resolve_source("reward", profile_or_path))


def load_reward_model_weights(profile_or_path="tiny", device="cpu") -> tuple[RewardModel, object, dict]:
    """``(RewardModel in eval mode, tokenizer, reward_config dict)`` from a directory or profile name.

    Raises FileNotFoundError (no or an incomplete directory), ValueError (a policy's directory, a corrupt JSON
    file, a tokenizer that is not the model's) or RuntimeError (corrupt weights), each naming the file and the
    way out. Models saved before fingerprints were recorded are checked by vocabulary size and EOS id (the
    shipped one against the shipped tokenizer's fingerprint).
    """

    path = _resolve_reward_dir(profile_or_path)
    if path.is_file():
        raise NotADirectoryRefusal(f"{path} is a file; a reward model is a directory written by "
                                 "`python -m rlhf_helpers reward` (config.json, model.safetensors, reward_config.json, "
                                 "tokenizer.json).")
    if not path.is_dir():
        raise MissingError(f"No reward model at {path}. Train one with `python -m rlhf_helpers reward` "
                           "(or pass a directory written by `save_reward_model`).")
    for needed in ("config.json", WEIGHTS_NAME, "tokenizer.json"):
        if not (path / needed).is_file():
            raise MissingError(f"Reward model {path} is incomplete: {needed} is missing. "
                               f"{restore_hint(path, 'reward')}.")
    read_json_file(path / "config.json", "model config", kind="reward")
    info = read_json_file(path / REWARD_CONFIG_NAME, "reward config", missing_ok=True, kind="reward") or {}
    keys = safetensors_keys(path / WEIGHTS_NAME, "reward")
    refuse_other_kind(path, "reward", keys)
    try:
        config = GPT2Config.from_pretrained(str(path))
    except Exception as err:
        raise BadValueError(f"{path / 'config.json'} could not be read as a GPT-2 config ({type(err).__name__}: {err}). "
                            f"{restore_hint(path, 'reward')}.") from err
    tokenizer = load_tokenizer(path)
    model = RewardModel(config)
    try:
        state = load_file(str(path / WEIGHTS_NAME))
    except Exception as err:
        raise DamagedFileError(f"{path / WEIGHTS_NAME} is corrupt or truncated ({type(err).__name__}: {err}). "
                               f"{restore_hint(path, 'reward')}.") from err
    try:
        model.load_state_dict(state, strict=True)
    except Exception as err:
        raise DamagedFileError(f"The weights in {path / WEIGHTS_NAME} do not fit a reward model of the shape in "
                               f"config.json ({type(err).__name__}: {err}); they may be corrupt or from another "
                               f"architecture. {restore_hint(path, 'reward')}.") from err
    model.source_dir = str(path)
    expected = info.get("tokenizer_fingerprint") or expected_tokenizer_fingerprint(config, path)
    check_tokenizer_matches(model, tokenizer, where=f"(reward model in {path})", expected_fingerprint=expected)
    if not getattr(model.config, "tokenizer_fingerprint", None):
        model.config.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
    return model.to(device).eval(), tokenizer, info


class RewardScorer:
    """What every consumer of the reward model uses: ``score(texts) -> FloatTensor[N]`` (normalised).

    Bad input, and what happens:

    * not a list (or tuple) of strings -> TypeError; an empty string -> ValueError (it has no last token to read);
      an empty list -> an empty tensor.
    * ``max_length`` outside ``[2, n_positions]`` or ``batch_size < 1`` -> ValueError when the scorer is built.
    * a text longer than the context -> only ``max_length`` tokens are scored (the first or the last,
      as the model was trained: ``keep``), and a warning says so (once per scorer).
    * NaN / inf rewards -> FloatingPointError naming the texts.
    * the policy's tokenizer differs (fingerprint: vocabulary and special ids) -> `check_same_tokenizer` raises
      ValueError naming both tokenizers' directories.

    Texts are scored exactly as given (no cleaning): the reward model was trained on `clean_review`
    output, which is also what the SFT policy writes.
    """

    def __init__(self, model: RewardModel, tokenizer, max_length: int | None = None, keep: str = "first",
                 batch_size: int = 64, autocast_dtype: torch.dtype | None = None):
        truncate([], 1, keep)  # validates `keep`
        context = model.config.n_positions
        if max_length is None:
            max_length = context
        if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or not 2 <= max_length <= context:
            raise BadValueError(f"max_length must be an integer from 2 to the reward model's context of {context} tokens "
                                f"(or None for the whole context); got {max_length!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise BadValueError(f"batch_size must be an integer >= 1; got {batch_size!r}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.keep = keep
        self.batch_size = int(batch_size)
        self.autocast_dtype = autocast_dtype  # None: float32 (exact, the default); bf16 is ~3x faster on CPU
        self._warned_truncation = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut to `max_length` tokens (with a one-time warning)."""
        if isinstance(texts, str):
            raise BadTypeError("score takes a list of texts; wrap a single text in a list: [text].")
        if not isinstance(texts, (list, tuple)):
            raise BadTypeError(f"score takes a list (or tuple) of strings; got a {type(texts).__name__}"
                               + (" (iterating it would score its keys)" if isinstance(texts, dict) else "")
                               + ". Pass list(...) of the texts themselves.")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise BadTypeError(f"text {i} is a {type(text).__name__}, not a str.")
            if text == "":
                raise BadValueError(f"text {i} is empty: an empty text has no token to read a reward from. "
                                    "Score the prompt + response, or drop empty texts.")
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        too_long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if too_long and not self._warned_truncation:
            warnings.warn(f"{len(too_long)} text(s) exceed the reward model's context of {self.max_length} tokens "
                          f"(e.g. text {too_long[0]}: {len(ids[too_long[0]])} tokens); only their {self.keep} "
                          f"{self.max_length} tokens are scored. (Warned once per scorer.)", stacklevel=3)
            self._warned_truncation = True
        return [truncate(row, self.max_length, self.keep) for row in ids]

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """Rewards ``[N]`` of already-tokenized sequences (any padding side), e.g. PPO's ``[query | response]``."""
        device = self.device
        with autocast(device, self.autocast_dtype):
            raw = self.model(input_ids.to(device), attention_mask.to(device)).float()
        bad = (~torch.isfinite(raw)).nonzero().flatten().tolist()
        if bad:
            raise NonFiniteLossError(f"The reward model returned NaN/inf for row(s) {bad[:10]}: the weights may be "
                                     "corrupt (reload them) or the inputs hold invalid token ids.")
        return self.model.normalise(raw).cpu() if normalise else raw.cpu()

    def score_raw(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised rewards ``[N]`` (float32, CPU)."""
        ids = self.encode(texts)
        if not ids:
            return torch.empty(0)
        out = torch.empty(len(ids))
        # Batches of similar length waste less compute on padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch_ids, mask = right_pad([ids[i] for i in chunk], self.tokenizer.pad_token_id)
            out[chunk] = self.score_ids(batch_ids, mask, normalise=False)
        return out

    def score(self, texts: list[str]) -> torch.Tensor:
        """Normalised rewards ``[N]``: mean 0, std 1 on samples of the reference (SFT) policy."""
        return self.model.normalise(self.score_raw(texts).to(self.model.reward_mean.device)).cpu()

    __call__ = score

    def check_same_tokenizer(self, policy_tokenizer) -> None:
        """Raise ValueError if the policy's tokenizer is not the reward model's (its fingerprint: vocabulary and
        special ids), naming where each tokenizer comes from."""
        mine, theirs = self.tokenizer, policy_tokenizer
        if tokenizer_fingerprint(mine) == tokenizer_fingerprint(theirs):
            return
        problems = []
        if len(mine) != len(theirs):
            problems.append(f"{len(theirs)} tokens in the policy's vocabulary vs {len(mine)} in the reward model's")
        elif mine.get_vocab() != theirs.get_vocab():
            differing = sum(1 for t, i in mine.get_vocab().items() if theirs.get_vocab().get(t) != i)
            problems.append(f"{differing} tokens have different ids (same size, other vocabulary)")
        for name in ("eos_token_id", "pad_token_id", "bos_token_id", "unk_token_id"):
            if getattr(mine, name) != getattr(theirs, name):
                problems.append(f"{name} {getattr(theirs, name)} (policy) vs {getattr(mine, name)} (reward model)")
        problems.append(f"fingerprints {tokenizer_fingerprint(theirs)} (policy) vs {tokenizer_fingerprint(mine)} "
                        "(reward model)")
        raise BadValueError("The policy's tokenizer does not match the reward model's: " + "; ".join(problems)
                            + f". Policy tokenizer from {source_of(theirs)}; reward model and its tokenizer from "
                            f"{self.source_dir}. Token ids from the policy would mean different words to the reward "
                            "model: use a policy and a reward model trained from the same profile (the reward stage "
                         "starts from the SFT policy and keeps its tokenizer), or retrain the reward model from this "
                         "policy with `python -m rlhf_helpers reward`.")

    @property
    def source_dir(self) -> str:
        """Where the reward model was loaded from (for messages)."""
        return source_of(self.model) if getattr(self.model, "source_dir", None) else source_of(self.tokenizer)

    def explain(self, text: str) -> list[tuple[str, float]]:
        """Leave-one-word-out: for each word, ``score(text) − score(text without that word)`` (normalised).

        Positive: the word raises the reward. One forward pass per word (batched)."""
        words = text.split()
        if not words:
            raise BadValueError("explain needs a non-empty text.")
        variants = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        keep = [i for i, v in enumerate(variants) if v]
        scores = self.score([text] + [variants[i] for i in keep])
        deltas = [0.0] * len(words)
        for j, i in enumerate(keep):
            deltas[i] = (scores[0] - scores[1 + j]).item()
        return list(zip(words, deltas))


def load_reward_model(profile_or_path="tiny", device="cpu", **scorer_kwargs) -> RewardScorer:
    """The trained reward model as a `RewardScorer`: ``load_reward_model("tiny").score(["A great film"])``."""
    model, tokenizer, info = load_reward_model_weights(profile_or_path, device)
    scorer_kwargs.setdefault("max_length", info.get("max_length"))
    scorer_kwargs.setdefault("keep", info.get("keep", "first"))
    return RewardScorer(model, tokenizer, **scorer_kwargs)


