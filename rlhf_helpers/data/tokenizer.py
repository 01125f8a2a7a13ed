"""Tokenizers: a byte-level BPE trained on IMDb (offline profile) or a hub tokenizer (``gpt2``).

GPT-2's tokenizer is a byte-level BPE (Radford et al. 2019, section 2.2): text is read as UTF-8
bytes, so any string can be encoded, and merges of frequent byte pairs build the vocabulary. We train
the same kind of tokenizer on IMDb with the ``tokenizers`` library, at 8,192 entries instead of
GPT-2's 50,257 so that the embedding matrix of the tiny model stays small.

Special tokens of the trained tokenizer:

* ``<|endoftext|>`` (id 0): end of a document, as in GPT-2; used as BOS/EOS.
* ``<|pad|>`` (id 1): padding only. GPT-2 has no pad token and code often pads with EOS, which makes a
  real EOS look like padding (a known RLHF pitfall); a separate pad token avoids that. Our code never
  infers padding from token ids anyway: it always carries attention masks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..core.errors import BadValueError, MissingError, NotADirectoryRefusal, UnavailableError
from ..core.assets import shipped_tokenizer_dir
from ..core.files import read_json_file, restore_hint
from .imdb import clean_review, load_imdb_splits

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2, show_progress: bool = False
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on `texts`.

    Returns a `transformers.PreTrainedTokenizerFast` with ``<|endoftext|>`` as BOS/EOS/UNK and
    ``<|pad|>`` as pad, ready for ``GPT2LMHeadModel``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise BadValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte tokens + specials.")
    core = Tokenizer(models.BPE())
    # add_prefix_space=False as in GPT-2: "Hello" and " Hello" are different tokens.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=show_progress,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(core)


def wrap_tokenizer(core) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` so that `transformers` models and TRL can use it."""
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json")


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a directory or hub id; give it a pad token if it has none (GPT-2).

    Hub GPT-2 has no pad token; we then pad with EOS, and rely on attention masks (never on token
    ids) to tell padding from a real EOS. A corrupt file in a directory raises ValueError naming the file
    and how to get a good one (`restore_hint`).
    """
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryRefusal(f"{path} is a file; a tokenizer is a directory holding tokenizer.json "
                                       "(e.g. an sft_policy directory).")
        if not (path / "tokenizer.json").exists() and not (path / "vocab.json").exists():
            raise MissingError(f"No tokenizer files in {path} (expected tokenizer.json). Re-run "
                               "`python -m rlhf_helpers tokenizer` or check the path.")
        kind = "reward" if (path / "reward_config.json").exists() else "policy" if (path / "config.json").exists() else "tokenizer"
        for name in TOKENIZER_FILES:
            read_json_file(path / name, "tokenizer file", missing_ok=True, kind=kind)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception as err:
            raise BadValueError(f"The tokenizer files in {path} could not be read ({type(err).__name__}: {err}); "
                                f"they are corrupt or incomplete. {restore_hint(path, kind)}.") from err
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except OSError as err:
            raise UnavailableError(f"Could not load the tokenizer {str(name_or_path)!r}: it is not a directory here, and the "
                          f"Hugging Face hub did not provide it ({err}). Check the path; offline, use the tiny "
                          "profile (`--profile tiny`), whose tokenizer ships with the package.") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Tokenizer identity
# ----------------------------------------------------------------------------------------------

# The fingerprint of the tokenizer shipped in rlhf_helpers/assets/<profile>/: the shipped models were saved
# before fingerprints were recorded, so their loaders compare against this instead.
SHIPPED_TOKENIZER_FINGERPRINTS = {"tiny": "bb91b2a94feffcab"}


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """16 hex digits identifying a tokenizer: sha256 of its vocabulary (token -> id) and special-token ids.

    Two tokenizers with the same fingerprint turn every text into the same ids. Models record the fingerprint
    of the tokenizer they were trained with (``tokenizer_fingerprint`` in ``config.json``; reward models also
    in ``reward_config.json``), and the loaders refuse a tokenizer whose fingerprint differs, even one of the
    same size, whose ids would silently mean other words.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")}
    payload = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def describe_tokenizer(tokenizer: PreTrainedTokenizerBase) -> dict:
    """A few facts worth printing: vocabulary size and the special tokens with their ids."""
    return {
        "vocab_size": len(tokenizer),
        "eos": (tokenizer.eos_token, tokenizer.eos_token_id),
        "pad": (tokenizer.pad_token, tokenizer.pad_token_id),
    }


# ----------------------------------------------------------------------------------------------
# The profile's tokenizer
# ----------------------------------------------------------------------------------------------


def tokenizer_dir(config) -> Path:
    """Where the ``tokenizer`` stage saves the profile's tokenizer: ``<artifacts>/<profile>/tokenizer``."""
    return config.artifact_dir("tokenizer")


def train_course_tokenizer(config, splits=None) -> PreTrainedTokenizerFast:
    """The tiny profile's tokenizer: byte-level BPE of `config.vocab_size` on the *train* rows only."""
    splits = splits or load_imdb_splits(config)
    return train_bpe_tokenizer((clean_review(t) for t in splits["train"]["text"]), vocab_size=config.vocab_size)


def tokenizer_source(config) -> str | Path | None:
    """Where the profile's tokenizer comes from: the configured hub id / directory, else the IMDb BPE saved by the
    ``tokenizer`` stage, else the shipped one; None when there is none yet (then it is trained)."""
    if config.tokenizer_name_or_path is not None:
        return config.tokenizer_name_or_path
    for directory in (tokenizer_dir(config), shipped_tokenizer_dir(config.name)):
        if (directory / "tokenizer.json").exists():
            return directory
    return None


def get_tokenizer(config) -> PreTrainedTokenizerBase:
    """The profile's tokenizer (`tokenizer_source`), trained on IMDb when there is none yet."""
    source = tokenizer_source(config)
    return load_tokenizer(source) if source is not None else train_course_tokenizer(config)
