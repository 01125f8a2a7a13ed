"""The policy: a GPT-2 (`transformers.GPT2LMHeadModel`), built fresh, loaded from the hub, or shipped.

* ``tiny`` profile: a 4-layer, 256-wide GPT-2 over the course's 8k IMDb BPE. The course ships one
  trained by ``python -m rlhf_helpers sft --profile tiny`` in ``rlhf_helpers/assets/tiny/sft_policy``.
* ``gpt2`` profile: the hub's ``gpt2`` (124 M parameters), fine-tuned by the same SFT code.

**Tokenizer identity.** Token ids mean something only with the tokenizer a model was trained with. A model
records that tokenizer's fingerprint (`rlhf_helpers.data.tokenizer.tokenizer_fingerprint`) in its config
(``tokenizer_fingerprint``, saved in ``config.json``); `load_policy`, `load_reward_model`,
`RewardScorer.check_same_tokenizer` and `evaluate_policy` refuse a tokenizer with another fingerprint, even a
same-size one. Checkpoints saved before fingerprints (the shipped ones) are compared with the shipped
tokenizer's fingerprint, or, elsewhere, by vocabulary size and EOS id.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from ..core.errors import BadValueError, DamagedFileError, MissingError, NotADirectoryRefusal, UnavailableError
from ..config import CourseConfig
from ..sources import resolve_source
from ..core.files import read_json_file, restore_hint, shipped_profile
from ..data.tokenizer import SHIPPED_TOKENIZER_FINGERPRINTS, load_tokenizer, tokenizer_fingerprint

WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_DIRS = ("checkpoint", "checkpoint.tmp", "checkpoint.old")


def new_policy_model(config: CourseConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of the profile's size, with the tokenizer's special ids.

    Dropout is 0: the RLHF pieces recompute log-probs and need them deterministic (Huang et al.
    2023, "Policy training implementation details"), and on a few million tokens a small model does not over-fit.
    The tokenizer's fingerprint goes into the config (``tokenizer_fingerprint``), so every later save of the
    model records which tokenizer it reads.
    """
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(model_config)
    record_tokenizer(model, tokenizer)
    return model


# ----------------------------------------------------------------------------------------------
# Tokenizer identity
# ----------------------------------------------------------------------------------------------


def record_tokenizer(model, tokenizer: PreTrainedTokenizerBase) -> str:
    """Write the tokenizer's fingerprint into ``model.config`` (saved in ``config.json`` by `save_pretrained`)."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    model.config.tokenizer_fingerprint = fingerprint
    return fingerprint


def expected_tokenizer_fingerprint(model_config, directory: str | Path | None = None) -> str | None:
    """The fingerprint of the tokenizer a model was trained with: recorded in its config, or, for the shipped
    models (saved before fingerprints were recorded), that of the shipped tokenizer. None: unknown (an older
    checkpoint; only the vocabulary size and EOS id can be checked)."""
    recorded = getattr(model_config, "tokenizer_fingerprint", None)
    if recorded:
        return recorded
    profile = shipped_profile(directory) if directory is not None else None
    return SHIPPED_TOKENIZER_FINGERPRINTS.get(profile)


def source_of(obj) -> str:
    """Where a model or tokenizer was loaded from (for messages)."""
    where = getattr(obj, "source_dir", None) or getattr(obj, "name_or_path", None)
    return str(where) if where else "memory (not loaded from a directory)"


def check_tokenizer_matches(model, tokenizer: PreTrainedTokenizerBase, where: str = "",
                            expected_fingerprint: str | None = None) -> None:
    """Raise ValueError if `tokenizer` cannot be the one `model` was trained with.

    Checks the size and EOS id, and, when the model's tokenizer fingerprint is known (`expected_fingerprint`, else
    ``model.config.tokenizer_fingerprint``), the fingerprint: a same-size tokenizer with other ids is refused.
    """
    expected = expected_fingerprint or getattr(model.config, "tokenizer_fingerprint", None)
    problems = []
    if len(tokenizer) > model.config.vocab_size:
        problems.append(f"tokenizer has {len(tokenizer)} tokens, the model's embedding only {model.config.vocab_size}")
    if model.config.eos_token_id is not None and model.config.eos_token_id != tokenizer.eos_token_id:
        problems.append(f"EOS id {tokenizer.eos_token_id} vs the model's {model.config.eos_token_id}")
    if expected:
        actual = tokenizer_fingerprint(tokenizer)
        if actual != expected:
            same_size = len(tokenizer) == model.config.vocab_size
            problems.append(f"tokenizer fingerprint {actual}, but the model was trained with tokenizer {expected}"
                            + (" (same size, other vocabulary: its ids would mean other words)" if same_size else ""))
    if not problems:
        return
    model_dir, tokenizer_dir = source_of(model), source_of(tokenizer)
    if model_dir == tokenizer_dir and Path(model_dir).is_dir():
        fix = (f"The tokenizer files in {model_dir} are not the ones saved with its model. "
               + restore_hint(model_dir, checkpoint_kind(model_dir) or "policy") + ".")
    elif Path(model_dir).is_dir():
        fix = (f"Use the tokenizer saved with the model: `load_policy('{model_dir}')` returns the model with its "
               "own tokenizer.")
    else:
        fix = "Load the tokenizer saved with the model (same directory)."
    raise BadValueError(
        f"Tokenizer does not match the model{(' ' + where) if where else ''}: " + "; ".join(problems)
        + f". Tokenizer from {tokenizer_dir}; model from {model_dir}. {fix}"
    )


# ----------------------------------------------------------------------------------------------
# What a directory holds
# ----------------------------------------------------------------------------------------------


def safetensors_keys(file: Path, kind: str = "policy") -> set[str]:
    """The tensor names in a safetensors file (reads its header only); RuntimeError naming a corrupt file."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return set(handle.keys())
    except Exception as err:
        raise DamagedFileError(f"{file} is corrupt or truncated ({type(err).__name__}: {err}). "
                               f"{restore_hint(Path(file).parent, kind)}.") from err


def checkpoint_kind(directory: str | Path, keys: set[str] | None = None) -> str | None:
    """What a model directory holds: "reward" (our reward model), "sequence_classifier" (TRL's reward model),
    "policy" (a GPT-2 language model), or None when it cannot tell (no config.json)."""
    directory = Path(directory)
    if (directory / "reward_config.json").exists():
        return "reward"
    if keys is not None and ({"head.weight", "reward_mean"} & keys):
        return "reward"
    if keys is not None and "score.weight" in keys:
        return "sequence_classifier"
    config = read_json_file(directory / "config.json", "model config", missing_ok=True)
    if config is None:
        return None
    if any("SequenceClassification" in name for name in config.get("architectures") or []):
        return "sequence_classifier"
    return "policy"


def refuse_other_kind(directory: Path, wanted: str, keys: set[str] | None = None) -> None:
    """ValueError if `directory` holds another kind of model than `wanted` ("policy" or "reward")."""
    kind = checkpoint_kind(directory, keys)
    if kind is None or kind == wanted:
        return
    if kind == "reward":
        raise BadValueError(f"{directory} holds a reward model (reward_config.json and a reward head), not a policy. "
                            f"Load it with `load_reward_model('{directory}')`; `load_policy` takes a policy directory "
                            "(sft_policy or ppo_policy).")
    if kind == "sequence_classifier":
        loader = "`load_policy` takes a policy directory (sft_policy or ppo_policy)" if wanted == "policy" else \
            "`load_reward_model` takes a directory written by `python -m rlhf_helpers reward`"
        raise BadValueError(f"{directory} holds TRL's sequence-classification reward model (written by "
                            "`python -m rlhf_helpers reward --trl`), not a " + ("policy" if wanted == "policy" else
                            "reward model of ours") + ". Load it with `transformers.GPT2ForSequenceClassification."
                            f"from_pretrained('{directory}')` and wrap it with `RewardModel.from_sequence_classifier` "
                            f"to score texts; {loader}.")
    raise BadValueError(f"{directory} holds a policy (a GPT-2 language model: no reward head, no reward_config.json), "
                     f"not a reward model. Load it with `load_policy('{directory}')`; to train a reward model from it "
                     "run `python -m rlhf_helpers reward`.")


def _missing(directory: Path, needed: str, what: str, stage: str) -> FileNotFoundError:
    message = f"{what} {directory} is incomplete: {needed} is missing."
    if any((directory / name).is_dir() for name in CHECKPOINT_DIRS):
        message += (" It holds only a training checkpoint: the run was stopped before it saved its final model. "
                    f"Run the same command again (`python -m rlhf_helpers {stage}`, same --output-dir) to resume "
                    "and finish it.")
    else:
        message += f" {restore_hint(directory, 'policy' if stage == 'sft' else stage)}."
    return MissingError(message)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_policy(
    profile_or_path: str | Path = "tiny", device: str | torch.device = "cpu"
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    """Load an SFT policy and its tokenizer, in eval mode.

    Args:
        profile_or_path: a profile name, a directory written by `save_pretrained` / the ``sft`` command, or a hub
            id, resolved by `rlhf_helpers.sources.resolve_source`: a profile's SFT policy trained under the
            artifacts directory if there is one, else the one shipped with the package ("tiny"), else the
            profile's pretrained hub model ("gpt2").
    Returns:
        ``(model, tokenizer)``; ``model.config.tokenizer_fingerprint`` identifies the tokenizer.
    Raises:
        FileNotFoundError (no or an incomplete directory), ValueError (a reward model's directory, a corrupt JSON
        file, a tokenizer that is not the model's), RuntimeError (corrupt weights): each names the file and the
        way out.
    """
    path = resolve_source("policy", profile_or_path)
    if isinstance(path, str):  # a hub id (gpt2's pretrained model): from the local hub cache when offline
        try:
            model = GPT2LMHeadModel.from_pretrained(path).to(device).eval()
        except OSError as err:
            raise UnavailableError(f"Could not load {path!r} from the Hugging Face hub or its local cache ({err}). Offline? "
                                   "Download it once with the hub on, pass a local directory, or use the tiny profile "
                                   "(`load_policy('tiny')`, shipped with the package).") from err
        tokenizer = load_tokenizer(path)
        check_tokenizer_matches(model, tokenizer, where=f"(hub {path})")
        record_tokenizer(model, tokenizer)
        return model, tokenizer
    if path.is_file():
        raise NotADirectoryRefusal(f"{path} is a file; a policy is a directory holding config.json, model.safetensors "
                                   "and tokenizer.json (e.g. the sft_policy written by `python -m rlhf_helpers sft`).")
    if not path.is_dir():
        raise MissingError(
            f"No policy checkpoint at {path}. Train one with `python -m rlhf_helpers sft` or pass a "
            "directory that holds config.json, model.safetensors and tokenizer.json."
        )
    refuse_other_kind(path, "policy")
    stage = "ppo" if (path / "value_head.json").exists() or (path / "run_card_ppo.json").exists() \
        or path.name.startswith("ppo") else "sft"
    for needed in ("config.json", WEIGHTS_NAME):
        if not (path / needed).is_file():
            raise _missing(path, needed, "Policy checkpoint", stage)
    config = read_json_file(path / "config.json", "model config", kind="policy")
    if config.get("model_type", "gpt2") != "gpt2":
        raise BadValueError(f"{path / 'config.json'} describes a {config.get('model_type')!r} model; the course's "
                            "policies are GPT-2 (model_type 'gpt2'). Pass a directory written by "
                            "`python -m rlhf_helpers sft` or `ppo`.")
    refuse_other_kind(path, "policy", safetensors_keys(path / WEIGHTS_NAME, "policy"))
    tokenizer = load_tokenizer(path)
    try:
        model = GPT2LMHeadModel.from_pretrained(str(path))
    except Exception as err:
        raise DamagedFileError(f"Policy checkpoint {path} could not be read ({type(err).__name__}: {err}): "
                               "model.safetensors is corrupt or does not fit config.json. "
                               f"{restore_hint(path, 'policy')}.") from err
    model.source_dir = str(path)
    check_tokenizer_matches(model, tokenizer, where=f"in {path}",
                            expected_fingerprint=expected_tokenizer_fingerprint(model.config, path))
    if not getattr(model.config, "tokenizer_fingerprint", None):
        record_tokenizer(model, tokenizer)  # an older checkpoint, checked as well as it can be: later saves carry it
    return model.to(device).eval(), tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())

