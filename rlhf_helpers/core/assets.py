"""What ships inside the package, in one documented place: ``rlhf_helpers/assets/<profile>/``.

* ``sft_policy/``: the trained SFT policy and its tokenizer (weights, configs, run card);
* ``reward_model/``: the trained, normalised reward model (and the run card of its TRL twin);
* ``results/``: run cards of long experiments that notebooks plot (e.g. the algorithm comparison).

Everything a script or a stage *produces* goes under the artifacts directory (`rlhf_helpers.core.files.artifacts_root`);
a result is shipped by copying its run card here on purpose. Which model a name means (trained, shipped or from the
hub): `rlhf_helpers.sources.resolve_source`.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

ARTIFACTS = {"tokenizer": "tokenizer", "data": "data", "sft": "sft_policy", "reward": "reward_model",
             "reward_trl": "reward_model_trl", "ppo": "ppo_policy", "evaluate": "evaluation", "run": ""}
"""The one table of where each stage writes, under ``<artifacts root>/<profile>/``
(`rlhf_helpers.config.CourseConfig.artifact_dir`); the shipped models use the same names under
``assets/<profile>/``. ``run`` writes its run card and report figure at the top of the profile's directory."""


def shipped_policy_dir(profile: str = "tiny") -> Path:
    """Directory of the SFT policy shipped inside the package (weights, tokenizer, run card)."""
    return ASSETS_DIR / profile / ARTIFACTS["sft"]


def shipped_tokenizer_dir(profile: str = "tiny") -> Path:
    """The tokenizer shipped with the tiny policy: the IMDb BPE trained by `train_course_tokenizer`."""
    return shipped_policy_dir(profile)


def shipped_reward_model_dir(profile: str = "tiny") -> Path:
    """Directory of the reward model shipped inside the package."""
    return ASSETS_DIR / profile / ARTIFACTS["reward"]


def shipped_results_dir(profile: str = "tiny") -> Path:
    """Run cards of long experiments that ship with the course and that notebooks plot."""
    return ASSETS_DIR / profile / "results"
