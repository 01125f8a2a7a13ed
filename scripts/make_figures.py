"""Draw the course's explanatory figures into ``images/`` at the top of the checkout.

    python scripts/make_figures.py

Three figures, all drawn by this file with matplotlib (Agg backend, no randomness, so re-running it
gives the same pictures):

* ``rlhf_workflow.png``: the course pipeline, pretrained LM -> SFT -> reward model -> PPO -> evaluation.
* ``ppo_loop.png``: what one PPO step of RLHF does, from prompts to the clipped update.
* ``kl_leash.png``: the closed-form optimum of the KL-regularised objective on a toy 1-D problem,
  for several values of beta.

The toy problem and the kl_leash.png figure (`toy_problem`, `optimal_policy`, `kl_divergence`,
`draw_kl_leash`) live in ``rlhf_helpers.intro``, so notebook 00 computes with the same functions the figure
is drawn from.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

if __name__ == "__main__":
    # Run as a script: no display needed. Imported: keep the caller's backend.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# The toy problem of kl_leash.png lives in the package, so notebook 00 computes with the same functions.
from rlhf_helpers.intro import draw_kl_leash  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"

# One palette for every figure: a colour per kind of component, so the same thing looks the same.
COLORS = {
    "model": "#dbe9f6",      # trainable language models (blue)
    "frozen": "#e6e6e6",     # frozen copies (grey)
    "reward": "#fde5c8",     # reward model and scores (orange)
    "data": "#e3f1dc",       # data, prompts, samples (green)
    "algo": "#efe1f5",       # RL computations (purple)
    "eval": "#fbeaea",       # evaluation (red)
}
EDGE = "#333333"


# ---------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------
def draw_box(ax, center, width, height, text, color, fontsize=11, dashed=False):
    """A rounded box with centred text; returns its (left, right, bottom, top) for arrow anchors."""
    x, y = center
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2), width, height,
        boxstyle="round,pad=0.02,rounding_size=0.15",
        facecolor=color, edgecolor=EDGE, linewidth=1.4,
        linestyle="--" if dashed else "-",
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, linespacing=1.35)
    return (x - width / 2, x + width / 2, y - height / 2, y + height / 2)


def draw_arrow(ax, start, end, label=None, label_offset=(0.0, 0.0), dashed=False, rad=0.0,
               fontsize=9.5, color=EDGE):
    """An arrow from `start` to `end` (data coordinates), optionally labelled near its middle."""
    arrow = FancyArrowPatch(
        start, end, arrowstyle="-|>", mutation_scale=16, linewidth=1.5, color=color,
        linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}",
        shrinkA=2, shrinkB=2,
    )
    ax.add_patch(arrow)
    if label:
        mx = (start[0] + end[0]) / 2 + label_offset[0]
        my = (start[1] + end[1]) / 2 + label_offset[1]
        ax.text(mx, my, label, ha="center", va="center", fontsize=fontsize, style="italic",
                color="#222222", linespacing=1.3,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none"))


def blank_canvas(width_in, height_in, xlim, ylim):
    fig, ax = plt.subplots(figsize=(width_in, height_in))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def save(fig, name: str) -> Path:
    """Save into images/; the PNG metadata is pinned so identical drawings give identical files."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    path = IMAGES_DIR / name
    fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Figure 1: the course workflow
# ---------------------------------------------------------------------------------------------
def draw_rlhf_workflow() -> plt.Figure:
    fig, ax = blank_canvas(15, 6.6, (0, 17), (0, 7.5))
    w, h = 3.1, 1.45
    y_mid, y_top, y_bot = 3.75, 6.3, 1.2

    lm = draw_box(ax, (1.8, y_mid), w, h, "Pretrained LM\n(tiny GPT-2 trained here,\nor hub gpt2)", COLORS["model"])
    sft = draw_box(ax, (6.0, y_mid), w, h, "SFT on IMDb reviews\nnext-token loss\n(notebook 02)", COLORS["model"])
    ppo = draw_box(ax, (10.6, y_mid), w + 0.3, h + 0.3,
                   "PPO fine-tuning\npolicy $\\pi_\\theta$ + value head\n(notebooks 05–06)", COLORS["algo"], fontsize=11.5)
    ev = draw_box(ax, (15.1, y_mid), w - 0.4, h, "Evaluation\nreward, KL, perplexity,\ndiversity (notebook 07)",
                  COLORS["eval"])

    pairs = draw_box(ax, (6.0, y_top), w, h - 0.2, "Preference pairs\non IMDb reviews\n(chosen $\\succ$ rejected)",
                     COLORS["data"])
    rm = draw_box(ax, (10.6, y_top), w + 0.3, h - 0.2, "Reward model $r_\\phi$\nBradley–Terry loss\n(notebook 03)",
                  COLORS["reward"])
    ref = draw_box(ax, (10.6, y_bot), w + 0.3, h - 0.2,
                   "Reference $\\pi_{\\mathrm{ref}}$\nfrozen copy of the SFT policy", COLORS["frozen"], dashed=True)

    # Main line of the pipeline: each model starts from the previous one's weights.
    draw_arrow(ax, (lm[1], y_mid), (sft[0], y_mid), "init", label_offset=(0, 0.3))
    draw_arrow(ax, (sft[1], y_mid), (ppo[0], y_mid), "init $\\pi_\\theta$", label_offset=(0, 0.3))
    draw_arrow(ax, (ppo[1], y_mid), (ev[0], y_mid), "aligned\npolicy", label_offset=(0, 0.45))

    # Side inputs of PPO: the reward model scores samples, the frozen reference holds the leash.
    draw_arrow(ax, (pairs[1], y_top), (rm[0], y_top), "train", label_offset=(0, 0.3))
    draw_arrow(ax, (10.6, rm[2]), (10.6, ppo[3]), "score $r_\\phi(x, y)$", label_offset=(1.05, 0.0))
    draw_arrow(ax, (10.6, ref[3]), (10.6, ppo[2]), "KL leash\n$\\beta\\,\\mathrm{KL}(\\pi_\\theta\\,\\|\\,\\pi_{\\mathrm{ref}})$",
               label_offset=(1.35, 0.0))
    draw_arrow(ax, (sft[0] + 0.8, sft[2]), (ref[0], y_bot), "copy + freeze", dashed=True, rad=0.25,
               label_offset=(-0.6, -0.35))

    ax.text(0.2, 7.35, "The RLHF pipeline of this course", fontsize=14, weight="bold", va="top")
    ax.text(0.2, 0.15, "solid arrows: weights or signals used in training     dashed: a frozen copy",
            fontsize=9, color="#555555")
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 2: one PPO step
# ---------------------------------------------------------------------------------------------
def draw_ppo_loop() -> plt.Figure:
    fig, ax = blank_canvas(15, 7.0, (0, 17), (0, 7.9))
    w, h = 4.3, 1.75
    xs = (2.6, 8.5, 14.4)
    y_top, y_bot = 5.9, 2.7

    steps = [
        ((xs[0], y_top), "1. Prompts $x$\nfirst 2–8 tokens of\nIMDb reviews", COLORS["data"]),
        ((xs[1], y_top), "2. Rollout\npolicy $\\pi_\\theta$ samples\nresponse $y \\sim \\pi_\\theta(\\cdot\\,|\\,x)$",
         COLORS["model"]),
        ((xs[2], y_top), "3. Score\nreward model reads $x + y$:\n$s = r_\\phi(x, y)$ (last token)",
         COLORS["reward"]),
        ((xs[2], y_bot), "4. Per-token reward\n$r_t = -\\beta\\,(\\log\\pi_\\theta - \\log\\pi_{\\mathrm{ref}})$\n"
                          "$+\\ s$ at the last token", COLORS["algo"]),
        ((xs[1], y_bot), "5. Advantages (GAE)\nvalue head $V(x, y_{<t})$\n$\\hat A_t$, returns; $\\gamma=1, \\lambda=0.95$",
         COLORS["algo"]),
        ((xs[0], y_bot), "6. Update $\\theta$\nclipped policy loss\n+ clipped value loss", COLORS["algo"]),
    ]
    boxes = [draw_box(ax, c, w, h, t, col, fontsize=11) for c, t, col in steps]

    # Top row left -> right, down on the right, bottom row right -> left.
    draw_arrow(ax, (boxes[0][1], y_top), (boxes[1][0], y_top))
    draw_arrow(ax, (boxes[1][1], y_top), (boxes[2][0], y_top), "$(x, y)$", label_offset=(0, 0.3))
    draw_arrow(ax, (xs[2], boxes[2][2]), (xs[2], boxes[3][3]), "$s$", label_offset=(0.3, 0))
    draw_arrow(ax, (boxes[3][0], y_bot), (boxes[4][1], y_bot), "$r_t$", label_offset=(0, 0.3))
    draw_arrow(ax, (boxes[4][0], y_bot), (boxes[5][1], y_bot), "$\\hat A_t$", label_offset=(0, 0.3))
    # Loop back: the updated policy samples the next batch.
    draw_arrow(ax, (xs[0] + 0.9, boxes[5][3]), (boxes[1][0] + 0.3, boxes[1][2]),
               "updated $\\pi_\\theta$:\nnext batch", rad=-0.25, label_offset=(0.1, -0.15))

    # Frozen reference feeding the KL term of step 4.
    ref = draw_box(ax, (xs[2], 0.6), w - 0.4, 0.8, "frozen $\\pi_{\\mathrm{ref}}$ (SFT copy)",
                   COLORS["frozen"], fontsize=10.5, dashed=True)
    draw_arrow(ax, (xs[2], ref[3]), (xs[2], boxes[3][2]), "$\\log\\pi_{\\mathrm{ref}}(y_t)$", label_offset=(0.95, 0))

    # Note on step 6 under its box.
    ax.text(xs[0], 0.85,
            "$\\rho_t = \\pi_\\theta(y_t)\\,/\\,\\pi_{\\theta_{\\mathrm{old}}}(y_t)$,  "
            "$\\mathrm{clip}(\\rho_t, 1-\\epsilon, 1+\\epsilon)$\na few epochs over mini-batches of this rollout",
            ha="center", va="center", fontsize=9.5, color="#444444", linespacing=1.4)

    ax.text(0.2, 7.8, "One PPO step for RLHF", fontsize=14, weight="bold", va="top")
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 3 (the KL leash on a toy problem) is drawn by rlhf_helpers.intro.draw_kl_leash, imported above.
# ---------------------------------------------------------------------------------------------
def main() -> list[Path]:
    plt.rcParams.update({"font.size": 11})
    written = [
        save(draw_rlhf_workflow(), "rlhf_workflow.png"),
        save(draw_ppo_loop(), "ppo_loop.png"),
        save(draw_kl_leash(), "kl_leash.png"),
    ]
    for path in written:
        print(path.relative_to(REPO_ROOT))
    return written


if __name__ == "__main__":
    main()
