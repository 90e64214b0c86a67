"""Collect evaluation results into results/runs.csv (one row per run) and results/table.csv (per setting)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

BASE = "base"
MOST_COMMON_CAPTION = "most_common_caption"
"""The row of the caption floor: the most common training caption, given for every test image."""
REFERENCE_RUNS = (BASE, MOST_COMMON_CAPTION)
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
# The columns a reader looks at first, placed right after a row's identity in table.csv.
HEADLINE_METRICS = ("knowledge_retained", "instruction_exact_match", "mmlu_accuracy", "caption_cider",
                    "scienceqa_accuracy", "trainable_parameters")
# Columns that identify a row; everything numeric after them is a metric or a figure.
KEY_COLUMNS = ("method", "setting", "seed")


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


def build_runs_table(evaluation_files: list[Path]) -> pd.DataFrame:
    """Return one row per run; knowledge retained and instruction gain are changes from the base row."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in evaluation_files:
        evaluation = read_json(path)
        by_run[evaluation["run"]].append(evaluation)
    if BASE not in by_run:
        raise UserError("no evaluation of the base model among the inputs; the base row is the reference")

    # The text run and the visual run of one (method, setting, seed) share a row.
    rows: dict[tuple, dict[str, Any]] = {}
    for run, evaluations in sorted(by_run.items()):
        row = run_row(run, evaluations)
        key = (row["method"], row["setting"], None if pd.isna(row["seed"]) else row["seed"])
        rows.setdefault(key, {}).update(row)
    runs = pd.DataFrame(list(rows.values()))
    base = runs[runs["method"] == BASE].iloc[0]
    if "mmlu_accuracy" in runs:
        runs["knowledge_retained"] = runs["mmlu_accuracy"] - base["mmlu_accuracy"]
    if "instruction_exact_match" in runs:
        runs["instruction_gain"] = runs["instruction_exact_match"] - base["instruction_exact_match"]

    order = {BASE: 0, MOST_COMMON_CAPTION: 1}
    runs["_order"] = runs["method"].map(lambda m: order.get(m, 2))
    runs = runs.sort_values(["_order", "method", "setting", "seed"], kind="stable").drop(columns="_order")
    hyperparameters = sorted(c for c in runs.columns if c.startswith("hp_"))
    others = [c for c in runs.columns if c not in KEY_COLUMNS and c not in hyperparameters]
    return runs[list(KEY_COLUMNS) + hyperparameters + others].reset_index(drop=True)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Return the mean and standard deviation over seeds of every metric, per method and setting."""
    hyperparameters = [c for c in runs.columns if c.startswith("hp_")]
    metrics = [c for c in runs.columns if c not in KEY_COLUMNS and c not in hyperparameters]
    rows = []
    for (method, setting), group in runs.groupby(["method", "setting"], sort=False):
        row: dict[str, Any] = {"method": method, "setting": setting, "n_runs": len(group)}
        for name in metrics:
            values = pd.to_numeric(group[name], errors="coerce").dropna()
            row[f"{name}_mean"] = values.mean() if len(values) else float("nan")
            # One run has no spread to estimate, so its standard deviation is left empty.
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        for name in hyperparameters:
            row[name] = group[name].iloc[0]
        rows.append(row)

    table = pd.DataFrame(rows)
    leading = ["method", "setting", "n_runs"] + [f"{name}_mean" for name in HEADLINE_METRICS if name in metrics]
    return table[leading + [column for column in table.columns if column not in leading]]


def aggregate(evaluation_files: list[Path], runs_csv: Path, table_csv: Path) -> None:
    runs = build_runs_table(evaluation_files)
    table = summarize(runs)
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(runs_csv, index=False, float_format="%.6g")
    table.to_csv(table_csv, index=False, float_format="%.6g")
    log.info("wrote %d runs to %s and %d settings to %s", len(runs), runs_csv, len(table), table_csv)
