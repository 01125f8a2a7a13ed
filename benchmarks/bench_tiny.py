"""Throughput of the tiny profile's GPT-2: SFT training and generation, in tokens per second.

    python benchmarks/bench_tiny.py            # the real numbers (a few minutes on a laptop CPU)
    python benchmarks/bench_tiny.py --quick    # seconds-long smoke run: small shapes, numbers not comparable

What is measured:

* **SFT training**: forward + backward + AdamW step on a batch of 16 x 256 tokens (the tiny
  profile's SFT batch), in fp32 and under bf16 autocast. Tokens are random ids: speed does not
  depend on what the text says, and this keeps the benchmark free of data downloads.
* **Generation**: `rlhf_helpers.policy.generation.generate` with 48 new tokens (no early stop), at batch 1
  and batch 32, with the KV cache and without it (the whole sequence recomputed each step).

The model is the shipped SFT policy when it exists (``load_policy("tiny")``), else a fresh random
model of the same size over the course tokenizer: throughput depends on the shapes, not the weights.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from rlhf_helpers.config import SFTConfig, get_config
from rlhf_helpers.core.training import make_optimizer
from rlhf_helpers.data.tokenizer import load_tokenizer
from rlhf_helpers.policy import count_parameters, generate, load_policy, new_policy_model, shipped_policy_dir

PROMPTS = ["This movie was", "I rented this film because", "The acting", "What a", "Honestly, the plot",
           "My wife and I watched", "It is hard to believe that", "The best thing about"]


def load_model(device: str, tokenizer_dir: str | None = None):
    """The shipped tiny policy, else a random model of the tiny profile's size."""
    if (shipped_policy_dir("tiny") / "model.safetensors").is_file():
        model, tokenizer = load_policy("tiny", device=device)
        return model, tokenizer, "shipped SFT policy"
    config = get_config("tiny")
    tokenizer_dir = tokenizer_dir or config.artifacts_dir / "tokenizer"
    try:
        tokenizer = load_tokenizer(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise SystemExit(f"No usable tokenizer at {tokenizer_dir} ({err}). Train it first "
                         "(python -m rlhf_helpers tokenizer) or pass --tokenizer DIR.") from err
    return new_policy_model(config, tokenizer).to(device), tokenizer, "random init (no shipped policy yet)"


def bench_training(model, batch_size: int, block_size: int, steps: int, bf16: bool, device: str) -> float:
    """Tokens/s of SFT steps (forward, backward, clip, AdamW) on random token blocks."""
    model = copy.deepcopy(model).train()  # a private copy: the optimiser must not touch the shared weights
    optimizer = make_optimizer(model, SFTConfig())
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    batch = torch.randint(0, vocab, (batch_size, block_size), generator=generator).to(device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: first-call allocations and kernel selection are not throughput
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch_size * block_size / (time.perf_counter() - started)


def bench_generation(model, tokenizer, batch_size: int, new_tokens: int, use_cache: bool, repeats: int) -> float:
    """Tokens/s of `generate` (new tokens only; short prompts of different lengths, left-padded)."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    kwargs = dict(stop_at_eos=False, use_cache=use_cache, seed=0)  # fixed length: every run does the same work
    generate(model, tokenizer, prompts, max_new_tokens=2, **kwargs)  # warm-up
    device = str(next(model.parameters()).device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        out = generate(model, tokenizer, prompts, max_new_tokens=new_tokens, **kwargs)
    synchronize(device)
    assert out.response_ids.shape == (batch_size, new_tokens)
    return repeats * batch_size * new_tokens / (time.perf_counter() - started)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run with small shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: artifacts/tiny/tokenizer)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed SFT steps per precision")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.quick:  # shortened (full: batch 16 x 256, 5 steps; generation batches 1 and 32, 48 tokens)
        batch_size, block_size, steps, gen_batches, new_tokens, repeats = 4, 64, 2, (1, 8), 8, 1
    else:
        batch_size, block_size, steps, gen_batches, new_tokens, repeats = 16, 256, 5, (1, 32), 48, 2
    steps = args.train_steps or steps

    torch.manual_seed(0)
    model, tokenizer, source = load_model(args.device, args.tokenizer)
    print(f"model: {source}, {count_parameters(model) / 1e6:.2f} M parameters, "
          f"{model.config.n_layer} layers x {model.config.n_embd} wide, vocab {model.config.vocab_size}")
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"
          + ("   [--quick: small shapes, numbers are a smoke test only]" if args.quick else ""))

    rows = []
    for bf16 in (False, True):
        rate = bench_training(model, batch_size, block_size, steps, bf16, args.device)
        rows.append(("SFT train step", f"{'bf16 autocast' if bf16 else 'fp32'}, batch {batch_size} x {block_size}", rate))
    for batch in gen_batches:
        cached = bench_generation(model, tokenizer, batch, new_tokens, True, repeats)
        full = bench_generation(model, tokenizer, batch, new_tokens, False, repeats)
        rows.append(("generate", f"batch {batch}, {new_tokens} new, KV cache", cached))
        rows.append(("generate", f"batch {batch}, {new_tokens} new, no cache", full))
        rows.append(("  cache speed-up", f"batch {batch}", cached / full))

    print()
    print(f"{'what':<18} {'setting':<32} {'tokens/s':>10}")
    print("-" * 62)
    for what, setting, value in rows:
        shown = f"x{value:.2f}" if "speed-up" in what else f"{value:,.0f}"
        print(f"{what:<18} {setting:<32} {shown:>10}")


if __name__ == "__main__":
    main()
