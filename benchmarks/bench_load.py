"""PPO on a busy machine: seconds per step idle and beside 1 and 3 CPU-bound processes, PyTorch's own thread
count vs threads chosen from the free cores (`rlhf_helpers.core.threads`), side by side.

    python benchmarks/bench_load.py              # 3 rounds of 30 steps per case at the tiny profile's PPO settings
    python benchmarks/bench_load.py --steps 8 --rounds 1    # quicker

Each case is a fresh process (``python benchmarks/bench_load.py --case ...``) that trains PPO from the shipped
SFT policy against the shipped reward model, after the competitors have started: single-threaded Python loops
that keep one core busy each, as a second kernel or a test run would. ``own threads`` is PyTorch's default
(one per core; ``RLHF_ADAPT_THREADS=0``), ``adaptive`` the course's default, ``one thread`` pinned to one
(``OMP_NUM_THREADS=1``; idle and beside one process: the floor for a run left one core). Reported per case: the median
seconds per step (steps 2 on; the median over the rounds), the ratio to the idle median of the same thread policy
in the same round (every case runs once per round, so a loaded case runs minutes after its idle one, not an hour:
this machine's speed drifts by 10-20% over minutes; the median of the rounds' ratios and each round's), the worst
step relative to its run's median (a stall), and whether every run computed the same numbers (statistics and
weights, bit for bit) as the idle run of the same thread policy. Last, the floor: one thread beside one competitor
over the adaptive idle step, round by round. Run it alone on the machine: other load is what it measures.
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every case runs, all cases in turn")
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.steps)))
        return
    print(f"{os.cpu_count()} cores, {args.steps} PPO steps per case (tiny profile settings), {args.rounds} rounds\n")
    # one thread pinned: the floor a loaded run can reach with one core's worth of threads
    cases = [(name, competitors) for name in POLICIES
             for competitors in (args.competitors if name != "one thread" else [0, 1])]
    rows: dict[str, list[dict]] = {f"{name}/{competitors}": [] for name, competitors in cases}
    for round_ in range(args.rounds):
        for name, competitors in cases:
            row = measure(competitors, name, args.steps)
            row["median"] = median(row["seconds"][1:])  # the first step builds kernels
            rows[f"{name}/{competitors}"].append(row)
            print(f"round {round_ + 1}: {name:<12}{competitors:>2} competitors {row['median']:.3f} s/step", flush=True)
    print(f"\n{'threads':<12}{'competitors':>12}{'median s/step':>15}{'vs idle':>9}{'rounds vs idle':>22}"
          f"{'worst/median':>14}{'threads used':>14}  same numbers as idle")
    results = {}
    for name, competitors in cases:
        runs, idle_runs = rows[f"{name}/{competitors}"], rows[f"{name}/0"]
        med = median([r["median"] for r in runs])
        # each round's loaded median over the idle median of the same round (see the module's docstring)
        ratios = [r["median"] / i["median"] for r, i in zip(runs, idle_runs)]
        worst = max(max(r["seconds"][1:]) / r["median"] for r in runs)
        same = "" if competitors == 0 else (
            "yes" if all(r["digest"] == idle_runs[0]["digest"] for r in runs + idle_runs) else "no")
        used = sorted({t for r in runs for t in r["threads"]})
        results[f"{name}/{competitors}"] = {"median": med, "vs_idle": median(ratios), "round_ratios": ratios,
                                            "worst_over_median": worst, "same_numbers_as_idle": same or None,
                                            "rounds": runs}
        spread = "" if competitors == 0 else ", ".join(f"{x:.2f}" for x in ratios)
        print(f"{name:<12}{competitors:>12}{med:>15.3f}{median(ratios):>8.2f}x{spread:>22}{worst:>13.2f}x"
              f"{str(used):>14}  {same}")
    if "one thread/1" in rows and "adaptive/0" in rows:
        # a run left one free core runs at best at one thread's speed: this is the lowest "vs idle" it can reach
        floor = [o["median"] / a["median"] for o, a in zip(rows["one thread/1"], rows["adaptive/0"])]
        results["floor"] = {"vs_idle": median(floor), "round_ratios": floor}
        print(f"\nfloor (one thread beside one competitor / adaptive idle, same round): {median(floor):.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}' for x in floor)})")
    path = os.path.join(os.path.dirname(__file__), "results", "bench_load.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(results, handle, indent=1)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
