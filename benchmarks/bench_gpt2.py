"""The `gpt2` profile's PPO at full size on this machine: seconds per step and peak memory, with a random 124 M
GPT-2 (no hub here: the stand-in has the hub model's config — 12 layers, 768 wide, 1,024 positions, 50,257 tokens —
and random weights, which cost the same to run), plus the step's FLOPs and what they mean on one GPU.

    python benchmarks/bench_gpt2.py               # 2 PPO steps at the gpt2 profile's settings (batch 128)
    python benchmarks/bench_gpt2.py --batch 32    # a smaller batch, same mini-batch ratio

The tokenizer is a 50,257-token byte-level BPE trained here on IMDb (tests/test_gpt2_path.py builds the same
kind); the reward model is the policy's backbone with a reward head, as the reward stage makes it. Nothing is
written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_gpt2_path import GPT2_CONTEXT, GPT2_EOS, GPT2_VOCAB, gpt2_sized_tokenizer  # noqa: E402

from rlhf_helpers import build_dataset, get_config, load_imdb  # noqa: E402
from rlhf_helpers.ppo import PPOTrainer  # noqa: E402
from rlhf_helpers.ppo.value_head import PolicyWithValueHead  # noqa: E402
from rlhf_helpers.reward.model import RewardModel, RewardScorer  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ppo_step_flops(n_params: int, batch: int, prompt: int, response: int, epochs: int) -> float:
    """FLOPs of one PPO step, counting 2 per parameter per token forward and 4 more backward (Kaplan et al. 2020,
    "Scaling Laws for Neural Language Models", section 2.1; attention's share is small at these lengths):
    sampling `response` tokens (forward), the old policy's, the reference's and the reward model's passes over
    prompt + response (forward), then `epochs` forward + backward passes of the policy."""
    tokens = batch * (prompt + response)
    sampling = 2 * n_params * batch * response
    forwards = 3 * 2 * n_params * tokens
    update = epochs * 6 * n_params * tokens
    return sampling + forwards + update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="rollouts per step (default: the profile's 128)")
    args = parser.parse_args()
    config = get_config("gpt2", dataset_source="offline", tokenizer_name_or_path=None, model_name_or_path=None)
    ppo = config.ppo
    if args.batch:
        ppo = dataclasses.replace(ppo, batch_size=args.batch, mini_batch_size=args.batch * ppo.mini_batch_size
                                  // ppo.batch_size)
    started = time.perf_counter()
    imdb = load_imdb("offline")
    tokenizer = gpt2_sized_tokenizer(imdb.select(range(0, 25_000, 2))["text"])
    tokenizer.pad_token = tokenizer.eos_token
    print(f"tokenizer: {len(tokenizer):,} tokens in {time.perf_counter() - started:.0f} s", flush=True)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=GPT2_VOCAB, n_positions=GPT2_CONTEXT, n_embd=768, n_layer=12,
                                    n_head=12, bos_token_id=GPT2_EOS, eos_token_id=GPT2_EOS))
    n_params = sum(p.numel() for p in lm.parameters())
    print(f"policy: {n_params / 1e6:.1f} M parameters; peak memory so far {peak_mb():,.0f} MB", flush=True)
    scorer = RewardScorer(RewardModel.from_policy(lm).eval(), tokenizer, max_length=config.reward.max_length)
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), lm, tokenizer, scorer.score, prompts, ppo, out)
        rows = [trainer.step() for _ in range(args.steps)]
    seconds = [r["seconds"] for r in rows]
    flops = ppo_step_flops(n_params, ppo.batch_size, (config.prompt_min_tokens + config.prompt_max_tokens) // 2,
                           (ppo.response_min_tokens + ppo.response_max_tokens) // 2, ppo.ppo_epochs)
    print(f"\nPPO at batch {ppo.batch_size}, mini-batch {ppo.mini_batch_size}, {ppo.ppo_epochs} epochs, "
          f"{trainer.mixed_precision} precision, {torch.get_num_threads()} threads:")
    print("seconds per step: " + ", ".join(f"{s:.1f}" for s in seconds)
          + " (phases of the last: " + ", ".join(f"{k[5:]} {v:.1f}" for k, v in rows[-1].items()
                                                 if k.startswith("time_")) + ")")
    print(f"peak resident memory: {peak_mb():,.0f} MB")
    print(f"FLOPs per step (6N per trained token, 2N per forward token): {flops / 1e12:.2f} TFLOP; "
          f"here {flops / min(seconds) / 1e9:.0f} GFLOP/s")
    for name, peak in (("one H100, bf16 dense, at 30% of its ~990 TFLOP/s", 990e12 * 0.3),
                       ("one A100, bf16 dense, at 30% of its 312 TFLOP/s", 312e12 * 0.3)):
        print(f"on paper, {name}: {flops / peak * 1e3:.1f} ms per step of arithmetic (sampling, being sequential "
              "and small, takes longer than its FLOPs say)")


if __name__ == "__main__":
    main()
