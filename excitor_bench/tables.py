"""Render table.csv's headline metrics as a Markdown table and a LaTeX (booktabs) table for papers.

Each method and setting becomes one row, with every metric shown as "mean [low, high]" where
table.csv has an interval. Accuracies are shown in percent, knowledge retained in percentage
points, CIDEr on its x100 scale and trainable parameters in K, M or B (7.6M). A last row gives
the numbers that the LLaMA-Excitor paper states for LLaMA-7B, and "n/a" where it states none
that fit a column. A footnote explains the intervals and states that the tiny world's numbers are
not comparable to those of the LLaMA-Excitor paper.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

MISSING = "n/a"
PAPER_LABEL = "paper (LLaMA-Excitor, LLaMA-7B)"
# The three numbers that the abstract of LLaMA-Excitor (Zou et al., CVPR 2024), as given on
# https://zoubo9034.github.io/Excitor, states: +3.12 % relative MMLU improvement over LLaMA-7B,
# 157.5 CIDEr on MSCOCO and 88.39 % on ScienceQA. Every other cell of the paper row is "n/a".
PAPER_NUMBERS = {"mmlu_relative_change": "+3.12", "caption_cider": "157.5", "scienceqa_accuracy": "88.39"}


@dataclass(frozen=True)
class Column:
    """One metric column of the rendered table: its header, table.csv base name and number style."""

    header: str
    metric: str  # base name of the `<metric>_mean`, `_ci_low` and `_ci_high` columns of table.csv
    style: str  # "percent", "points", "relative", "cider" or "parameters"


COLUMNS = (
    Column("Instruction exact match (%)", "instruction_exact_match", "percent"),
    Column("Knowledge retained (points)", "knowledge_retained", "points"),
    Column("MMLU accuracy (%)", "mmlu_accuracy", "percent"),
    Column("MMLU change (% of base)", "mmlu_relative_change", "relative"),
    Column("CIDEr", "caption_cider", "cider"),
    Column("ScienceQA (%)", "scienceqa_accuracy", "percent"),
    Column("Trainable parameters", "trainable_parameters", "parameters"),
    # The visual runs also train the projection from the vision tower, so they get their own count.
    Column("Visual trainable parameters", "visual_trainable_parameters", "parameters"),
)
LEADING_HEADERS = ("Method", "Setting", "Seeds")

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
LATEX_SPECIAL_PATTERN = re.compile("|".join(re.escape(character) for character in LATEX_SPECIAL))


def format_number(value: float, style: str) -> str:
    """Format one value of table.csv in the given column style; NaN becomes "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if style == "percent":
        return f"{100 * value:.2f}"
    if style == "points":
        return f"{100 * value:+.2f}"
    if style == "relative":
        return f"{value:+.2f}"
    if style == "cider":
        return f"{value:.1f}"
    if style == "parameters":
        return format_parameters(value)
    raise ValueError(f"unknown number style {style!r}; use one of percent, points, relative, cider, parameters")


def format_parameters(count: float) -> str:
    """Format a parameter count with one decimal and a K, M or B suffix (7_600_000 -> "7.6M")."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= threshold:
            return f"{count / threshold:.1f}{suffix}"
    return f"{count:.0f}"


def table_rows(table: pd.DataFrame) -> list[list[str]]:
    """Return the cells of every row: one per method and setting of `table`, then the paper row."""
    rows = []
    for _, record in table.iterrows():
        cells = [str(record["method"]), str(record["setting"]), str(int(record["n_runs"]))]
        cells += [metric_cell(record, column) for column in COLUMNS]
        rows.append(cells)
    paper = [PAPER_LABEL, MISSING, MISSING] + [PAPER_NUMBERS.get(column.metric, MISSING) for column in COLUMNS]
    rows.append(paper)
    return rows


def metric_cell(record: pd.Series, column: Column) -> str:
    """Return "mean [low, high]", or "mean" without an interval, or "n/a" without a mean."""
    mean = _value(record, f"{column.metric}_mean")
    if math.isnan(mean):
        return MISSING

    text = format_number(mean, column.style)
    low = _value(record, f"{column.metric}_ci_low")
    high = _value(record, f"{column.metric}_ci_high")
    if not math.isnan(low) and not math.isnan(high):
        text += f" [{format_number(low, column.style)}, {format_number(high, column.style)}]"
    return text


def footnotes(confidence: float) -> list[str]:
    """Return the lines printed under the table."""
    return [
        f"[low, high]: {100 * confidence:g} % bootstrap percentile interval over seeds and items; knowledge "
        "retained is paired with the base model's scores on the same MMLU questions.",
        "The tiny world's numbers come from a tiny LLaMA on generated data, so they are not comparable to the "
        f"LLaMA-Excitor paper's, which were measured with LLaMA-7B on the real benchmarks. {MISSING} in the paper row: no "
        "number taken from the paper for that column.",
    ]


def write_markdown_table(table_csv: Path, out_md: Path, confidence: float = 0.95) -> None:
    """Write table.csv's headline metrics as a Markdown table with the paper row and footnotes.

    `confidence` is the level of table.csv's intervals, named in the footnote.
    """
    rows = table_rows(read_table(table_csv))
    headers = list(LEADING_HEADERS) + [column.header for column in COLUMNS]
    alignment = ["---", "---"] + ["---:"] * (len(headers) - 2)

    lines = [_markdown_line(headers), _markdown_line(alignment)]
    lines += [_markdown_line(cells) for cells in rows]
    lines.append("")
    lines += footnotes(confidence)
    _write_text(out_md, "\n".join(lines) + "\n")
    log.info("wrote a Markdown table of %d rows to %s", len(rows), out_md)


def write_latex_table(table_csv: Path, out_tex: Path, confidence: float = 0.95) -> None:
    """Write table.csv's headline metrics as a booktabs tabular with the paper row and footnotes.

    The file is a fragment for \\input, and it needs \\usepackage{booktabs} and {graphicx}. The
    tabular is scaled to the line width, because its eleven columns are wider than a page. Special
    characters of LaTeX in every cell are escaped.
    """
    rows = table_rows(read_table(table_csv))
    headers = list(LEADING_HEADERS) + [column.header for column in COLUMNS]

    lines = [
        "% Generated from table.csv by excitor_bench.tables; needs \\usepackage{booktabs} and \\usepackage{graphicx}.",
        "\\resizebox{\\linewidth}{!}{%",
        "\\begin{tabular}{ll" + "r" * (len(headers) - 2) + "}",
        "\\toprule",
        _latex_line(headers),
        "\\midrule",
    ]
    lines += [_latex_line(cells) for cells in rows[:-1]]
    lines.append("\\midrule")
    lines.append(_latex_line(rows[-1]))
    lines += ["\\bottomrule", "\\end{tabular}%", "}", ""]
    lines += ["{\\footnotesize " + latex_escape(line) + "\\par}" for line in footnotes(confidence)]
    _write_text(out_tex, "\n".join(lines) + "\n")
    log.info("wrote a LaTeX table of %d rows to %s", len(rows), out_tex)


def latex_escape(text: str) -> str:
    """Escape the characters that LaTeX treats as special (\\ & % $ # _ { } ~ ^)."""
    return LATEX_SPECIAL_PATTERN.sub(lambda match: LATEX_SPECIAL[match.group(0)], text)


def read_table(table_csv: Path) -> pd.DataFrame:
    """Read table.csv, raising UserError when it is missing or lacks its identity columns."""
    try:
        table = pd.read_csv(table_csv)
    except FileNotFoundError:
        raise UserError(f"{table_csv} not found; run `excitor-bench aggregate` to write it first") from None
    missing = [column for column in ("method", "setting", "n_runs") if column not in table]
    if missing:
        raise UserError(f"{table_csv} has no {missing[0]!r} column; pass the table.csv that aggregate writes")
    return table


def _value(record: pd.Series, column: str) -> float:
    value = record.get(column)
    return float("nan") if value is None or pd.isna(value) else float(value)


def _markdown_line(cells: list[str]) -> str:
    # A pipe inside a cell would end it, so it is escaped.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _latex_line(cells: list[str]) -> str:
    return " & ".join(latex_escape(cell) for cell in cells) + " \\\\"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
