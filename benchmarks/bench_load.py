"""PPO on a busy machine: seconds per step idle and beside 1 and 3 CPU-bound processes, PyTorch's own thread
count vs threads chosen from the free cores (`rlhf_helpers.core.threads`), side by side.

    python benchmarks/bench_load.py              # 30 steps per case at the tiny profile's PPO settings
    python benchmarks/bench_load.py --steps 8    # quicker

Each case is a fresh process (``python benchmarks/bench_load.py --case ...``) that trains PPO from the shipped
SFT policy against the shipped reward model, after the competitors have started: single-threaded Python loops
that keep one core busy each, as a second kernel or a test run would. ``own threads`` is PyTorch's default
(one per core; ``RLHF_ADAPT_THREADS=0``), ``adaptive`` the course's default, ``one thread`` pinned to one
(``OMP_NUM_THREADS=1``; idle and beside one process: the floor for a run left one core). Reported per case: the median
seconds per step (steps 2 on), the median relative to the idle median of the same thread policy, and the worst
step relative to the case's median (a stall), and whether the run computed the same numbers (statistics and
weights, bit for bit) as the idle run of the same thread policy. Run it alone on the machine: other load is what it measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

BUSY_LOOP = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def run_case(steps: int) -> dict:
    """In the case's own process: `steps` PPO steps, their seconds and thread counts."""
    import copy

    from rlhf_helpers import build_dataset, get_config
    from rlhf_helpers.core.run import without_timings
    from rlhf_helpers.policy import load_policy
    from rlhf_helpers.ppo import PPOTrainer
    from rlhf_helpers.ppo.trainer import reward_autocast_dtype
    from rlhf_helpers.ppo.value_head import PolicyWithValueHead
    from rlhf_helpers.reward import load_reward_model

    config = get_config("tiny")
    settings = config.ppo
    lm, tokenizer = load_policy("tiny")
    scorer = load_reward_model("tiny", autocast_dtype=reward_autocast_dtype(settings))
    prompts = build_dataset(tokenizer, config, split="train")["input_ids"]
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(PolicyWithValueHead(copy.deepcopy(lm)), copy.deepcopy(lm), tokenizer, scorer.score,
                             prompts, settings, out)
        started = time.perf_counter()
        trainer.train(progress=False, stop_after=steps)
        wall = time.perf_counter() - started
    history = trainer.state["history"]
    # what the run computed, without its timings: equal digests = the same run, bit for bit
    digest = hashlib.sha256(json.dumps(without_timings(history), sort_keys=True).encode())
    for parameter in trainer.policy.parameters():
        digest.update(parameter.detach().float().numpy().tobytes())
    return {"seconds": [h["seconds"] for h in history], "threads": [h["threads"] for h in history], "wall": wall,
            "digest": digest.hexdigest()[:16]}


POLICIES = {"own threads": {"RLHF_ADAPT_THREADS": "0"}, "adaptive": {"RLHF_ADAPT_THREADS": "1"},
            "one thread": {"OMP_NUM_THREADS": "1"}}


def measure(competitors: int, policy: str, steps: int) -> dict:
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        time.sleep(1.0)
        env = {**os.environ, "TQDM_DISABLE": "1"}
        env.pop("OMP_NUM_THREADS", None)
        env.update(POLICIES[policy])
        done = subprocess.run([sys.executable, __file__, "--case", "--steps", str(steps)], env=env,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for process in busy:
            process.kill()
            process.wait()


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.steps)))
        return
    print(f"{os.cpu_count()} cores, {args.steps} PPO steps per case (tiny profile settings)\n")
    print(f"{'threads':<12}{'competitors':>12}{'median s/step':>15}{'vs idle':>9}{'worst/median':>14}"
          f"{'threads used':>16}  same numbers as idle")
    results = {}
    for name in POLICIES:
        idle = idle_digest = None
        # one thread pinned: the floor a loaded run can reach with one core's worth of threads
        for competitors in args.competitors if name != "one thread" else [0, 1]:
            row = measure(competitors, name, args.steps)
            seconds = row["seconds"][1:]  # the first step builds kernels
            med = median(seconds)
            idle = med if competitors == 0 else idle
            idle_digest = row["digest"] if competitors == 0 else idle_digest
            same = "" if idle_digest is None or competitors == 0 else ("yes" if row["digest"] == idle_digest else "no")
            used = sorted(set(row["threads"]))
            results[f"{name}/{competitors}"] = {"median": med, "worst": max(seconds), **row}
            print(f"{name:<12}{competitors:>12}{med:>15.3f}{med / idle if idle else float('nan'):>8.2f}x"
                  f"{max(seconds) / med:>13.2f}x{str(used):>16}  {same}")
    path = os.path.join(os.path.dirname(__file__), "results", "bench_load.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
