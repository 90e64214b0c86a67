"""Plots of the results: what each method gained in instruction following against what it cost in knowledge."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from excitor_bench.aggregate import BASE, summarize  # noqa: E402

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
