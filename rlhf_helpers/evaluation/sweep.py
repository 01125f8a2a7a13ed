"""The experiments of notebook 07, as functions: `scripts/evaluation_sweep.py` runs them in full, the notebook
runs small slices of the same functions live.

Every experiment starts from the shipped SFT policy and reward model and is judged by one `HeldOutEvaluator`
(the first 256 held-out prompts, seed 1234): the reward model's score is the *proxy*, the bag-of-words judge's
p(positive) the *gold* (`GOLD`), VADER a second, unrelated judge.

* `ppo_run`: PPO with notebook 06's recipe (`fast_recipe`) and any change to it (another seed, another β),
  evaluated along the run — the seed spread, over-optimisation and reward hacking.
* `best_of_n_run`: best-of-n from the SFT policy, n = 1 ... n_max.
* `positive_sft_run`: "why not just fine-tune on positive reviews?" — the SFT policy trained further on the
  positive IMDb train reviews only, evaluated along the way.
"""

from __future__ import annotations

import copy
import dataclasses
import time

from .along_training import GOLD, HeldOutEvaluator, ppo_with_evaluations, sft_with_evaluations
from .best_of_n import best_of_n_curve, draw_candidates
from .judges import default_judges

__all__ = ["Course", "fast_recipe", "ppo_run", "best_of_n_run", "positive_sft_run", "GOLD"]


def fast_recipe(ppo, **changes):
    """Notebook 06's PPO recipe — `ppo` with the faster recipe (`rlhf_helpers.config.FAST_PPO_RECIPE`: the fast
    path, one PPO epoch, learning rate 2e-4) and no time budget — with `changes` on top (e.g. ``seed=1`` or
    ``init_kl_coef=0.0, adaptive_kl=False``)."""
    from ..config import FAST_PPO_RECIPE

    return dataclasses.replace(ppo, **{**FAST_PPO_RECIPE, "max_minutes": None, **changes})


class Course:
    """What every experiment shares, loaded once: the config, the shipped SFT policy (also the frozen reference),
    its tokenizer, the reward model, the judges, the train prompts and the evaluator on held-out prompts."""

    def __init__(self, config=None, n_eval_prompts: int | None = None):
        from .. import build_dataset, get_config
        from ..policy import load_policy
        from ..reward.model import load_reward_model

        self.config = config or get_config()
        n_eval_prompts = n_eval_prompts or self.config.evaluation.n_prompts
        self.sft, self.tokenizer = load_policy(self.config.name)
        self.sft.eval().requires_grad_(False)
        self.scorer = load_reward_model(self.config.name)
        self.scorer.check_same_tokenizer(self.tokenizer)
        self.judges = default_judges(self.config)
        self.train_prompts = build_dataset(self.tokenizer, self.config, split="train")["input_ids"]
        self.eval_prompts = [ids.tolist() for ids in
                             build_dataset(self.tokenizer, self.config, split="eval")["input_ids"][:n_eval_prompts]]
        ppo = self.config.ppo
        self.evaluator = HeldOutEvaluator(self.sft, self.tokenizer, self.eval_prompts, self.scorer.score, self.judges,
                                          min_tokens=ppo.response_min_tokens, max_tokens=ppo.response_max_tokens,
                                          temperature=ppo.temperature, seed=self.config.evaluation.seed)


def ppo_run(course: Course, ppo_config, output_dir, steps: int, every: int, progress: bool = True,
            keep_samples: int = 8, reward_fn=None) -> dict:
    """PPO from the SFT policy with `ppo_config` for `steps` steps (resumable in `output_dir`), evaluated every
    `every` steps; `reward_fn` replaces the reward model (e.g. the gold judge). Returns ``{"settings", "steps",
    "train_seconds", "rows"}`` (rows: `ppo_with_evaluations`)."""
    from ..ppo import PPOTrainer
    from ..ppo.value_head import PolicyWithValueHead

    trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(course.sft).requires_grad_(True)), course.sft,
                         course.tokenizer, reward_fn or course.scorer.score, course.train_prompts, ppo_config,
                         output_dir)
    rows = ppo_with_evaluations(trainer, course.evaluator, every, progress=progress, keep_samples=keep_samples,
                                until_step=steps)
    settings = {k: v for k, v in vars(ppo_config).items() if not k.startswith("_")}
    return {"settings": settings, "steps": trainer.state["step"], "train_seconds": round(trainer.state["train_seconds"], 1),
            "mixed_precision": trainer.mixed_precision, "rows": rows}


def best_of_n_run(course: Course, n_max: int = 64, progress: bool = True) -> dict:
    """Best-of-n from the SFT policy on the evaluator's prompts, n = 1, 2, 4, ... n_max. Returns
    ``{"n_max", "seconds", "rows", "examples"}``; examples: for the first 8 prompts, the SFT's first draw and the
    best of all n_max, with proxy and gold."""
    started = time.perf_counter()
    ev = course.evaluator
    candidates = draw_candidates(course.sft, course.tokenizer, ev.prompts, course.scorer.score, course.judges,
                                 n_max=n_max, seed=ev.kwargs["seed"], min_tokens=ev.kwargs["min_tokens"],
                                 max_tokens=ev.kwargs["max_tokens"], temperature=ev.kwargs["temperature"],
                                 progress=progress)
    rows = best_of_n_curve(candidates)
    best = candidates.proxy.argmax(axis=0)
    examples = [{"query": candidates.queries[p], "first": candidates.responses[0][p],
                 "first_reward": float(candidates.proxy[0, p]), "first_gold": float(candidates.gold[0, p]),
                 "best": candidates.responses[best[p]][p], "best_reward": float(candidates.proxy[best[p], p]),
                 "best_gold": float(candidates.gold[best[p], p])} for p in range(min(8, len(ev.prompts)))]
    return {"n_max": n_max, "seconds": round(time.perf_counter() - started, 1), "rows": rows, "examples": examples}


def positive_sft_run(course: Course, output_dir, steps: int = 300, every: int = 50, learning_rate: float = 2e-4,
                     max_train_blocks: int | None = None, progress: bool = True) -> dict:
    """Fine-tune the SFT policy further on the **positive** IMDb train reviews only (packed 256-token blocks, the
    SFT objective), evaluated every `every` steps; resumable in `output_dir`. Returns
    ``{"settings", "steps", "train_seconds", "rows", "train_blocks"}``."""
    from ..config import SFTConfig
    from ..data import load_imdb_splits
    from ..policy.sft import pack_texts

    train = load_imdb_splits(course.config)["train"]
    positive = [text for text, label in zip(train["text"], train["label"]) if label == 1]
    settings = SFTConfig(max_steps=steps, learning_rate=learning_rate, warmup_steps=min(20, steps // 5),
                         eval_every=every, checkpoint_every=every, batch_size=16, block_size=256, seed=0,
                         max_train_blocks=max_train_blocks)
    blocks = pack_texts(positive, course.tokenizer, settings.block_size, max_blocks=max_train_blocks)
    result = sft_with_evaluations(copy.deepcopy(course.sft).requires_grad_(True), course.tokenizer, blocks, settings,
                                  output_dir, course.evaluator, progress=progress)
    return {"settings": dataclasses.asdict(settings), "steps": result["steps"],
            "train_seconds": result["train_seconds"], "rows": result["history"], "train_blocks": len(blocks),
            "positive_reviews": len(positive)}
