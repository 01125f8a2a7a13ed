"""Which model a name means: one resolver for policies and reward models, in one documented order.

``resolve_source(kind, name_or_path, config=None)`` with `kind` "policy" (an SFT policy) or "reward" (a reward
model) answers, in this order:

1. **A path** (a `pathlib.Path`, or a string naming a directory that exists, or one that looks like a path): that
   directory, as given. Nothing else is tried: a path you name is the model you get.
2. **A profile name** ("tiny", "gpt2"; None means the current profile, `rlhf_helpers.config.resolve_profile_name`):
   a. the model *trained* for that profile under the artifacts directory (``<artifacts>/<profile>/sft_policy`` or
      ``reward_model``, `rlhf_helpers.config.ARTIFACTS`) when it holds weights;
   b. else the model *shipped* with the package for that profile (`rlhf_helpers.core.assets`: the tiny profile's);
   c. else, for a policy, the profile's pretrained model on the hub (its ``model_name_or_path``: gpt2's "gpt2");
      for a reward model, the trained location of (a), which the loader reports as missing, naming the stage
      that writes it.
3. **Anything else** is a hub id (a policy: ``"gpt2"``-style names; loaded from the local hub cache when the hub is
   off), or a missing directory (a reward model: the loader says so).

The stages (`rlhf_helpers.pipeline`), the loaders (`load_policy`, `load_reward_model`) and the TRL helpers all
resolve through here, so "tiny" means the same model everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from .core.errors import BadValueError
from .config import PROFILES, CourseConfig, get_config, resolve_profile_name
from .core.assets import shipped_policy_dir, shipped_reward_model_dir

KINDS = {"policy": ("sft", shipped_policy_dir), "reward": ("reward", shipped_reward_model_dir)}
WEIGHTS = "model.safetensors"


def looks_like_path(name: str) -> bool:
    """Whether a name is meant as a local path (it has a separator, starts with . or ~, or exists), not a hub id."""
    return os.sep in name or name.startswith((".", "~")) or Path(name).expanduser().exists()


def resolve_source(kind: str, name_or_path: str | os.PathLike | None = None,
                   config: CourseConfig | None = None) -> Path | str:
    """The directory (a `Path`) or hub id (a `str`) that `name_or_path` means for a model of `kind`.

    Args:
        kind: "policy" or "reward".
        name_or_path: a directory, a profile name, a hub id, or None (the profile of `config`, else the current one).
        config: the course config whose profile (and artifacts directory) a profile name of the same name refers to.
    """
    if kind not in KINDS:
        raise BadValueError(f"kind must be 'policy' or 'reward', got {kind!r}.")
    if name_or_path is None:
        name_or_path = config.name if config is not None else resolve_profile_name()
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path).expanduser()
    name = str(name_or_path)
    if name not in PROFILES:
        if kind == "reward" or looks_like_path(name):
            return Path(name).expanduser()
        return name  # a hub id
    profile = config if config is not None and config.name == name else get_config(name)
    stage, shipped_dir = KINDS[kind]
    trained = profile.artifact_dir(stage)
    if (trained / WEIGHTS).is_file():
        return trained
    shipped = shipped_dir(name)
    if (shipped / WEIGHTS).is_file():
        return shipped
    if kind == "policy" and profile.model_name_or_path is not None:
        return str(profile.model_name_or_path)
    return trained


def policy_source(config: CourseConfig) -> Path | str:
    """The SFT policy a stage of `config` starts from (`resolve_source` with the config's profile)."""
    return resolve_source("policy", config=config)


def reward_source(config: CourseConfig) -> Path | str:
    """The reward model a stage of `config` uses (`resolve_source` with the config's profile)."""
    return resolve_source("reward", config=config)
