"""The policy: a GPT-2 (`transformers.GPT2LMHeadModel`), built fresh, loaded from the hub, or shipped.

* ``tiny`` profile: a 4-layer, 256-wide GPT-2 over the course's 8k IMDb BPE. The course ships one
  trained by ``python -m rlhf_helpers sft --profile tiny`` in ``rlhf_helpers/assets/tiny/sft_policy``.
* ``gpt2`` profile: the hub's ``gpt2`` (124 M parameters), fine-tuned by the same SFT code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from ..config import CourseConfig, get_config
from ..core.assets import shipped_policy_dir
from ..data.tokenizer import load_tokenizer

def new_policy_model(config: CourseConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of the profile's size, with the tokenizer's special ids.

    Dropout is 0: the RLHF pieces recompute log-probs and need them deterministic (Huang et al.
    2023, "Policy training implementation details"), and on a few million tokens a small model does not over-fit.
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
    return GPT2LMHeadModel(model_config)


def check_tokenizer_matches(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase, where: str = "") -> None:
    """Raise if `tokenizer` cannot be the one `model` was trained with (different vocabulary or EOS)."""
    problems = []
    if len(tokenizer) > model.config.vocab_size:
        problems.append(f"tokenizer has {len(tokenizer)} tokens, the model's embedding only {model.config.vocab_size}")
    if model.config.eos_token_id is not None and model.config.eos_token_id != tokenizer.eos_token_id:
        problems.append(f"EOS id {tokenizer.eos_token_id} vs the model's {model.config.eos_token_id}")
    if problems:
        raise ValueError(
            f"Tokenizer does not match the model{(' ' + where) if where else ''}: " + "; ".join(problems)
            + ". Load the tokenizer saved with the model (same directory)."
        )


def load_policy(
    profile_or_path: str | Path = "tiny", device: str | torch.device = "cpu"
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerBase]:
    """Load an SFT policy and its tokenizer, in eval mode.

    Args:
        profile_or_path: "tiny" (the checkpoint shipped in the package), "gpt2" (the hub's `gpt2`
            untouched, or a fine-tuned one if ``artifacts/gpt2/sft_policy`` exists), or a directory
            written by `save_pretrained` / the ``sft`` command.
    Returns:
        ``(model, tokenizer)``.
    """
    path = Path(profile_or_path)
    if str(profile_or_path) == "tiny":
        path = shipped_policy_dir("tiny")
    elif str(profile_or_path) == "gpt2":
        trained = get_config("gpt2").artifacts_dir / "sft_policy"
        path = trained if trained.exists() else None
        if path is None:
            model = GPT2LMHeadModel.from_pretrained("gpt2").to(device).eval()
            return model, load_tokenizer("gpt2")
    if not path.is_dir():
        raise FileNotFoundError(
            f"No policy checkpoint at {path}. Train one with `python -m rlhf_helpers sft` or pass a "
            "directory that holds config.json, model.safetensors and tokenizer.json."
        )
    for needed in ("config.json", "model.safetensors"):
        if not (path / needed).is_file():
            raise FileNotFoundError(f"Policy checkpoint {path} is incomplete: {needed} is missing.")
    try:
        model = GPT2LMHeadModel.from_pretrained(str(path))
    except Exception as err:
        raise RuntimeError(f"Policy checkpoint {path} could not be read ({type(err).__name__}: {err}); "
                           "it may be corrupt: re-run `python -m rlhf_helpers sft`.") from err
    tokenizer = load_tokenizer(path)
    check_tokenizer_matches(model, tokenizer, where=f"in {path}")
    return model.to(device).eval(), tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())

