"""One small training run of a stage, on however many processes it was launched with (tests/test_scale_out.py).

    python tests/scale_out_worker.py sft OUT [--micro-batch-size 4] [--max-minutes 0.02 --delay 0.3] [--stop-after 2]
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... tests/scale_out_worker.py sft OUT

Random tiny models and synthetic data, float32, so runs on 1 and 2 processes can be compared closely. Every
process writes ``OUT/rank<r>.json`` (the steps it trained, its training curve); the main process writes
``OUT/params.pt`` (the trained weights). ``--delay`` slows down process 1 on purpose (seconds per forward pass).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_helpers.config import PPOConfig, RewardConfig, SFTConfig
from rlhf_helpers.data.tokenizer import load_tokenizer
from rlhf_helpers.core.assets import shipped_tokenizer_dir

RANK = int(os.environ.get("RANK", "0"))


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0,
                        embd_pdrop=0, attn_pdrop=0, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config)


def slow_down(model: torch.nn.Module, seconds: float) -> None:
    """Process 1 only: every forward pass of `model` sleeps first (a slow GPU, a busy host)."""
    if seconds and RANK == 1:
        model.register_forward_pre_hook(lambda module, args: time.sleep(seconds))


def run_sft(args, tokenizer, out: Path) -> tuple[torch.nn.Module, dict]:
    from rlhf_helpers.policy.sft import train_sft

    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(5, 500, (64, 16), generator=generator)
    model = tiny_gpt2(len(tokenizer))
    slow_down(model, args.delay)
    config = SFTConfig(max_steps=args.steps, max_minutes=args.max_minutes, batch_size=8, warmup_steps=1,
                       learning_rate=3e-3, eval_every=1000, checkpoint_every=2, mixed_precision="no",
                       micro_batch_size=args.micro_batch_size)
    metrics = train_sft(model, tokenizer, blocks[:56], blocks[56:], config, out, progress=False,
                        stop_after=args.stop_after)
    return model, {"losses": metrics.get("losses"), "steps": metrics["steps"]}


def run_reward(args, tokenizer, out: Path) -> tuple[torch.nn.Module, dict]:
    from rlhf_helpers.reward.model import RewardModel
    from rlhf_helpers.reward.training import train_reward_model

    rng = random.Random(0)

    def ids(n_min, n_max):
        return [rng.randrange(5, 500) for _ in range(rng.randint(n_min, n_max))]

    rows = [{"chosen_ids": ids(3, 20), "rejected_ids": ids(3, 20), "view": "full" if i % 3 else "snippet"}
            for i in range(96)]
    train = Dataset.from_list(rows)
    heldout = {"full": {"chosen_ids": [ids(3, 20) for _ in range(8)], "rejected_ids": [ids(3, 20) for _ in range(8)]}}
    model = RewardModel.from_policy(tiny_gpt2(len(tokenizer)), seed=0)
    slow_down(model, args.delay)
    config = RewardConfig(max_steps=args.steps, max_minutes=args.max_minutes, full_batch_size=8, snippet_batch_size=4,
                          learning_rate=3e-3, warmup_steps=1, eval_every=1000, log_every=1, checkpoint_every=2,
                          mixed_precision="no", micro_batch_size=args.micro_batch_size)
    metrics = train_reward_model(model, tokenizer, train, heldout, config, out, progress=False,
                                 stop_after=args.stop_after)
    losses = [round(row["loss"], 6) for row in metrics.get("train_log", [])]
    return model, {"losses": losses, "steps": metrics["steps"]}


def letter_reward(texts):
    """A toy reward: how often the letter 'e' appears (deterministic, the same on every process)."""
    return torch.tensor([t.count("e") / max(len(t), 1) * 10 - 1 for t in texts])


def run_ppo(args, tokenizer, out: Path) -> tuple[torch.nn.Module, dict]:
    from rlhf_helpers.ppo import PPOTrainer
    from rlhf_helpers.ppo.value_head import PolicyWithValueHead

    lm = tiny_gpt2(len(tokenizer)).eval()
    texts = ["The movie was", "I rented this", "This film is", "What a", "Honestly the acting", "My wife and I",
             "The plot", "It is a shame"] * 2
    prompts = [tokenizer.encode(t) for t in texts]

    def reward(batch):
        if args.delay and RANK == 1:
            time.sleep(args.delay)
        return letter_reward(batch)

    extra = {} if args.ratio_threshold is None else {"ratio_threshold": args.ratio_threshold}
    config = PPOConfig(max_steps=args.steps, max_minutes=args.max_minutes, batch_size=8, mini_batch_size=4,
                       ppo_epochs=2, learning_rate=1e-3, response_min_tokens=3, response_max_tokens=6,
                       checkpoint_every=2, seed=0, mixed_precision="no", micro_batch_size=args.micro_batch_size,
                       fast_path=args.fast_path, **extra)
    trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), copy.deepcopy(lm), tokenizer, reward, prompts,
                         config, out)
    trainer.maybe_resume()
    history = trainer.train(progress=False, stop_after=args.stop_after)
    curve = [{k: round(h[k], 6) for k in ("score", "kl", "kl_coef", "policy_loss", "value_loss", "skipped_minibatches")}
             for h in history]
    model = trainer.accelerator.unwrap_model(trainer.policy)
    return model, {"losses": curve, "steps": trainer.state["step"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["sft", "reward", "ppo"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--micro-batch-size", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--ratio-threshold", type=float, default=None)  # PPO: low, to make it skip mini-batches
    parser.add_argument("--fast-path", action="store_true")  # PPO: PPOConfig.fast_path
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores: one thread each, no oversubscription
    tokenizer = load_tokenizer(str(shipped_tokenizer_dir("tiny")))
    started = time.perf_counter()
    model, result = {"sft": run_sft, "reward": run_reward, "ppo": run_ppo}[args.stage](args, tokenizer, args.out)
    result.update(rank=RANK, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                  seconds=round(time.perf_counter() - started, 2))
    (args.out / f"rank{RANK}.json").write_text(json.dumps(result))
    if RANK == 0:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, args.out / "params.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
