"""Plots of the results: instruction following against knowledge retained, and the visual scores per method."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from excitor_bench.aggregate import BASE, MOST_COMMON_CAPTION, summarize  # noqa: E402
from excitor_bench.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)


def plot_knowledge_vs_instructions(runs_csv: Path, out: Path) -> None:
    """Draw one point per method and setting: instruction exact match (x) against knowledge retained (y)."""
    table = summarize(pd.read_csv(runs_csv))
    figure, axes = plt.subplots(figsize=(7, 5), dpi=150)
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--", label="base model's MMLU")

    colors = plt.get_cmap("tab10")
    for index, (method, group) in enumerate(table.groupby("method", sort=False)):
        x = 100 * group["instruction_exact_match_mean"].astype(float)
        y = 100 * group["knowledge_retained_mean"].astype(float)
        if method == BASE:
            axes.scatter(x, y, marker="*", s=180, color="black", label="base (untuned)", zorder=3)
            continue
        # A setting run with one seed has no spread, so it gets no error bar.
        axes.errorbar(x, y, xerr=100 * group["instruction_exact_match_std"].astype(float).fillna(0.0),
                      yerr=100 * group["knowledge_retained_std"].astype(float).fillna(0.0),
                      fmt="o", color=colors(index % 10), label=method, capsize=2, alpha=0.85)
        for setting, x_value, y_value in zip(group["setting"], x, y):
            axes.annotate(setting, (x_value, y_value), fontsize=6, xytext=(3, 3), textcoords="offset points")

    axes.set_xlabel("instruction following: exact match on held-out instructions (%)")
    axes.set_ylabel("knowledge retained: MMLU change from the base model (points)")
    axes.set_title("What tuning gained against what it cost (mean over seeds)")
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    log.info("wrote %s", out)


def plot_visual_scores(runs_csv: Path, out: Path) -> None:
    """Draw CIDEr and ScienceQA accuracy per method and setting, as bars with the spread over seeds.

    The caption panel marks the floor of the most common training caption. The first bar of each panel is
    the untuned base model, which is given the text alone.
    """
    table = summarize(pd.read_csv(runs_csv))
    if "caption_cider_mean" not in table or "scienceqa_accuracy_mean" not in table:
        raise UserError(f"{runs_csv} has no caption or ScienceQA columns; run the workflow with visual.enabled")
    floor = table[table["method"] == MOST_COMMON_CAPTION]
    rows = table[(table["method"] != MOST_COMMON_CAPTION) & table["caption_cider_mean"].notna()]
    labels = [method if setting == method else f"{method}\n{setting}"
              for method, setting in zip(rows["method"], rows["setting"])]
    colors = plt.get_cmap("tab10")
    method_index = {method: index for index, method in enumerate(dict.fromkeys(rows["method"]))}
    bar_colors = [colors(method_index[method] % 10) for method in rows["method"]]
    positions = range(len(rows))

    figure, (captions, scienceqa) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(rows) + 2), 4.5), dpi=150)
    for axes, column, scale, label in (
        (captions, "caption_cider", 1.0, "CIDEr on the test images (x100)"),
        (scienceqa, "scienceqa_accuracy", 100.0, "ScienceQA accuracy on the test problems (%)"),
    ):
        means = scale * rows[f"{column}_mean"].astype(float)
        spread = scale * rows[f"{column}_std"].astype(float).fillna(0.0)
        axes.bar(positions, means, yerr=spread, color=bar_colors, capsize=3, alpha=0.9)
        axes.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=7)
        axes.set_ylabel(label)
        axes.grid(axis="y", alpha=0.3)
    if len(floor):
        captions.axhline(float(floor["caption_cider_mean"].iloc[0]), color="grey", linestyle="--", linewidth=1,
                         label="most common training caption")
        captions.legend(fontsize=7)
    captions.set_title("Captions (pycocoevalcap)")
    scienceqa.set_title("ScienceQA")
    figure.suptitle("Visual instruction tuning with a frozen CLIP (mean over seeds)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    log.info("wrote %s", out)
