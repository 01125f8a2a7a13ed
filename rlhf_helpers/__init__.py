"""rlhf_helpers: the reusable, tested code behind the RLHF-from-scratch notebooks.

Subpackages in course order: `data` (01), `policy` (02), `reward` (03), `ppo` (05–06), `evaluation` (06–07),
`beyond_ppo` (08: DPO, Preferred-FT, TRL's DPO / GRPO / RLOO); `core` holds what they share (the run engine,
checkpoints, locks, run cards, the package's errors, padding and masks); `config` holds every setting; `sources`
says which model a name means; `pipeline` runs the stages under one contract; ``python -m rlhf_helpers``.
"""

from .config import CourseConfig, PPOConfig, PROFILES, RewardConfig, SFTConfig, get_config
from .data import LengthSampler, build_dataset, clean_review, load_imdb, load_imdb_splits, split_train_eval
from .policy import generate, load_policy
from .reward import load_reward_model

__all__ = [
    "CourseConfig", "PPOConfig", "PROFILES", "RewardConfig", "SFTConfig", "get_config",
    "LengthSampler", "build_dataset", "clean_review", "load_imdb", "load_imdb_splits", "split_train_eval",
    "generate", "load_policy", "load_reward_model",
]
from importlib.metadata import PackageNotFoundError, version as _version

try:  # one version: pyproject.toml's
    __version__ = _version("rlhf-helpers")
except PackageNotFoundError:  # a checkout that was not installed
    __version__ = "0+unknown"
