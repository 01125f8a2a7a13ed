"""Command line: ``python -m rlhf_helpers [--profile tiny|gpt2] STAGE [flags]``.

Stages, in course order: ``tokenizer``, ``data``, ``sft``, ``reward``, ``ppo``, ``evaluate``, and ``run`` (the
main job: tokenizer, data, PPO from the shipped SFT policy and reward model, evaluation, a summary).

Every field of `rlhf_helpers.config.CourseConfig` is a flag, its docstring the flag's help: the profile's own
fields at the top (``--seed 1``) and each stage's under its name (``--ppo.kl-target 3 --ppo.learning-rate 1e-4``,
``--sft.max-steps 100``). ``python -m rlhf_helpers STAGE --help`` lists them with the profile's defaults.
Each stage writes its artifacts and a JSON run card under ``<artifacts root>/<profile>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from .config import PROFILES, CourseConfig, finalize, get_config
from .core.distributed import is_main_process
from .core.errors import CourseError

TRACEBACK_ENV_VAR = "RLHF_TRACEBACK"  # set it to see the traceback behind an error message
PATH_FLAGS = ("--output-dir", "--export-to", "--tokenizer-name-or-path", "--model-name-or-path")
STOPPED_BY_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
"""Exit status of a stage that a stop signal ended after a checkpoint: 128 + the signal's number, as a shell
reports a command killed by it, so ``ppo && evaluate`` does not go on to evaluate a half-trained policy."""

# The CourseConfig's fields are flags without a prefix (--seed, --ppo.kl-target), not --config.seed.
Config = Annotated[CourseConfig, tyro.conf.arg(name="")]


@dataclass
class Tokenizer:
    """Train the IMDb BPE (tiny) or fetch GPT-2's (gpt2); save it under <artifacts>/<profile>/tokenizer."""

    config: Config


@dataclass
class Data:
    """Build the prompt datasets (all 24,895 rows / train / held-out eval) under <artifacts>/<profile>/data."""

    config: Config


@dataclass
class Sft:
    """Train the supervised policy on IMDb (settings: --sft.*). Run it again to resume after an interruption."""

    config: Config
    output_dir: Path | None = None
    """Default: <artifacts>/<profile>/sft_policy."""
    no_resume: bool = False
    """Ignore an existing checkpoint and start afresh."""
    allow_changed_settings: bool = False
    """Resume even if the checkpoint was written with other settings (the run card records both)."""
    export_to: Path | None = None
    """Also copy the final policy (no optimiser state) here."""


@dataclass
class Reward:
    """Train, normalise and evaluate the reward model from the SFT policy (settings: --reward.*)."""

    config: Config
    output_dir: Path | None = None
    """Default: <artifacts>/<profile>/reward_model (with --trl: reward_model_trl)."""
    no_resume: bool = False
    """Ignore an existing checkpoint and start afresh."""
    allow_changed_settings: bool = False
    """Resume even if the checkpoint was written with other settings (the run card records both)."""
    export_to: Path | None = None
    """Also copy the final reward model here (with --trl: only its run card)."""
    trl: bool = False
    """Train with trl.RewardTrainer on the same pairs, with settings derived from --reward.*."""


@dataclass
class Ppo:
    """Align the SFT policy with PPO against the reward model (settings: --ppo.*). Resumes when run again."""

    config: Config
    output_dir: Path | None = None
    """Default: <artifacts>/<profile>/ppo_policy."""
    no_resume: bool = False
    """Ignore an existing checkpoint and start afresh."""
    allow_changed_settings: bool = False
    """Resume even if the checkpoint was written with other settings (the run card records both)."""


@dataclass
class Evaluate:
    """SFT vs PPO on held-out prompts: reward, two independent judges, KL, perplexity, diversity (settings:
    --evaluation.*)."""

    config: Config


@dataclass
class Run:
    """The main job: tokenizer, data, (sft), (reward), PPO, evaluate; ends with a summary and a report figure."""

    config: Config
    train_sft: bool = False
    """Train the SFT policy too (tiny default: use the shipped one; the gpt2 profile always trains it)."""
    train_reward: bool = False
    """Train the reward model too (tiny default: the shipped one; the gpt2 profile always trains it)."""


COMMANDS = {"tokenizer": Tokenizer, "data": Data, "sft": Sft, "reward": Reward, "ppo": Ppo, "evaluate": Evaluate,
            "run": Run}


def _print(result: dict | str) -> None:
    """Print a stage's summary, once: on several processes (`accelerate launch`) the main one prints."""
    if not is_main_process():
        return
    print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))


def _split_argv(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(profile, stage, the rest): ``--profile`` may stand before or after the stage name."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--profile", default=None)
    known, rest = pre.parse_known_args(argv)
    stage = next((a for a in rest if not a.startswith("-")), None)
    if stage is not None:
        rest.remove(stage)
    return known.profile, stage, rest


def _usage() -> str:
    lines = ["usage: python -m rlhf_helpers [--profile {}] STAGE [flags]".format("|".join(PROFILES)), "", "stages:"]
    lines += [f"  {name:<10} {cls.__doc__.splitlines()[0]}" for name, cls in COMMANDS.items()]
    lines += ["", "python -m rlhf_helpers STAGE --help lists every flag of a stage with the profile's defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    profile, stage, rest = _split_argv(argv)
    if stage is None or stage not in COMMANDS:
        print(_usage(), file=sys.stderr if stage else sys.stdout)
        if stage is not None:
            _usage_error(f"unknown stage {stage!r}")
        if not {"-h", "--help"} & set(rest):
            _usage_error("name a stage")
        return 0
    try:
        defaults = get_config(profile)
    except (ValueError, TypeError) as err:
        _usage_error(str(err))
    _refuse_empty_paths(rest)
    command_class = COMMANDS[stage]
    command = tyro.cli(command_class, default=command_class(config=defaults), args=rest,
                       prog=f"python -m rlhf_helpers {stage}", description=command_class.__doc__)
    try:
        config = finalize(command.config)
    except CourseError as err:
        _usage_error(str(err))
    return run_command(stage, command, config)


def _refuse_empty_paths(args: list[str]) -> None:
    """An empty path (``--output-dir ""``) would reach the stages as the current directory: refuse it here."""
    for k, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in PATH_FLAGS and ((eq and not value.strip()) or (not eq and k + 1 < len(args)
                                                                  and not args[k + 1].strip())):
            _usage_error(f"{flag} is empty: an empty path would mean the current directory ({Path.cwd()}). Name a "
                         "directory, or leave the flag out for the default.")


def _usage_error(message: str):
    """Say what is wrong and exit with status 2, before any work starts (as argparse does)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _quiet_libraries() -> None:
    """Keep the stages' own progress bars and silence the libraries' (dataset maps, weight loading)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _preflight(stage: str, command, config: CourseConfig, pipeline) -> None:
    """Everything checked before any work (the values were checked by `main`): the stage contract's checks
    (`rlhf_helpers.pipeline.preflight`: output locations, inputs, hub, batch split, the lock)."""
    name = "reward_trl" if stage == "reward" and command.trl else stage
    pipeline.preflight(config, name, getattr(command, "output_dir", None), getattr(command, "export_to", None))


def run_command(stage: str, command, config: CourseConfig) -> int:
    """Run a stage: a refusal before any work exits 2, a refusal once it started exits 1 (one ``error:`` line each;
    ``RLHF_TRACEBACK=1`` shows the traceback), a stage stopped by a signal exits 128 + its number. Any other error
    is a bug: its traceback is shown."""
    from . import pipeline

    try:
        _preflight(stage, command, config, pipeline)
    except CourseError as err:
        if os.environ.get(TRACEBACK_ENV_VAR):
            raise
        _usage_error(str(err))
    _quiet_libraries()
    try:
        result = _run_stage(stage, command, config, pipeline)
    except CourseError as err:  # a message written for the user: no traceback unless asked for
        if os.environ.get(TRACEBACK_ENV_VAR):
            raise
        print(f"error: {err}\n(set {TRACEBACK_ENV_VAR}=1 for the traceback)", file=sys.stderr)
        return 1
    signal_name = getattr(result, "interrupted", None) if isinstance(result, str) else (
        result.get("signal") or "SIGINT" if result.get("interrupted") else None)
    return STOPPED_BY_SIGNAL.get(signal_name, 130) if signal_name else 0


def _run_stage(stage: str, command, config: CourseConfig, pipeline) -> dict | str:
    """Run the stage, print its summary, and return it."""
    if stage == "tokenizer":
        result = pipeline.stage_tokenizer(config)
    elif stage == "data":
        result = pipeline.stage_data(config)
    elif stage == "sft":
        result = pipeline.stage_sft(config, output_dir=command.output_dir, resume=not command.no_resume,
                                    allow_changed_settings=command.allow_changed_settings)
        if command.export_to and not result.get("interrupted"):
            result["exported_to"] = str(pipeline.export_policy(result["dir"], command.export_to))
    elif stage == "reward" and command.trl:
        result = pipeline.stage_reward_trl(config, output_dir=command.output_dir)
        if command.export_to:  # the TRL model's weights are not shipped: its run card is the record
            Path(command.export_to).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(result["dir"]) / "run_card_reward_trl.json", command.export_to)
            result["exported_to"] = str(command.export_to)
    elif stage == "reward":
        result = pipeline.stage_reward(config, output_dir=command.output_dir, resume=not command.no_resume,
                                       allow_changed_settings=command.allow_changed_settings)
        if command.export_to and not result.get("interrupted"):
            result["exported_to"] = str(pipeline.export_policy(result["dir"], command.export_to))
    elif stage == "ppo":
        result = pipeline.stage_ppo(config, output_dir=command.output_dir, resume=not command.no_resume,
                                    allow_changed_settings=command.allow_changed_settings)
    elif stage == "evaluate":
        result = pipeline.stage_evaluate(config)
    else:
        result = pipeline.stage_run(config, train_sft=command.train_sft, train_reward=command.train_reward)
    _print(result)
    return result


if __name__ == "__main__":
    sys.exit(main())
