"""Tests for the Markdown and LaTeX renderings of table.csv, written from hand-made tables."""

from __future__ import annotations

import pandas as pd
import pytest

from excitor_bench.errors import UserError
from excitor_bench.tables import format_parameters, latex_escape, write_latex_table, write_markdown_table

PAPER_CELLS = ["paper (LLaMA-Excitor, LLaMA-7B)", "n/a", "n/a", "n/a", "n/a", "n/a", "+3.12", "157.5", "88.39", "n/a",
               "n/a"]


def write_table(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def lora_row(**overrides):
    row = {
        "method": "lora", "setting": "r4", "n_runs": 2,
        "knowledge_retained_mean": -0.1, "knowledge_retained_ci_low": -0.15, "knowledge_retained_ci_high": -0.05,
        "instruction_exact_match_mean": 0.5, "instruction_exact_match_ci_low": 0.25,
        "instruction_exact_match_ci_high": 0.75,
        "mmlu_accuracy_mean": 0.7, "mmlu_relative_change_mean": -12.5,
        "caption_cider_mean": 75.0, "caption_cider_ci_low": 50.0, "caption_cider_ci_high": 100.0,
        "scienceqa_accuracy_mean": float("nan"), "trainable_parameters_mean": 7_600_000,
    }
    row.update(overrides)
    return row


def markdown_cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def test_parameter_counts():
    assert format_parameters(7_600_000) == "7.6M"
    assert format_parameters(12_345) == "12.3K"
    assert format_parameters(2_500_000_000) == "2.5B"
    assert format_parameters(100) == "100"


def test_markdown_row_cells(tmp_path):
    table = write_table(tmp_path / "table.csv", [lora_row()])

    write_markdown_table(table, tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()

    assert markdown_cells(lines[0])[:4] == ["Method", "Setting", "Seeds", "Instruction exact match (%)"]
    assert markdown_cells(lines[2]) == [
        "lora", "r4", "2", "50.00 [25.00, 75.00]", "-10.00 [-15.00, -5.00]", "70.00", "-12.50",
        "75.0 [50.0, 100.0]", "n/a", "7.6M", "n/a",
    ]


def test_markdown_paper_row(tmp_path):
    table = write_table(tmp_path / "table.csv", [lora_row()])

    write_markdown_table(table, tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()

    assert markdown_cells(lines[3]) == PAPER_CELLS
    assert sum("paper (LLaMA-Excitor" in line for line in lines) == 1
    assert any("not comparable" in line for line in lines[4:])
    assert any("95 % bootstrap" in line for line in lines[4:])


def test_markdown_escapes_pipe(tmp_path):
    table = write_table(tmp_path / "table.csv", [lora_row(setting="a|b")])

    write_markdown_table(table, tmp_path / "table.md")

    assert "| a\\|b |" in (tmp_path / "table.md").read_text()


def test_visual_parameters_have_their_own_column(tmp_path):
    row = lora_row(trainable_parameters_mean=float("nan"), visual_trainable_parameters_mean=1_500)
    table = write_table(tmp_path / "table.csv", [row])

    write_markdown_table(table, tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()

    assert markdown_cells(lines[0])[-1] == "Visual trainable parameters"
    assert markdown_cells(lines[2])[-2:] == ["n/a", "1.5K"]


def test_latex_escape():
    assert latex_escape("r4_50%&x") == r"r4\_50\%\&x"
    assert latex_escape("a\\b") == r"a\textbackslash{}b"
    assert latex_escape("{#$}") == r"\{\#\$\}"
    assert latex_escape("~^") == r"\textasciitilde{}\textasciicircum{}"


def test_latex_table(tmp_path):
    table = write_table(tmp_path / "table.csv", [lora_row(method="llama_adapter", setting="p10_l2")])

    write_latex_table(table, tmp_path / "table.tex", confidence=0.9)
    text = (tmp_path / "table.tex").read_text()
    lines = text.splitlines()

    assert "\\begin{tabular}{llrrrrrrrrr}" in lines
    # The tabular is scaled to the line width: the box opens before it and closes after it.
    assert lines.index("\\resizebox{\\linewidth}{!}{%") < lines.index("\\begin{tabular}{llrrrrrrrrr}")
    assert lines.index("\\end{tabular}%") + 1 == lines.index("}")
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert "Instruction exact match (\\%)" in text
    assert "llama\\_adapter & p10\\_l2 & 2 & 50.00 [25.00, 75.00]" in text
    paper = [line for line in lines if line.startswith("paper")]
    assert paper == [" & ".join(PAPER_CELLS) + " \\\\"]
    assert "90 \\% bootstrap" in text
    assert "not comparable" in text
    body = text.split("\\begin{tabular}")[1]
    assert "llama_adapter" not in body
    assert " % " not in body


def test_missing_table_fails(tmp_path):
    with pytest.raises(UserError, match="table.csv not found"):
        write_markdown_table(tmp_path / "table.csv", tmp_path / "table.md")
