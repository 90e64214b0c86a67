"""Plots of the results, each drawn from one CSV file that the workflow writes.

- `plot_knowledge_vs_instructions` (runs.csv): knowledge retained against instruction exact match.
- `plot_visual_scores` (table.csv): CIDEr and ScienceQA accuracy per method and setting.
- `plot_score_vs_parameters` (table.csv): each headline metric against trainable parameters, with the
  Pareto front (higher score with fewer parameters).
- `plot_ablation_axes` (table.csv): each metric against every ablation axis that varies for a method.
- `plot_efficiency` (efficiency.csv): training step time relative to LoRA and generation speed relative
  to the base model.

Plots of table.csv draw error bars from `<metric>_ci_low` and `<metric>_ci_high` where the table has
them, and plot the mean alone otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from excitor_bench.aggregate import BASE, MOST_COMMON_CAPTION, RANDOM_CHOICE, REFERENCE_RUNS, summarize  # noqa: E402
from excitor_bench.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

# The headline metrics of the score plots: column, axis label and the factor that turns the stored
# value into the plotted one. Fractions become percent, and CIDEr is stored x100 already.
HEADLINE_METRICS = {
    "knowledge_retained": ("knowledge retained: MMLU change from the base model (points)", 100.0),
    "instruction_exact_match": ("instruction exact match on held-out instructions (%)", 100.0),
    "caption_cider": ("CIDEr on the test images (x100)", 1.0),
    "scienceqa_accuracy": ("ScienceQA accuracy on the test problems (%)", 100.0),
}
# Axis labels for small panels.
SHORT_LABELS = {
    "knowledge_retained": "knowledge retained (points)",
    "instruction_exact_match": "instruction exact match (%)",
    "caption_cider": "CIDEr (x100)",
    "scienceqa_accuracy": "ScienceQA accuracy (%)",
}
# Scores of the visual runs are set against the visual run's trainable parameters (projection included).
VISUAL_METRICS = ("caption_cider", "scienceqa_accuracy")
LABEL_FONT_SIZE = 6.0
# Means are rounded to this many decimals before plotting, so that float noise such as 1e-17 in a
# difference of equal accuracies does not turn the axis into a scientific-notation scale.
PLOT_DECIMALS = 9


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Return the indices of the (parameters, score) points that no other point dominates, by parameters.

    A point is dominated when another has at most its parameters and at least its score, and is
    strictly better in one of the two. Identical points are all kept. The indices are sorted by
    parameters, then by score from high to low.
    """
    front = []
    for index, (parameters, score) in enumerate(points):
        dominated = any(
            other_parameters <= parameters and other_score >= score
            and (other_parameters < parameters or other_score > score)
            for other_parameters, other_score in points
        )
        if not dominated:
            front.append(index)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def boxes_overlap(first: tuple[float, float, float, float], second: tuple[float, float, float, float]) -> bool:
    """Return whether two (left, bottom, right, top) boxes share an area."""
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def side_offset(direction: int, extent: float, gap: float) -> float:
    """Return the offset of a box's low edge that puts it `gap` past the anchor on one side, or centred on 0."""
    if direction > 0:
        return gap
    if direction < 0:
        return -extent - gap
    return -extent / 2


def spread_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                  marker_size: float = 4.0) -> list[tuple[float, float]]:
    """Choose an offset for each label so that no two labels, and no label and marker, overlap.

    `anchors` are the points in display units (points, 1/72 inch) and `sizes` the (width, height) of
    each label in the same units. Each label takes the first free spot on rings of growing radius
    around its anchor. The returned offsets are those of the label's lower-left corner from its anchor.
    When every spot within 8 rings is taken, the last spot tried is used and labels may overlap.
    """
    half = marker_size / 2
    occupied = [(x - half, y - half, x + half, y + half) for x, y in anchors]
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    offsets = []
    for (x, y), (width, height) in zip(anchors, sizes):
        chosen = (half, half)
        found = False
        for ring in range(8):
            gap = half + ring * height
            for dx, dy in directions:
                chosen = (side_offset(dx, width, gap), side_offset(dy, height, gap))
                box = (x + chosen[0], y + chosen[1], x + chosen[0] + width, y + chosen[1] + height)
                if not any(boxes_overlap(box, other) for other in occupied):
                    found = True
                    break
            if found:
                break
        occupied.append((x + chosen[0], y + chosen[1], x + chosen[0] + width, y + chosen[1] + height))
        offsets.append(chosen)
    return offsets


def annotate_without_overlap(axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                             font_size: float = LABEL_FONT_SIZE) -> None:
    """Write `texts` beside the data points (xs, ys) of `axes`, spread so that they do not overlap.

    Call it after the axes' limits, scales and the figure layout are final: positions are computed
    in display units at that moment.
    """
    figure = axes.figure
    to_points = 72.0 / figure.dpi
    anchors = [tuple(to_points * value for value in axes.transData.transform((x, y))) for x, y in zip(xs, ys)]
    # An estimate of a label's extent: 0.6 em per character and 1.2 em per line.
    sizes = [(0.6 * font_size * len(text) + 2, 1.2 * font_size) for text in texts]
    for (x, y), text, (dx, dy) in zip(zip(xs, ys), texts, spread_labels(anchors, sizes)):
        axes.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=font_size,
                      ha="left", va="bottom", arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.4,
                                                          "shrinkA": 0, "shrinkB": 2})


# The methods in the order of baselines.METHODS, which is not imported here because it loads torch.
COLOR_ORDER = ("excitor", "lora", "prefix", "llama_adapter", "full")


def method_color(method: str):
    """Return a method's colour, the same in every plot: tab10 by the method's place in COLOR_ORDER.

    The base model, the caption floor and any other row get grey.
    """
    if method in COLOR_ORDER:
        return plt.get_cmap("tab10")(COLOR_ORDER.index(method))
    return "dimgrey"


def read_csv(path: Path, description: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path} not found; run the workflow to produce the {description}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise UserError(f"{path} is not a valid CSV file ({error}); delete it and rerun the workflow") from None


def save_figure(figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # No date in the file's metadata, so the same table gives the same bytes.
    figure.savefig(out, metadata={"Software": None} if out.suffix.lower() == ".png" else None)
    plt.close(figure)
    log.info("wrote %s", out)


def interval_errors(rows: pd.DataFrame, metric: str, scale: float) -> list[list[float]] | None:
    """Return matplotlib's [below, above] error lengths from the CI columns, or None if the table has none."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in rows or high not in rows:
        return None
    means = rows[f"{metric}_mean"].astype(float)
    below = (means - rows[low].astype(float)).clip(lower=0).fillna(0.0)
    above = (rows[high].astype(float) - means).clip(lower=0).fillna(0.0)
    return [list((scale * below).round(PLOT_DECIMALS)), list((scale * above).round(PLOT_DECIMALS))]


def setting_numbers(table: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Number the tuned (method, setting) rows of a per-setting table from 1, in table order."""
    tuned = table[~table["method"].isin(REFERENCE_RUNS)]
    return {(method, setting): index + 1 for index, (method, setting) in enumerate(zip(tuned["method"],
                                                                                       tuned["setting"]))}


def add_key(figure, numbers: dict[tuple[str, str], int], key_width: float | None = None) -> float:
    """Write the list "number  method setting" in a strip at the figure's right edge.

    The strip is `key_width` inches wide, by default wide enough for the longest line: a 7-point
    monospace character is about 0.06 inches wide. The figure widens by the strip, so the panels keep
    their size. Returns the figure fraction where the strip starts, for tight_layout's rect.
    """
    lines = [f"{number:>2}  {method} {setting}" for (method, setting), number in numbers.items()]
    key = "\n".join(lines)
    if key_width is None:
        key_width = max(2.3, 0.06 * max((len(line) for line in lines), default=0) + 0.2)
    figure.set_figwidth(figure.get_figwidth() + max(0.0, key_width - 2.3))
    key_left = 1 - key_width / figure.get_figwidth()
    figure.text(key_left + 0.01, 0.5, key, fontsize=7, family="monospace", ha="left", va="center")
    return key_left


def plot_knowledge_vs_instructions(runs_csv: Path, out: Path) -> None:
    """Draw one point per method and setting: instruction exact match (x) against knowledge retained (y).

    Points are numbered and the numbers are listed beside the plot, as in `plot_score_vs_parameters`.
    """
    table = summarize(read_csv(runs_csv, "per-run table"))
    if "instruction_exact_match_mean" not in table or "knowledge_retained_mean" not in table:
        raise UserError(f"{runs_csv} has no instruction_exact_match or knowledge_retained column; "
                        "aggregate the MMLU and instruction evaluations first")
    # Visual-only settings have neither metric, so they get no point and no number in the key.
    plotted = table[table["instruction_exact_match_mean"].notna() & table["knowledge_retained_mean"].notna()]
    numbers = setting_numbers(plotted)
    figure, axes = plt.subplots(figsize=(9.3, 5), dpi=150)
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--", label="base model's MMLU")

    labelled: list[tuple[float, float, str]] = []
    for method, group in table.groupby("method", sort=False):
        group = group[group["instruction_exact_match_mean"].notna() & group["knowledge_retained_mean"].notna()]
        if group.empty:
            continue
        x = (100 * group["instruction_exact_match_mean"].astype(float)).round(PLOT_DECIMALS)
        y = (100 * group["knowledge_retained_mean"].astype(float)).round(PLOT_DECIMALS)
        if method == BASE:
            axes.scatter(x, y, marker="*", s=180, color="black", label="base (untuned)", zorder=3)
            continue
        # A setting run with one seed has no spread, so it gets no error bar.
        axes.errorbar(x, y, xerr=100 * group["instruction_exact_match_std"].astype(float).fillna(0.0),
                      yerr=100 * group["knowledge_retained_std"].astype(float).fillna(0.0),
                      fmt="o", color=method_color(method), label=method, capsize=2, alpha=0.85)
        labelled.extend((x_value, y_value, str(numbers[(method, setting)]))
                        for x_value, y_value, setting in zip(x, y, group["setting"]))

    axes.set_xlabel("instruction following: exact match on held-out instructions (%)")
    axes.set_ylabel("knowledge retained: MMLU change from the base model (points)")
    axes.set_title("What tuning gained against what it cost (mean and standard deviation over seeds)")
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
    axes.margins(0.15)
    key_left = add_key(figure, numbers)
    figure.tight_layout(rect=(0, 0, key_left, 1))
    annotate_without_overlap(axes, [x for x, _, _ in labelled], [y for _, y, _ in labelled],
                             [text for _, _, text in labelled], font_size=7)
    save_figure(figure, out)


def plot_visual_scores(table_csv: Path, out: Path) -> None:
    """Draw CIDEr and ScienceQA accuracy per method and setting, as bars with their confidence intervals.

    The caption panel marks the floor of the most common training caption, and the ScienceQA panel that
    of a random choice. The first bar of each panel is
    the untuned base model, which is given the text alone. Without interval columns the bars get the
    standard deviation over seeds.
    """
    table = read_csv(table_csv, "per-setting table")
    if "caption_cider_mean" not in table or "scienceqa_accuracy_mean" not in table:
        raise UserError(f"{table_csv} has no caption or ScienceQA columns; run the workflow with visual.enabled")
    floor = table[table["method"] == MOST_COMMON_CAPTION]
    chance = table[table["method"] == RANDOM_CHOICE]
    rows = table[~table["method"].isin([MOST_COMMON_CAPTION, RANDOM_CHOICE]) & table["caption_cider_mean"].notna()]
    labels = [method if setting == method else f"{method}\n{setting}"
              for method, setting in zip(rows["method"], rows["setting"])]
    bar_colors = [method_color(method) for method in rows["method"]]
    positions = range(len(rows))

    figure, (captions, scienceqa) = plt.subplots(1, 2, figsize=(max(9.0, 1.2 * len(rows) + 3), 5.5), dpi=150)
    for axes, column, scale, label in (
        (captions, "caption_cider", 1.0, "CIDEr (x100)"),
        (scienceqa, "scienceqa_accuracy", 100.0, "accuracy (%)"),
    ):
        means = scale * rows[f"{column}_mean"].astype(float)
        errors = interval_errors(rows, column, scale)
        if errors is None and f"{column}_std" in rows:
            errors = scale * rows[f"{column}_std"].astype(float).fillna(0.0)
        axes.bar(positions, means, yerr=errors, color=bar_colors, capsize=3, alpha=0.9)
        axes.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=6)
        axes.set_ylabel(label)
        axes.grid(axis="y", alpha=0.3)
    if len(floor):
        captions.axhline(float(floor["caption_cider_mean"].iloc[0]), color="grey", linestyle="--", linewidth=1,
                         label="most common training caption")
        captions.legend(fontsize=7)
    if len(chance):
        scienceqa.axhline(100 * float(chance["scienceqa_accuracy_mean"].iloc[0]), color="grey", linestyle="--",
                          linewidth=1, label="random choice")
        scienceqa.legend(fontsize=7)
    captions.set_title("Captions of the test images (pycocoevalcap)", fontsize=10)
    scienceqa.set_title("ScienceQA test problems", fontsize=10)
    figure.suptitle("Visual instruction tuning with a frozen CLIP: mean and 95 % interval")
    figure.tight_layout()
    save_figure(figure, out)


def parameter_column(table: pd.DataFrame, metric: str) -> pd.Series:
    """Return the trainable parameters a metric is set against: the visual run's for visual metrics."""
    parameters = table["trainable_parameters_mean"].astype(float)
    if metric in VISUAL_METRICS and "visual_trainable_parameters_mean" in table:
        parameters = table["visual_trainable_parameters_mean"].astype(float).fillna(parameters)
    return parameters


def plot_score_vs_parameters(table_csv: Path, out: Path) -> None:
    """Draw each headline metric against trainable parameters (log scale), one panel per metric.

    Points are numbered and the numbers are listed beside the panels. The step line is the Pareto
    front: the best score reached with at most that many trainable parameters. Dashed lines mark the
    base model and, for captions, the most common training caption.
    """
    table = read_csv(table_csv, "per-setting table")
    if "trainable_parameters_mean" not in table:
        raise UserError(f"{table_csv} has no trainable_parameters_mean column; write it with excitor-bench aggregate")
    metrics = [m for m in HEADLINE_METRICS if f"{m}_mean" in table and table[f"{m}_mean"].notna().any()]
    if not metrics:
        raise UserError(f"{table_csv} has none of the metrics {list(HEADLINE_METRICS)}; aggregate evaluations first")
    tuned = table[~table["method"].isin(REFERENCE_RUNS)].reset_index(drop=True)
    numbers = setting_numbers(table)

    columns = min(2, len(metrics))
    panel_rows = math.ceil(len(metrics) / columns)
    figure, grid = plt.subplots(panel_rows, columns, figsize=(5.2 * columns + 2.4, 4.2 * panel_rows), dpi=150,
                                squeeze=False)
    labelled = []
    for axes, metric in zip(grid.flat, metrics):
        label, scale = HEADLINE_METRICS[metric]
        parameters = parameter_column(tuned, metric)
        present = tuned[tuned[f"{metric}_mean"].notna() & parameters.notna() & (parameters > 0)]
        x = parameters[present.index]
        y = (scale * present[f"{metric}_mean"].astype(float)).round(PLOT_DECIMALS)
        errors = interval_errors(present, metric, scale)
        for method, group in present.groupby("method", sort=False):
            positions = [present.index.get_loc(i) for i in group.index]
            method_errors = None if errors is None else [[errors[0][p] for p in positions],
                                                         [errors[1][p] for p in positions]]
            axes.errorbar(x[group.index], y[group.index], yerr=method_errors, fmt="o", color=method_color(method),
                          label=method, capsize=2, alpha=0.9, zorder=3)
        front = pareto_front(list(zip(x, y)))
        if front:
            axes.step([x.iloc[i] for i in front], [y.iloc[i] for i in front], where="post", color="black",
                      linewidth=1, alpha=0.6, label="Pareto front", zorder=2)
        reference_names = {BASE: "base (untuned)", MOST_COMMON_CAPTION: "most common training caption",
                           RANDOM_CHOICE: "random choice"}
        for reference, style in ((BASE, "--"), (MOST_COMMON_CAPTION, ":"), (RANDOM_CHOICE, ":")):
            row = table[table["method"] == reference]
            if len(row) and f"{metric}_mean" in row and pd.notna(row[f"{metric}_mean"].iloc[0]):
                name = reference_names[reference]
                axes.axhline(round(scale * float(row[f"{metric}_mean"].iloc[0]), PLOT_DECIMALS), color="grey",
                             linestyle=style,
                             linewidth=0.8, label=name)
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd a range under one decade
        axes.set_xlabel("trainable parameters (log scale)")
        axes.set_ylabel(label, fontsize=8)
        axes.grid(alpha=0.3)
        axes.margins(0.12)
        axes.legend(fontsize=6, loc="best")
        texts = [str(numbers[(m, s)]) for m, s in zip(present["method"], present["setting"])]
        labelled.append((axes, list(x), list(y), texts))
    for axes in list(grid.flat)[len(metrics):]:
        axes.set_visible(False)

    key_left = add_key(figure, numbers)
    figure.suptitle("Score against trainable parameters (mean over seeds; step line: Pareto front)")
    figure.tight_layout(rect=(0, 0, key_left, 1))
    for axes, xs, ys, texts in labelled:
        annotate_without_overlap(axes, xs, ys, texts, font_size=7)
    save_figure(figure, out)


def axis_value_text(value) -> str:
    """Write an ablation axis value as the config gives it: "auto" for an empty cell, 4 rather than 4.0."""
    if pd.isna(value):
        return "auto"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def varying_axes(rows: pd.DataFrame) -> list[str]:
    """Return the hp_ columns whose value differs between the rows (an empty cell counts as a value)."""
    return [c for c in rows.columns if c.startswith("hp_") and rows[c].map(axis_value_text).nunique() > 1]


def axis_positions(values: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Return the x position of each axis value, and the category names when the values are not all numbers."""
    text = values.map(axis_value_text)
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        return numeric, None
    categories = sorted(set(text))
    return text.map(categories.index), categories


def ablation_lines(rows: pd.DataFrame, axis: str, metric: str) -> list[tuple[str, pd.DataFrame]]:
    """Group one method's settings into lines along `axis`: one per combination of its other varying axes.

    Returns (name, rows sorted along the axis) for every line with a metric value at two axis values
    or more. The name lists the other axes' values, or is empty when no other axis varies.
    """
    positions, _ = axis_positions(rows[axis])
    measured = rows[rows[f"{metric}_mean"].notna()]
    # Only the settings that measured the metric count: the visual runs' own hyper-parameters must not
    # split the text settings' lines, nor the other way round.
    others = [column for column in varying_axes(measured) if column != axis]
    keys = measured[others].map(axis_value_text).apply(tuple, axis=1) if others else pd.Series(
        [()] * len(measured), index=measured.index, dtype=object)
    lines = []
    for key in dict.fromkeys(keys):
        group = measured[keys == key]
        if positions[group.index].nunique() < 2:
            continue
        group = group.loc[positions[group.index].sort_values(kind="stable").index]
        name = ", ".join(f"{column[3:]}={value}" for column, value in zip(others, key))
        lines.append((name, group))
    return lines


@dataclass(frozen=True)
class AblationLine:
    """One line of an ablation panel: its legend label, its method and its settings along the axis."""

    label: str
    method: str
    rows: pd.DataFrame


def ablation_panels(tuned: pd.DataFrame, metrics: Sequence[str]) -> dict[tuple[str, str], list[AblationLine]]:
    """Collect the lines of every (metric, axis) panel: one per method that varies the axis.

    A method whose other axes vary too (a factorial grid) gets one line per combination of their
    values, labelled "method (axis=value, ...)". Panels without a line are left out, and axes come in
    the order the methods first vary them.
    """
    axis_names = list(dict.fromkeys(axis for _, group in tuned.groupby("method", sort=False)
                                    for axis in varying_axes(group)))
    panels: dict[tuple[str, str], list[AblationLine]] = {}
    for metric in metrics:
        for axis in axis_names:
            lines = []
            for method, group in tuned.groupby("method", sort=False):
                if axis not in varying_axes(group):
                    continue
                for name, rows in ablation_lines(group, axis, metric):
                    lines.append(AblationLine(f"{method} ({name})" if name else method, method, rows))
            if lines:
                panels[(metric, axis)] = lines
    return panels


def plot_ablation_axes(table_csv: Path, out: Path) -> None:
    """Draw each headline metric against every ablation axis, one panel per axis and one line per method.

    A method's settings that differ only in the plotted axis are joined by a line, with its interval.
    When a method's other axes vary too, as in a factorial grid, each combination of their values gets
    its own line, named in the legend. Metrics and axes without a line are left out, and a table
    without any line gives a figure that states this.
    """
    table = read_csv(table_csv, "per-setting table")
    tuned = table[~table["method"].isin(REFERENCE_RUNS)]
    metrics = [m for m in HEADLINE_METRICS if f"{m}_mean" in tuned and tuned[f"{m}_mean"].notna().any()]
    panels = ablation_panels(tuned, metrics)
    metrics = [m for m in metrics if any(metric == m for metric, _ in panels)]
    axes_shown = list(dict.fromkeys(axis for _, axis in panels))
    if not panels:
        figure, axes = plt.subplots(figsize=(6, 2), dpi=150)
        axes.axis("off")
        axes.text(0.5, 0.5, "No method has a metric at two values of an ablation axis.", ha="center", va="center")
        save_figure(figure, out)
        return

    figure, grid = plt.subplots(len(metrics), len(axes_shown),
                                figsize=(3.6 * len(axes_shown) + 0.6, 2.8 * len(metrics)), dpi=150, squeeze=False)
    markers = "osD^v"
    for column, axis in enumerate(axes_shown):
        varying = [m for m, group in tuned.groupby("method", sort=False) if axis in varying_axes(group)]
        positions, categories = axis_positions(tuned.loc[tuned["method"].isin(varying), axis])
        for row_index, metric in enumerate(metrics):
            axes = grid[row_index, column]
            scale = HEADLINE_METRICS[metric][1]
            panel_lines = panels.get((metric, axis), [])
            if row_index == 0:
                axes.set_title(axis[3:], fontsize=9)
            if row_index == len(metrics) - 1:
                axes.set_xlabel(axis[3:], fontsize=8)
            if column == 0:
                axes.set_ylabel(SHORT_LABELS[metric], fontsize=8)
            if not panel_lines:
                axes.text(0.5, 0.5, "not measured\nat two values", ha="center", va="center", fontsize=7,
                          transform=axes.transAxes, color="grey")
                axes.set_xticks([])
                axes.set_yticks([])
                continue
            line_counts: dict[str, int] = {}
            for line in panel_lines:
                # A method's second and later lines (factorial grids) keep its colour with another marker.
                index = line_counts.get(line.method, 0)
                line_counts[line.method] = index + 1
                axes.errorbar(positions[line.rows.index],
                              (scale * line.rows[f"{metric}_mean"].astype(float)).round(PLOT_DECIMALS),
                              yerr=interval_errors(line.rows, metric, scale), marker=markers[index % len(markers)],
                              linestyle="-" if index == 0 else "--", capsize=2, color=method_color(line.method),
                              label=line.label)
            axes.legend(fontsize=6, loc="best")
            if categories is not None:
                axes.set_xticks(range(len(categories)), categories, fontsize=7)
            else:
                values = sorted(set(positions))
                if values[0] > 0 and (axis == "hp_learning_rate" or values[-1] / values[0] >= 20):
                    axes.set_xscale("log")
                axes.set_xticks(values, [axis_value_text(v) for v in values])
                axes.xaxis.set_minor_formatter(NullFormatter())
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3)
    figure.suptitle("Ablation: each metric against one hyper-parameter, one line per method "
                    "(mean over seeds, 95 % interval)")
    figure.tight_layout()
    save_figure(figure, out)


def plot_efficiency(efficiency_csv: Path, out: Path) -> None:
    """Draw bar panels from efficiency.csv: training step time and memory over LoRA's, generation speed
    over the base model's.

    A dashed line marks 1.0 in every panel. Below it a method trains faster or in less memory than
    LoRA, or generates slower than the base model. The memory panel is left out for a CSV without
    train_memory_ratio_to_lora figures.
    """
    table = read_csv(efficiency_csv, "efficiency table")
    missing = [c for c in ("method", "train_step_ratio_to_lora", "generation_ratio_to_base") if c not in table]
    if missing:
        raise UserError(f"{efficiency_csv} has no {missing[0]} column; write it with excitor-bench benchmark --csv")

    panel_specs = [
        ("train_step_ratio_to_lora", "training step time / LoRA's", "ratio (median over rounds)"),
        ("generation_ratio_to_base", "generation tokens/s / base model's", "ratio (median over rounds)"),
    ]
    if "train_memory_ratio_to_lora" in table and table["train_memory_ratio_to_lora"].notna().any():
        panel_specs.insert(1, ("train_memory_ratio_to_lora", "training memory / LoRA's", "ratio"))
    figure, panels = plt.subplots(1, len(panel_specs), figsize=(4.5 * len(panel_specs), 4), dpi=150)
    for axes, (column, title, label) in zip(panels, panel_specs):
        rows = table[table[column].notna()]
        positions = list(range(len(rows)))
        values = rows[column].astype(float)
        axes.bar(positions, values, color=[method_color(m) for m in rows["method"]], alpha=0.9)
        for x_position, value in zip(positions, values):
            axes.annotate(f"{value:.2f}", (x_position, value), xytext=(0, 2), textcoords="offset points",
                          ha="center", va="bottom", fontsize=7)
        axes.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        axes.set_xticks(positions, list(rows["method"]), rotation=30, ha="right", fontsize=8)
        axes.set_title(title, fontsize=9)
        axes.set_ylabel(label, fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle("Training speed, training memory and generation speed, measured side by side in one process")
    figure.tight_layout()
    save_figure(figure, out)
