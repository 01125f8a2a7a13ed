"""Turn a finished run into text and one figure a person can read: pure functions, no model loading.

`summary_table` sets SFT against PPO metric by metric (the metrics of `evaluate_policy`), `before_after_samples`
prints the two policies' continuations of the same held-out prompts, `report_figure` draws the PPO training
curves and the judges' before/after positive rates into one PNG, and `format_run_summary` puts them together
as the end-of-run text of ``python -m rlhf_helpers run``.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

JUDGE_LABELS = {"bag_of_words": "bag of words", "vader": "VADER"}
POLICIES = ("sft", "ppo")


def _number(value) -> float | None:
    """`value` as a finite float, or None (missing, not a number, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _judge_names(*metrics: dict) -> list[str]:
    """Judge names found as ``positive_rate/<name>`` keys: the course's two first, then any others sorted."""
    found = {k.split("/", 1)[1] for m in metrics for k in m if k.startswith("positive_rate/")}
    return [j for j in JUDGE_LABELS if j in found] + sorted(found - set(JUDGE_LABELS))


def _format(value, kind: str, change: bool = False) -> str:
    """Format one cell: kind "pct" (a 0-1 share, shown as % / percentage points) or a format spec like ".2f"."""
    value = _number(value)
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:+.1f} pts" if change else f"{100 * value:.1f}%"
    return format(value, ("+" if change else "") + kind)


def summary_table(results: dict) -> str:
    """SFT vs PPO, one metric a row, as an aligned plain-text table.

    results: ``{"sft": metrics, "ppo": metrics}``, each the metrics dict of `evaluate_policy` (``reward``,
    ``positive_rate/<judge>``, ``kl``, ``ref_perplexity``, ``distinct_2``, ``response_length``, ``n``). Other
    top-level keys (e.g. ``dir``) are ignored; a missing policy drops its column (and the change column), a
    missing metric shows as ``-``.
    """
    columns = [p for p in POLICIES if isinstance(results.get(p), dict)]
    if not columns:
        return "No evaluation results."
    metrics = [results[p] for p in columns]
    rows = [("reward-model score (normalised)", "reward", ".2f")]
    rows += [(f"positive, {JUDGE_LABELS.get(j, j)} judge", f"positive_rate/{j}", "pct") for j in _judge_names(*metrics)]
    rows += [("KL to SFT (nats per response)", "kl", ".2f"), ("perplexity under SFT", "ref_perplexity", ".1f"),
             ("distinct-2 (unique word pairs)", "distinct_2", ".3f"),
             ("mean response length (tokens)", "response_length", ".1f")]
    table = [["metric"] + [p.upper() for p in columns] + (["change"] if len(columns) == 2 else [])]
    for label, key, kind in rows:
        cells = [_format(m.get(key), kind) for m in metrics]
        if len(columns) == 2:
            before, after = (_number(m.get(key)) for m in metrics)
            cells.append(_format(None if None in (before, after) else after - before, kind, change=True))
        table.append([label] + cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = next((m["n"] for m in metrics if _number(m.get("n")) is not None), None)
    prompts = f"{int(n)} held-out prompts" if n is not None else "held-out prompts"
    title = " vs ".join(p.upper() for p in columns) + f" on {prompts} (one sampled continuation each)"
    note = ["", "Reward and the judges (which PPO never saw) ask: did it learn to write positive reviews? KL and",
            "perplexity give the price: how far it moved from SFT, how unlikely SFT finds its text. Distinct-2",
            "falls when the text gets repetitive. Judges read prompt + continuation."]
    return "\n".join([title, *lines, *(note if len(columns) == 2 else [])])


def _verdicts(sample: dict) -> str:
    """``reward +0.85; bag of words: positive, VADER: negative`` for one sample (missing parts left out)."""
    judges = _judge_names({f"positive_rate/{k}": 0 for k, v in sample.items() if isinstance(v, bool)})
    parts = [f"{JUDGE_LABELS.get(j, j)}: {'positive' if sample[j] else 'negative'}" for j in judges]
    reward = _format(sample.get("reward"), "+.2f")
    return "; ".join(([f"reward {reward}"] if reward != "-" else []) + ([", ".join(parts)] if parts else []))


def before_after_samples(sft_samples: list[dict], ppo_samples: list[dict] | None, n: int = 3,
                         pick: str = "first", note: str = "") -> str:
    """SFT and PPO continuations of the same `n` held-out prompts, each with its reward and judge verdicts.

    sft_samples / ppo_samples: the sample lists of `evaluate_policy` (dicts with ``query``, ``response``, ``kl``,
    ``reward`` and one bool per judge name), drawn on the same prompts in the same order; `ppo_samples` may be
    None or empty (SFT only). pick: ``"first"`` (the first `n` rows, not cherry-picked) or ``"gain"`` (the `n`
    rows where PPO's reward rose most; ties by position). note: a line printed above the samples (the
    profile's ``sample_note``: what to expect of its model's writing), "" for none.
    """
    if pick not in ("first", "gain"):
        raise ValueError(f"pick must be 'first' or 'gain', got {pick!r}")
    ppo_samples, rows, how = ppo_samples or [], list(range(len(sft_samples))), "the first ones, not cherry-picked"
    if pick == "gain" and ppo_samples:
        def gain(i):
            before, after = (_number(s[i].get("reward")) if i < len(s) else None for s in (sft_samples, ppo_samples))
            return -math.inf if None in (before, after) else after - before
        rows, how = sorted(rows, key=lambda i: (-gain(i), i)), "where PPO's reward rose most (cherry-picked)"
    rows = rows[:n]
    lines = [f"Continuations of {len(rows)} held-out prompts ({how}):"]
    if note:
        lines.append(note)
    wrap = dict(width=100, initial_indent="      ", subsequent_indent="      ")
    for k, i in enumerate(rows, 1):
        lines += ["", f"[{k}] prompt: {sft_samples[i].get('query', '').strip()!r}"]
        for name, samples in (("SFT", sft_samples), ("PPO", ppo_samples)):
            if i < len(samples):
                lines += [f"  {name}  {_verdicts(samples[i])}",
                          textwrap.fill("..." + samples[i].get("response", "").replace("\n", " "), **wrap)]
    return "\n".join(lines)


def _plot_curve(ax, history: list[dict], key: str, title: str, ylabel: str, color: str) -> None:
    """One training curve: each step faint, a rolling mean on top."""
    points = [(h.get("step"), _number(h.get(key))) for h in history]
    points = [(s, v) for s, v in points if _number(s) is not None and v is not None]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, color=color, alpha=0.3, lw=1, label="per step")
        w = max(1, len(values) // 20)  # trailing mean over w steps (fewer at the start)
        smooth = [sum(values[max(0, i - w + 1): i + 1]) / min(i + 1, w) for i in range(len(values))]
        ax.plot(steps, smooth, color=color, lw=2, label=f"mean of {w} steps")
    else:
        ax.text(0.5, 0.5, "no PPO history", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set(title=title, xlabel="PPO step", ylabel=ylabel)
    ax.grid(alpha=0.3)


def report_figure(ppo_history: list[dict], results: dict, path, kl_target: float | None = None) -> Path:
    """Save a one-page PNG (3 panels) of a run to `path` and return it as a Path.

    ppo_history: the PPO trainer's history, one dict per step with ``step``, ``score`` (mean normalised
    reward-model score of the batch) and ``kl`` (mean KL to SFT per response, nats); may be empty.
    results: ``{"sft": metrics, "ppo": metrics}`` as in `summary_table` (for the judges' positive rates).
    kl_target: the adaptive KL controller's target, drawn as a dashed line when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), layout="constrained")  # not registered with pyplot: nothing global to close
    FigureCanvasAgg(fig)
    score_ax, kl_ax, bar_ax = fig.subplots(1, 3)
    _plot_curve(score_ax, ppo_history, "score", "Reward-model score during PPO", "mean score (normalised)", "tab:blue")
    _plot_curve(kl_ax, ppo_history, "kl", "KL to the SFT model during PPO", "nats per response", "tab:orange")
    if _number(kl_target) is not None:
        kl_ax.axhline(kl_target, color="black", ls="--", lw=1, label=f"KL target ({kl_target:g})")
    for ax in (score_ax, kl_ax):
        if ax.lines:
            ax.legend(fontsize=8, loc="best")
    columns = [p for p in POLICIES if isinstance(results.get(p), dict)]
    judges = _judge_names(*(results[p] for p in columns))
    width = 0.8 / max(len(columns), 1)
    for k, (policy, color) in enumerate(zip(columns, ("tab:grey", "tab:green"))):
        rates = [100 * (_number(results[policy].get(f"positive_rate/{j}")) or 0.0) for j in judges]
        bars = bar_ax.bar([x + (k - (len(columns) - 1) / 2) * width for x in range(len(judges))], rates, width,
                          color=color, label=policy.upper())
        bar_ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    bar_ax.set_xticks(range(len(judges)), [f"{JUDGE_LABELS.get(j, j)} judge" for j in judges])
    bar_ax.set(title="Judged positive, held-out prompts", ylabel="% of continuations", ylim=(0, 110))
    bar_ax.grid(axis="y", alpha=0.3)
    if columns:
        bar_ax.legend(fontsize=8, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _ppo_line(ppo_run) -> str:
    """One line on the PPO run: steps, minutes, resumed or not, reward-model score first -> last step."""
    if not isinstance(ppo_run, dict):
        return f"PPO: {ppo_run}" if ppo_run else "PPO: not run."
    seconds = _number(ppo_run.get("seconds"))
    line = f"PPO: {ppo_run.get('steps', '?')} steps" + (f" in {seconds / 60:.1f} min" if seconds is not None else "")
    if ppo_run.get("resumed"):
        line += " (resumed from a checkpoint; the steps and minutes include the earlier run)"
    first, last = _number(ppo_run.get("first_score")), _number(ppo_run.get("last_score"))
    if first is not None and last is not None:
        line += f"; reward-model score on the training batch {first:+.2f} at the first step -> {last:+.2f} at the last"
    return line + "."


def format_run_summary(results: dict, sft_samples: list[dict], ppo_samples: list[dict] | None, ppo_run: dict | None,
                       figure_path, run_card_path, note: str = "") -> str:
    """The whole end-of-run text: the PPO run, the SFT vs PPO table, sample continuations, where the files are.

    results / sft_samples / ppo_samples: as in `summary_table` and `before_after_samples`. ppo_run: what
    `stage_ppo` returns (``steps``, ``seconds``, ``resumed``, optionally ``first_score`` / ``last_score``), None
    when PPO did not run (or a string saying why). figure_path / run_card_path: the saved PNG and evaluation
    run card (None to leave a line out). note: the line above the samples (see `before_after_samples`).
    """
    parts = [_ppo_line(ppo_run), summary_table(results)]
    if sft_samples:
        parts.append(before_after_samples(sft_samples, ppo_samples, note=note))
    files = [f"{label}: {p}" for label, p in (("Figure", figure_path), ("Run card", run_card_path)) if p]
    return "\n\n".join(parts + (["\n".join(files)] if files else []))
