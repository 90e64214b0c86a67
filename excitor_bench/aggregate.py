"""Collect evaluation results into the result tables of the benchmark.

Outputs of `aggregate` (CSV files use one float format and a fixed row order, so the same
evaluation files give byte-identical files):
- runs.csv: one row per run (method, setting, seed), with its hyper-parameters, metrics and
  the training figures that do not depend on the machine's speed.
- table.csv: per method and setting, the mean and standard deviation over seeds of every
  column of runs.csv. Item-level metrics also get a bootstrap interval over seeds and items.
- comparisons.csv (optional): Excitor's default setting against every other method's default
  setting, paired on the same items.
- timings.csv (optional): wall-clock and memory figures, which change between identical reruns.
- table.md and table.tex (optional): the headline metrics for a paper, see excitor_bench.tables.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from excitor_bench.errors import UserError
from excitor_bench.stats import PERMUTATION_TEST, bootstrap_interval, paired_difference
from excitor_bench.tables import write_latex_table, write_markdown_table

log = logging.getLogger(__name__)

BASE = "base"
MOST_COMMON_CAPTION = "most_common_caption"
"""The row of the caption floor: the most common training caption, given for every test image."""
RANDOM_CHOICE = "random_choice"
"""The row of the ScienceQA floor: a uniform random choice, scored as its expected accuracy."""
REFERENCE_RUNS = (BASE, MOST_COMMON_CAPTION, RANDOM_CHOICE)
EXCITOR = "excitor"
MMLU_CATEGORIES = ("stem", "humanities", "social_sciences", "other")
TRAINING_FIGURES = (
    "trainable_parameters",
    "total_parameters",
    "train_seconds",
    "peak_memory_mb",
    "tokens_per_second",
    "adapter_bytes",
    "final_loss",
)
# Training figures that change between identical reruns. They go to timings.csv, with the
# same names and their visual_ twins, and never into runs.csv or table.csv.
TIMING_FIGURES = ("train_seconds", "tokens_per_second", "peak_memory_mb")
TIMING_COLUMNS = TIMING_FIGURES + tuple(f"visual_{name}" for name in TIMING_FIGURES)
# The columns a reader looks at first, placed right after a row's identity in table.csv.
HEADLINE_METRICS = ("knowledge_retained", "instruction_exact_match", "mmlu_accuracy", "caption_cider",
                    "scienceqa_accuracy", "trainable_parameters")
# Columns that identify a row; everything numeric after them is a metric or a figure.
KEY_COLUMNS = ("method", "setting", "seed")
# Metrics that are the mean of item-level scores in the evaluation's "per_item" results.
ITEM_METRICS = ("mmlu_accuracy", "instruction_exact_match", "caption_cider", "scienceqa_accuracy")
VISUAL_METRICS = ("caption_cider", "scienceqa_accuracy")
"""Metrics of the visual runs, which are compared between the methods' visual default settings."""
TASKS = ("text", "visual")
# Differences from the base row, with the item-level metric each one is computed from.
PAIRED_WITH_BASE = {"knowledge_retained": "mmlu_accuracy", "instruction_gain": "instruction_exact_match"}
COMPARISON_COLUMNS = (
    "metric", "excitor_setting", "baseline", "baseline_setting", "excitor_mean", "baseline_mean",
    "difference", "ci_low", "ci_high", "p_value", "p_value_sign_flip", "n_items", "n_seeds_excitor",
    "n_seeds_baseline", "test",
)
# Twelve significant digits keep parameter counts and byte sizes exact up to 10^12, which a float
# column (one with empty cells) would otherwise round.
FLOAT_FORMAT = "%.12g"
COMPARISON_TESTS = ("p_value: two-sided, from the two-way bootstrap over seeds and items; "
                    f"p_value_sign_flip: two-sided {PERMUTATION_TEST}")

RowKey = tuple[str, str, Any]
"""(method, setting, seed) of a runs.csv row. The seed is None for the reference rows."""
SettingKey = tuple[str, str]
"""(method, setting) of a table.csv row."""


@dataclass(frozen=True)
class IntervalSettings:
    """Settings of table.csv's intervals and of comparisons.csv's paired tests.

    The bootstrap and the permutations use fixed random streams derived from `seed`, so the
    same scores give the same intervals and p-values.
    """

    confidence: float = 0.95  # level of every interval, strictly between 0 and 1
    resamples: int = 2000  # bootstrap replicates per interval
    permutations: int = 10000  # sign flips per paired test
    seed: int = 0  # seed of the bootstrap and permutation streams

    def __post_init__(self) -> None:
        valid_number = isinstance(self.confidence, numbers.Real) and not isinstance(self.confidence, bool)
        if not valid_number or not math.isfinite(self.confidence) or not 0.0 < self.confidence < 1.0:
            raise UserError(f"confidence {self.confidence!r} is invalid; use a number strictly between 0 and 1, "
                            "such as 0.95")
        for name in ("resamples", "permutations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"{name} {value!r} is invalid; use an integer of at least 1, such as 2000")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise UserError(f"seed {self.seed!r} is invalid; use a non-negative integer, such as 0")


@dataclass(frozen=True)
class ItemScores:
    """One run's item-level scores on one metric, keyed by item, and the file they were read from."""

    scores: dict[Any, float]
    path: Path


@dataclass(frozen=True)
class ScoreMatrix:
    """The item-level scores of one metric for the runs of one setting, items in sorted key order."""

    scores: np.ndarray  # (n_seeds, n_items)
    items: tuple[Any, ...]
    paths: tuple[Path, ...]  # the evaluation file behind each seed row


@dataclass
class CollectedRuns:
    """The contents of the evaluation files: one row per run, its item-level scores and the default settings."""

    runs: pd.DataFrame
    item_scores: dict[RowKey, dict[str, ItemScores]]
    default_settings: dict[str, dict[str, str]]  # task ("text" or "visual") -> method -> its default setting


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found; rerun the workflow to produce it") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it and rerun the workflow") from None


def column_name(metric: str) -> str:
    """Turn a metric name such as "BLEU-4", "ROUGE-L" or "G1-6" into a column name part ("bleu_4")."""
    return metric.lower().replace("-", "_")


def metrics_of(evaluation: dict[str, Any]) -> dict[str, float]:
    """Flatten one evaluation result into named metric columns.

    Accuracies are fractions (0 to 1). Caption metrics keep the x100 scale that papers report
    (157.5 CIDEr). SPICE is empty when it was not scored, and the caption evaluation records why.
    """
    if evaluation["evaluation"] == "captions":
        return {f"caption_{column_name(name)}": float("nan") if value is None else value
                for name, value in evaluation["metrics"].items()}
    if evaluation["evaluation"] == "scienceqa":
        metrics = {"scienceqa_accuracy": evaluation["accuracy"] / 100}
        for group, value in evaluation["groups"].items():
            metrics[f"scienceqa_{column_name(group)}"] = float("nan") if value is None else value / 100
        return metrics
    if evaluation["evaluation"] == "mmlu":
        metrics = {"mmlu_accuracy": evaluation["accuracy"]}
        for category in MMLU_CATEGORIES:
            if category in evaluation.get("categories", {}):
                metrics[f"mmlu_{category}"] = evaluation["categories"][category]
        return metrics
    return {"instruction_exact_match": evaluation["exact_match"]}


# ----------------------------------------------------------------------------- item-level scores


def item_scores_of(evaluation: dict[str, Any], path: Path) -> dict[str, ItemScores]:
    """Read the item-level scores of one evaluation, keyed by the metric column they average to.

    Item keys: (subject, index) for MMLU, index for instructions, image id for captions and pid
    for ScienceQA, each part as a string. The score is "correct" (0 or 1), or the image's CIDEr
    (x100) for captions. Returns {} when the file has no "per_item" results. Raises UserError
    for malformed or repeated items.
    """
    if "per_item" not in evaluation:
        return {}
    kind = evaluation["evaluation"]
    per_item = evaluation["per_item"]

    if kind == "captions":
        if not isinstance(per_item, dict):
            raise UserError(f"{path}: per_item must map image ids to caption scores, got {type(per_item).__name__}; "
                            "rerun the caption evaluation")
        scores = {}
        for image_id, values in per_item.items():
            cider = values.get("CIDEr") if isinstance(values, dict) else None
            scores[str(image_id)] = _score(cider, path, f"image {image_id}", "CIDEr")
        return {"caption_cider": ItemScores(scores, Path(path))}

    key_fields = {"mmlu": ("subject", "index"), "scienceqa": ("pid",)}.get(kind, ("index",))
    metric = {"mmlu": "mmlu_accuracy", "scienceqa": "scienceqa_accuracy"}.get(kind, "instruction_exact_match")
    if not isinstance(per_item, list):
        raise UserError(f"{path}: per_item must be a list of item results, got {type(per_item).__name__}; "
                        f"rerun the {kind} evaluation")

    scores = {}
    for position, item in enumerate(per_item):
        missing = [field for field in key_fields if not isinstance(item, dict) or field not in item]
        if missing:
            raise UserError(f"{path}: per_item entry {position} has no {missing[0]!r} field; "
                            f"rerun the {kind} evaluation")
        parts = tuple(str(item[field]) for field in key_fields)
        key = parts if len(parts) > 1 else parts[0]
        if key in scores:
            raise UserError(f"{path}: per_item lists item {key!r} twice; rerun the {kind} evaluation")
        scores[key] = _score(item.get("correct"), path, f"item {key!r}", "correct")
    return {metric: ItemScores(scores, Path(path))}


def _score(value: Any, path: Path, item: str, field: str) -> float:
    """Return `value` as a finite float, or raise UserError naming the file, item and field."""
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise UserError(f"{path}: per_item {item} has {field} = {value!r}, not a finite number; "
                    "rerun the evaluation that wrote it")


def score_matrix(item_scores: list[ItemScores], metric: str, label: str) -> ScoreMatrix:
    """Stack the item scores of several runs into one matrix, items aligned by key.

    `label` names the runs in the error that is raised when their item sets differ.
    """
    reference = item_scores[0]
    items = tuple(sorted(reference.scores))
    for other in item_scores[1:]:
        _check_same_items(reference.scores, reference.path, other.scores, other.path, metric, label)
    scores = np.array([[run.scores[item] for item in items] for run in item_scores])  # (n_seeds, n_items)
    return ScoreMatrix(scores=scores, items=items, paths=tuple(run.path for run in item_scores))


def aligned_scores(reference: ScoreMatrix, other: ScoreMatrix, metric: str, label: str) -> np.ndarray:
    """Return `other`'s scores with columns in `reference`'s item order, or raise if the item sets differ."""
    # Both item tuples are sorted, so equal item sets give equal tuples.
    if other.items != reference.items:
        _check_same_items(reference.items, reference.paths[0], other.items, other.paths[0], metric, label)
    return other.scores  # (n_seeds, n_items)


def _check_same_items(reference_items: Iterable[Any], reference_path: Path, other_items: Iterable[Any],
                      other_path: Path, metric: str, label: str) -> None:
    """Raise UserError naming both files when two evaluations scored different items."""
    reference_set, other_set = set(reference_items), set(other_items)
    if reference_set == other_set:
        return
    only_other = sorted(other_set - reference_set)
    only_reference = sorted(reference_set - other_set)
    if only_other:
        example = f"item {only_other[0]!r} is only in {other_path}"
    else:
        example = f"item {only_reference[0]!r} is only in {reference_path}"
    raise UserError(
        f"{other_path} has {len(other_set)} {metric} items and {reference_path} has {len(reference_set)}, "
        f"and {example}; {label} must be evaluated on the same items, so rerun both evaluations on the same data"
    )


# ----------------------------------------------------------------------------- runs


def run_row(run: str, evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the row of one run: its identity, hyper-parameters, metrics and training figures."""
    row: dict[str, Any]
    if run in REFERENCE_RUNS:
        row = {"method": run, "setting": run, "seed": pd.NA}
    else:
        run_dir = Path(run)
        spec = read_json(run_dir / "spec.json")
        figures = read_json(run_dir / "train.json")
        row = {"method": spec["method"], "setting": spec["setting"], "seed": spec["seed"]}
        row.update({f"hp_{name}": json.dumps(value) if isinstance(value, (list, dict)) else value
                    for name, value in spec["hyperparameters"].items()})
        # A visual run is a second tuning of the same setting, so its figures get their own columns.
        prefix = "visual_" if spec.get("task") == "visual" else ""
        row.update({f"{prefix}{name}": figures[name] for name in TRAINING_FIGURES})
        row[f"{prefix}trainable_percent"] = 100 * figures["trainable_parameters"] / figures["total_parameters"]
    for evaluation in evaluations:
        row.update(metrics_of(evaluation))
    return row


def collect_runs(evaluation_files: list[Path]) -> CollectedRuns:
    """Read every evaluation file into one row per run, with its item-level scores and default settings.

    Knowledge retained and instruction gain are changes from the base row, and the MMLU
    relative change is the knowledge retained in percent of the base row's MMLU accuracy.
    """
    by_run: dict[str, list[tuple[dict[str, Any], Path]]] = defaultdict(list)
    # Sorted, so that the order of the files on the command line does not change the column order.
    for path in sorted(evaluation_files, key=str):
        evaluation = read_json(path)
        by_run[evaluation["run"]].append((evaluation, Path(path)))
    if BASE not in by_run:
        raise UserError("no evaluation of the base model among the inputs; the base row is the reference")

    # The text run and the visual run of one (method, setting, seed) share a row.
    rows: dict[RowKey, dict[str, Any]] = {}
    item_scores: dict[RowKey, dict[str, ItemScores]] = defaultdict(dict)
    # task -> method -> setting -> spec.json; the visual runs may have their own default settings.
    marked_defaults: dict[str, dict[str, dict[str, Path]]] = {task: defaultdict(dict) for task in TASKS}
    for run, evaluations in sorted(by_run.items()):
        row = run_row(run, [evaluation for evaluation, _ in evaluations])
        key = (row["method"], row["setting"], None if pd.isna(row["seed"]) else row["seed"])
        rows.setdefault(key, {}).update(row)
        for evaluation, path in evaluations:
            item_scores[key].update(item_scores_of(evaluation, path))
        if run not in REFERENCE_RUNS:
            spec = read_json(Path(run) / "spec.json")
            if spec.get("default") is True:
                task = "visual" if spec.get("task") == "visual" else "text"
                marked_defaults[task][row["method"]][row["setting"]] = Path(run) / "spec.json"

    runs = pd.DataFrame(list(rows.values()))
    add_base_differences(runs)

    order = {BASE: 0, MOST_COMMON_CAPTION: 1, RANDOM_CHOICE: 2}
    runs["_order"] = runs["method"].map(lambda m: order.get(m, 3))
    runs = runs.sort_values(["_order", "method", "setting", "seed"], kind="stable").drop(columns="_order")
    hyperparameters = sorted(c for c in runs.columns if c.startswith("hp_"))
    others = [c for c in runs.columns if c not in KEY_COLUMNS and c not in hyperparameters]
    runs = runs[list(KEY_COLUMNS) + hyperparameters + others].reset_index(drop=True)

    return CollectedRuns(runs=runs, item_scores=dict(item_scores),
                         default_settings={task: default_settings(runs, marked_defaults[task]) for task in TASKS})


def build_runs_table(evaluation_files: list[Path]) -> pd.DataFrame:
    """Return one row per run; knowledge retained and instruction gain are changes from the base row."""
    return collect_runs(evaluation_files).runs


def add_base_differences(runs: pd.DataFrame) -> None:
    """Add knowledge_retained, mmlu_relative_change and instruction_gain (changes from the base row) in place."""
    base = runs[runs["method"] == BASE].iloc[0]
    if "mmlu_accuracy" in runs:
        runs["knowledge_retained"] = runs["mmlu_accuracy"] - base["mmlu_accuracy"]
        # In percent of the base model's accuracy, as the LLaMA-Excitor paper states its "+3.12 %".
        if base["mmlu_accuracy"] > 0:
            runs["mmlu_relative_change"] = 100 * runs["knowledge_retained"] / base["mmlu_accuracy"]
        else:
            log.warning("the base model's MMLU accuracy is %s, so mmlu_relative_change is left empty",
                        base["mmlu_accuracy"])
            runs["mmlu_relative_change"] = float("nan")
    if "instruction_exact_match" in runs:
        runs["instruction_gain"] = runs["instruction_exact_match"] - base["instruction_exact_match"]


def default_settings(runs: pd.DataFrame, marked: Mapping[str, Mapping[str, Path]]) -> dict[str, str]:
    """Return each method's default setting: the one whose spec says "default": true, else the first sorted.

    Raises UserError when specs of one method mark two different settings as the default.
    """
    defaults = {}
    for method, group in runs.groupby("method", sort=False):
        settings = marked.get(method, {})
        if len(settings) > 1:
            (first, first_spec), (second, second_spec) = sorted(settings.items())[:2]
            raise UserError(f"{first_spec} and {second_spec} both say \"default\": true for method {method} "
                            f"(settings {first} and {second}); mark only one setting of a method as its default")
        defaults[method] = next(iter(settings)) if settings else sorted(group["setting"])[0]
    return defaults


def split_timings(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move the timing columns out of `runs`: return (runs without them, one row per run that has them)."""
    columns = [column for column in TIMING_COLUMNS if column in runs]
    timings = runs[list(KEY_COLUMNS) + columns]
    timings = timings[timings[columns].notna().any(axis=1)] if columns else timings.iloc[0:0]
    return runs.drop(columns=columns), timings.reset_index(drop=True)


# ----------------------------------------------------------------------------- intervals and comparisons


def setting_matrices(collected: CollectedRuns) -> dict[SettingKey, dict[str, ScoreMatrix]]:
    """Build the (n_seeds, n_items) score matrix of every item-level metric of every setting.

    A run counts for a metric when its row has that metric. A setting gets no matrix for a
    metric when one of those runs has no item-level scores (an evaluation file without
    "per_item"). Raises UserError when the runs of one setting scored different items.
    """
    matrices: dict[SettingKey, dict[str, ScoreMatrix]] = {}
    for (method, setting), group in collected.runs.groupby(["method", "setting"], sort=False):
        by_metric = {}
        for metric in ITEM_METRICS:
            if metric not in group:
                continue
            scored = group[group[metric].notna()]
            keys = [(method, setting, None if pd.isna(seed) else seed) for seed in scored["seed"]]
            item_scores = [collected.item_scores.get(key, {}).get(metric) for key in keys]
            if not item_scores:
                continue
            if any(scores is None for scores in item_scores):
                lacking = [key for key, scores in zip(keys, item_scores) if scores is None]
                log.warning("the %s evaluation of %s has no per_item results, so the interval of %s setting %s "
                            "is left empty", metric, _describe_run(lacking[0]), method, setting)
                continue
            by_metric[metric] = score_matrix(item_scores, metric, f"the runs of {method} setting {setting}")
        matrices[(method, setting)] = by_metric
    return matrices


def interval_columns(matrices: Mapping[SettingKey, Mapping[str, ScoreMatrix]],
                     settings: IntervalSettings) -> dict[SettingKey, dict[str, float]]:
    """Compute `<metric>_ci_low` and `<metric>_ci_high` of every setting for table.csv.

    Item-level metrics get the two-way bootstrap interval of their score matrix. Knowledge
    retained and instruction gain get the paired interval of the setting's scores minus the
    base row's, on the same items.
    """
    base = matrices.get((BASE, BASE), {})
    columns: dict[SettingKey, dict[str, float]] = {}
    for (method, setting), by_metric in matrices.items():
        row = {}
        for metric, matrix in by_metric.items():
            interval = bootstrap_interval(matrix.scores, confidence=settings.confidence,
                                          resamples=settings.resamples, seed=settings.seed)
            row[f"{metric}_ci_low"] = interval.low
            row[f"{metric}_ci_high"] = interval.high

        for difference, metric in PAIRED_WITH_BASE.items():
            if metric not in by_metric or metric not in base:
                continue
            label = f"{method} setting {setting} and the base model"
            base_scores = aligned_scores(by_metric[metric], base[metric], metric, label)
            # Only the interval is used here; it does not depend on the number of permutations.
            result = paired_difference(by_metric[metric].scores, base_scores, confidence=settings.confidence,
                                       resamples=settings.resamples, permutations=1, seed=settings.seed)
            row[f"{difference}_ci_low"] = result["low"]
            row[f"{difference}_ci_high"] = result["high"]
        columns[(method, setting)] = row
    return columns


def build_comparisons(matrices: Mapping[SettingKey, Mapping[str, ScoreMatrix]],
                      defaults: Mapping[str, Mapping[str, str]],
                      settings: IntervalSettings) -> pd.DataFrame:
    """Compare Excitor's default setting with every other method's default setting, paired on items.

    `defaults` maps each task to each method's default setting, so caption and ScienceQA metrics
    compare the visual runs' default settings.

    One row per (metric, other method), metrics in ITEM_METRICS order and methods in runs.csv
    order, so the base model and the caption floor come first. Metrics that either side lacks
    are skipped. `difference` is Excitor's mean minus the other method's.
    """
    rows = []
    if not any(EXCITOR in task_defaults for task_defaults in defaults.values()):
        log.warning("no %s runs among the evaluations, so comparisons.csv has no rows", EXCITOR)
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))

    for metric in ITEM_METRICS:
        task_defaults = defaults["visual" if metric in VISUAL_METRICS else "text"]
        excitor_setting = task_defaults.get(EXCITOR)
        excitor = matrices.get((EXCITOR, excitor_setting), {})
        if metric not in excitor:
            continue
        for baseline, baseline_setting in task_defaults.items():
            other = matrices.get((baseline, baseline_setting), {}).get(metric)
            if baseline == EXCITOR or other is None:
                continue
            label = f"{EXCITOR} setting {excitor_setting} and {baseline} setting {baseline_setting}"
            baseline_scores = aligned_scores(excitor[metric], other, metric, label)
            result = paired_difference(excitor[metric].scores, baseline_scores, confidence=settings.confidence,
                                       resamples=settings.resamples, permutations=settings.permutations,
                                       seed=settings.seed)
            rows.append({
                "metric": metric,
                "excitor_setting": excitor_setting,
                "baseline": baseline,
                "baseline_setting": baseline_setting,
                "excitor_mean": float(excitor[metric].scores.mean()),
                "baseline_mean": float(baseline_scores.mean()),
                "difference": result["difference"],
                "ci_low": result["low"],
                "ci_high": result["high"],
                # The plain name goes to the p-value that counts the variation between seeds too.
                "p_value": result["p_value_bootstrap"],
                "p_value_sign_flip": result["p_value"],
                "n_items": result["n_items"],
                "n_seeds_excitor": result["n_seeds_a"],
                "n_seeds_baseline": result["n_seeds_b"],
                "test": COMPARISON_TESTS,
            })
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _describe_run(key: RowKey) -> str:
    method, setting, seed = key
    return f"the {method} row" if seed is None else f"{method} setting {setting} seed {seed}"


# ----------------------------------------------------------------------------- table.csv and outputs


def summarize(runs: pd.DataFrame,
              intervals: Mapping[SettingKey, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Return the mean and standard deviation over seeds of every metric, per method and setting.

    `intervals` maps (method, setting) to `<metric>_ci_low` and `<metric>_ci_high` values, as
    interval_columns returns them. Those columns follow their `<metric>_mean` column, and a
    metric without any interval gets none.
    """
    intervals = intervals or {}
    with_interval = {name[: -len("_ci_low")] for row in intervals.values() for name in row if name.endswith("_ci_low")}
    hyperparameters = [c for c in runs.columns if c.startswith("hp_")]
    metrics = [c for c in runs.columns if c not in KEY_COLUMNS and c not in hyperparameters]
    rows = []
    for (method, setting), group in runs.groupby(["method", "setting"], sort=False):
        row: dict[str, Any] = {"method": method, "setting": setting, "n_runs": len(group)}
        setting_intervals = intervals.get((method, setting), {})
        for name in metrics:
            values = pd.to_numeric(group[name], errors="coerce").dropna()
            row[f"{name}_mean"] = values.mean() if len(values) else float("nan")
            if name in with_interval:
                row[f"{name}_ci_low"] = setting_intervals.get(f"{name}_ci_low", float("nan"))
                row[f"{name}_ci_high"] = setting_intervals.get(f"{name}_ci_high", float("nan"))
            # One run has no spread to estimate, so its standard deviation is left empty.
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        for name in hyperparameters:
            row[name] = group[name].iloc[0]
        rows.append(row)

    table = pd.DataFrame(rows)
    leading = ["method", "setting", "n_runs"]
    for name in HEADLINE_METRICS:
        if name in metrics:
            leading.append(f"{name}_mean")
            if name in with_interval:
                leading += [f"{name}_ci_low", f"{name}_ci_high"]
    return table[leading + [column for column in table.columns if column not in leading]]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` with the fixed float format and line ending that make reruns byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def check_same_inputs(evaluation_files: list[Path]) -> None:
    """Raise UserError when two runs were trained from different contents of the same named input.

    Every run folder's provenance.json records the digest of each input (base model, data, vision
    model). Runs left over from another model or data set must never be merged into one table
    silently, so the first mismatch names both runs and the input.
    """
    first_seen: dict[str, tuple[str, Path]] = {}
    run_dirs = sorted({read_json(path)["run"] for path in evaluation_files} - set(REFERENCE_RUNS))
    for run in run_dirs:
        provenance = Path(run) / "provenance.json"
        if not provenance.is_file():
            continue
        for name, entry in read_json(provenance).get("inputs", {}).items():
            digest = entry.get("sha256")
            seen = first_seen.setdefault(name, (digest, provenance))
            if seen[0] != digest:
                raise UserError(
                    f"{provenance} and {seen[1]} were trained from different versions of {name} "
                    f"({entry.get('path')}); rerun the outdated runs (snakemake --forcerun train train_visual), "
                    "or write each model's or data set's results to its own --directory"
                )


PROVENANCE_PACKAGES = ("python", "torch", "transformers", "peft", "lm-eval", "pycocoevalcap")


def provenance_table(evaluation_files: list[Path]) -> pd.DataFrame:
    """Return one row per run folder with its provenance: task, git commit, key package versions and input digests.

    Input digests are shortened to their first 12 hex digits, enough to tell versions apart by eye.
    """
    rows = []
    run_dirs = sorted({read_json(path)["run"] for path in evaluation_files} - set(REFERENCE_RUNS))
    for run in run_dirs:
        path = Path(run) / "provenance.json"
        if not path.is_file():
            continue
        record = read_json(path)
        spec = record.get("spec", {})
        git = record.get("git") or {}
        row = {"method": spec.get("method"), "setting": spec.get("setting"), "seed": record.get("seed"),
               "task": spec.get("task", "text"), "git_commit": git.get("commit"), "git_dirty": git.get("dirty")}
        packages = record.get("packages") or {}
        row.update({f"package_{name}": packages.get(name) for name in PROVENANCE_PACKAGES})
        for name, entry in sorted((record.get("inputs") or {}).items()):
            row[f"input_{name}"] = str(entry.get("sha256", "")).removeprefix("sha256:")[:12]
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(evaluation_files: list[Path], runs_csv: Path, table_csv: Path, *,
              comparisons_csv: Path | None = None, timings_csv: Path | None = None,
              table_md: Path | None = None, table_tex: Path | None = None,
              provenance_csv: Path | None = None, confidence: float = 0.95, resamples: int = 2000, permutations: int = 10000,
              seed: int = 0) -> None:
    """Write runs.csv and table.csv, and each optional output whose path is given.

    `confidence`, `resamples` and `seed` set the bootstrap intervals of table.csv and
    comparisons.csv; `permutations` sets the paired test of comparisons.csv. Timing
    figures are written only to `timings_csv` and are dropped when it is None.
    """
    settings = IntervalSettings(confidence=confidence, resamples=resamples, permutations=permutations, seed=seed)
    check_same_inputs(evaluation_files)
    collected = collect_runs(evaluation_files)
    runs, timings = split_timings(collected.runs)
    matrices = setting_matrices(collected)
    table = summarize(runs, interval_columns(matrices, settings))

    write_csv(runs, runs_csv)
    write_csv(table, table_csv)
    log.info("wrote %d runs to %s and %d settings to %s", len(runs), runs_csv, len(table), table_csv)

    if comparisons_csv is not None:
        comparisons = build_comparisons(matrices, collected.default_settings, settings)
        write_csv(comparisons, comparisons_csv)
        log.info("wrote %d paired comparisons to %s", len(comparisons), comparisons_csv)
    if timings_csv is not None:
        write_csv(timings, timings_csv)
        log.info("wrote the timings of %d runs to %s", len(timings), timings_csv)

    if provenance_csv is not None:
        provenance = provenance_table(evaluation_files)
        write_csv(provenance, provenance_csv)
        log.info("wrote the provenance of %d runs to %s", len(provenance), provenance_csv)
    if table_md is not None:
        write_markdown_table(table_csv, table_md, confidence=confidence)
    if table_tex is not None:
        write_latex_table(table_csv, table_tex, confidence=confidence)
