"""Tests for the result plots, drawn from hand-made tables, and for the Pareto front and label placement."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from excitor_bench import plots
from excitor_bench.cli import main
from excitor_bench.errors import UserError
from excitor_bench.plots import (COLOR_ORDER, ablation_panels, boxes_overlap, interval_errors, pareto_front, plot_ablation_axes, plot_efficiency,
                                 plot_knowledge_vs_instructions, plot_score_vs_parameters, spread_labels,
                                 varying_axes)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A table.csv as aggregate writes it. Excitor varies rank and prompt length one at a time around
# r4_k8, LoRA varies rank and full fine-tuning has one setting. The visual metrics exist for the
# default settings only.
TABLE_COLUMNS = ["method", "setting", "n_runs", "knowledge_retained_mean", "instruction_exact_match_mean",
                 "caption_cider_mean", "scienceqa_accuracy_mean", "trainable_parameters_mean",
                 "visual_trainable_parameters_mean", "hp_learning_rate", "hp_prompt_length", "hp_rank",
                 "hp_target_modules"]
TABLE_ROWS = [
    ["base", "base", 1, 0.0, 0.05, 2.0, 0.30, "", "", "", "", "", ""],
    ["excitor", "r4_k8", 2, -0.01, 0.20, 40.0, 0.55, 1000, 1500, 0.005, 8, 4, ""],
    ["excitor", "r2_k8", 2, -0.02, 0.15, "", "", 600, "", 0.005, 8, 2, ""],
    ["excitor", "r4_k4", 2, 0.00, 0.18, "", "", 800, "", 0.005, 4, 4, ""],
    ["lora", "r4", 2, -0.20, 0.30, 35.0, 0.50, 2000, 2500, 0.001, "", 4, '["q_proj", "v_proj"]'],
    ["lora", "r2", 2, -0.15, 0.25, "", "", 1000, "", 0.001, "", 2, '["q_proj", "v_proj"]'],
    ["full", "default", 2, -0.30, 0.35, 20.0, 0.45, 100000, 100500, 0.001, "", "", ""],
    ["most_common_caption", "most_common_caption", 1, "", "", 5.0, "", "", "", "", "", "", ""],
]


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def with_intervals(columns: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """Add `_ci_low` and `_ci_high` columns, 0.01 below and 0.02 above each knowledge_retained mean."""
    position = columns.index("knowledge_retained_mean")
    extended = []
    for row in rows:
        mean = row[position]
        extended.append(row + ([mean - 0.01, mean + 0.02] if mean != "" else ["", ""]))
    return columns + ["knowledge_retained_ci_low", "knowledge_retained_ci_high"], extended


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 100
        assert image.height > 100


@pytest.fixture
def table_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "table.csv", TABLE_COLUMNS, TABLE_ROWS)


def test_pareto_front_hand_made():
    points = [(10, 0.5), (20, 0.4), (20, 0.7), (5, 0.1), (40, 0.7), (5, 0.1)]

    # (20, 0.4) is beaten by (10, 0.5) and (40, 0.7) by (20, 0.7); the two (5, 0.1) tie and both stay.
    assert pareto_front(points) == [3, 5, 0, 2]


def test_pareto_front_same_parameters():
    # With equal parameters only the higher score is on the front.
    assert pareto_front([(100, 0.2), (100, 0.6)]) == [1]


def test_pareto_front_empty():
    assert pareto_front([]) == []


def test_pareto_front_single_point():
    assert pareto_front([(7, -3.0)]) == [0]


def test_spread_labels_on_one_spot():
    anchors = [(100.0, 100.0)] * 6
    sizes = [(20.0, 8.0)] * 6

    offsets = spread_labels(anchors, sizes)

    boxes = [(x + dx, y + dy, x + dx + w, y + dy + h) for (x, y), (dx, dy), (w, h) in zip(anchors, offsets, sizes)]
    for first, second in itertools.combinations(boxes, 2):
        assert not boxes_overlap(first, second), (first, second)
    marker = (98.0, 98.0, 102.0, 102.0)
    for box in boxes:
        assert not boxes_overlap(box, marker), box


def test_spread_labels_far_apart_keep_first_spot():
    offsets = spread_labels([(0.0, 0.0), (500.0, 500.0)], [(10.0, 6.0), (10.0, 6.0)])

    # Nothing is in the way, so each label sits up and to the right, past the 4-point marker.
    assert offsets == [(2.0, 2.0), (2.0, 2.0)]


def test_boxes_overlap_cases():
    assert boxes_overlap((0, 0, 2, 2), (1, 1, 3, 3))
    assert not boxes_overlap((0, 0, 1, 1), (1, 0, 2, 1))  # touching edges share no area
    assert not boxes_overlap((0, 0, 1, 1), (5, 5, 6, 6))


def test_interval_errors_from_ci_columns():
    rows = pd.DataFrame({"x_mean": [0.5, 0.2], "x_ci_low": [0.4, 0.25], "x_ci_high": [0.7, 0.3]})

    below, above = interval_errors(rows, "x", 100.0)

    assert below == pytest.approx([10.0, 0.0])  # a low bound above the mean is clipped to no bar
    assert above == pytest.approx([20.0, 10.0])


def test_interval_errors_without_ci_columns():
    rows = pd.DataFrame({"x_mean": [0.5], "x_std": [0.1]})

    assert interval_errors(rows, "x", 1.0) is None


def test_score_plot_writes_png(table_csv, tmp_path):
    out = tmp_path / "plots" / "score_vs_parameters.png"

    plot_score_vs_parameters(table_csv, out)

    assert_png(out)


def test_score_plot_with_intervals(tmp_path):
    columns, rows = with_intervals(TABLE_COLUMNS, TABLE_ROWS)
    table = write_csv(tmp_path / "table.csv", columns, rows)
    out = tmp_path / "score.png"

    plot_score_vs_parameters(table, out)

    assert_png(out)


def test_score_plot_is_deterministic(table_csv, tmp_path):
    first, second = tmp_path / "first.png", tmp_path / "second.png"

    plot_score_vs_parameters(table_csv, first)
    plot_score_vs_parameters(table_csv, second)

    assert first.read_bytes() == second.read_bytes()


def test_score_plot_skips_absent_metrics(tmp_path):
    keep = [0, 1, 3, 7]  # method, setting, knowledge_retained_mean, trainable_parameters_mean
    table = write_csv(tmp_path / "table.csv", [TABLE_COLUMNS[i] for i in keep],
                      [[row[i] for i in keep] for row in TABLE_ROWS])
    out = tmp_path / "score.png"

    plot_score_vs_parameters(table, out)

    assert_png(out)


def test_score_plot_without_metrics(tmp_path):
    table = write_csv(tmp_path / "table.csv", ["method", "setting", "trainable_parameters_mean"],
                      [["lora", "r4", 2000]])

    with pytest.raises(UserError, match="none of the metrics"):
        plot_score_vs_parameters(table, tmp_path / "score.png")


def test_score_plot_missing_table(tmp_path):
    with pytest.raises(UserError, match="not found"):
        plot_score_vs_parameters(tmp_path / "absent.csv", tmp_path / "score.png")


def test_varying_axes_per_method():
    rows = pd.DataFrame([dict(zip(TABLE_COLUMNS, row)) for row in TABLE_ROWS]).replace("", float("nan"))

    assert varying_axes(rows[rows["method"] == "excitor"]) == ["hp_prompt_length", "hp_rank"]
    assert varying_axes(rows[rows["method"] == "lora"]) == ["hp_rank"]
    assert varying_axes(rows[rows["method"] == "full"]) == []


def test_varying_axes_counts_empty_cell():
    # num_layers None (every layer, an empty cell in the CSV) against 2 is a varying axis.
    rows = pd.DataFrame({"method": ["llama_adapter"] * 2, "hp_num_layers": [float("nan"), 2.0]})

    assert varying_axes(rows) == ["hp_num_layers"]


def test_ablation_plot_writes_png(table_csv, tmp_path):
    out = tmp_path / "ablation.png"

    plot_ablation_axes(table_csv, out)

    assert_png(out)


def test_ablation_panels_share_axis_across_methods():
    table = pd.DataFrame(TABLE_ROWS, columns=TABLE_COLUMNS).replace("", float("nan"))
    tuned = table[~table["method"].isin(["base", "most_common_caption"])]

    panels = ablation_panels(tuned, ["knowledge_retained", "caption_cider"])

    # Excitor and LoRA both vary rank, so the rank panel has a line for each; only Excitor varies
    # prompt length. The caption metric exists for one setting per method, so it has no panel.
    assert list(panels) == [("knowledge_retained", "hp_prompt_length"), ("knowledge_retained", "hp_rank")]
    rank_lines = panels[("knowledge_retained", "hp_rank")]
    assert [line.method for line in rank_lines] == ["excitor", "lora"]
    assert list(rank_lines[0].rows["setting"]) == ["r2_k8", "r4_k8"]
    assert rank_lines[1].label == "lora"
    assert rank_lines[0].label == "excitor (prompt_length=8)"


def test_ablation_panels_factorial_lines_per_method():
    rows = [["excitor", f"r{rank}_k{length}", 1, -0.01 * rank, 0.01 * length, "", "", 100 * rank, "", 0.005,
             length, rank, ""] for rank in (2, 4) for length in (4, 8)]
    tuned = pd.DataFrame(rows, columns=TABLE_COLUMNS).replace("", float("nan"))

    panels = ablation_panels(tuned, ["knowledge_retained"])

    labels = [line.label for line in panels[("knowledge_retained", "hp_rank")]]
    assert labels == ["excitor (prompt_length=4)", "excitor (prompt_length=8)"]


def test_ablation_plot_factorial_grid(tmp_path):
    # Every combination of rank and prompt length: one line per value of the other axis.
    rows = [["excitor", f"r{rank}_k{length}", 1, -0.01 * rank, 0.01 * length, "", "", 100 * rank, "", 0.005,
             length, rank, ""] for rank in (2, 4, 8) for length in (4, 8)]
    table = write_csv(tmp_path / "table.csv", TABLE_COLUMNS, rows)
    out = tmp_path / "ablation.png"

    plot_ablation_axes(table, out)

    assert_png(out)


def test_ablation_plot_without_axes(tmp_path):
    table = write_csv(tmp_path / "table.csv", TABLE_COLUMNS, [TABLE_ROWS[0], TABLE_ROWS[6]])
    out = tmp_path / "ablation.png"

    plot_ablation_axes(table, out)

    assert_png(out)


def test_knowledge_plot_writes_png(tmp_path):
    runs = write_csv(tmp_path / "runs.csv", ["method", "setting", "seed", "knowledge_retained",
                                             "instruction_exact_match", "trainable_parameters"],
                     [["base", "base", "", 0.0, 0.0, ""],
                      ["excitor", "r4", 0, 0.0, 0.1, 100], ["excitor", "r4", 1, -0.02, 0.1, 100],
                      ["excitor", "r2", 0, 0.0, 0.1, 50], ["lora", "r2", 0, -0.2, 0.3, 80]])
    out = tmp_path / "knowledge.png"

    plot_knowledge_vs_instructions(runs, out)

    assert_png(out)


def test_knowledge_plot_key_lists_plotted_settings(tmp_path, monkeypatch):
    runs = write_csv(tmp_path / "runs.csv", ["method", "setting", "seed", "knowledge_retained",
                                             "instruction_exact_match", "caption_cider"],
                     [["base", "base", "", 0.0, 0.0, 0.0],
                      ["excitor", "r4", 0, -0.1, 0.1, ""],
                      ["excitor", "r4_vis", 0, "", "", 90.0],
                      ["lora", "r2", 0, -0.2, 0.3, ""]])
    keys = []
    monkeypatch.setattr(plots, "add_key", lambda figure, numbers: keys.append(numbers) or 0.8)

    plot_knowledge_vs_instructions(runs, tmp_path / "knowledge.png")

    # The visual-only setting has no point, so it is not numbered.
    assert keys == [{("excitor", "r4"): 1, ("lora", "r2"): 2}]


EFFICIENCY_COLUMNS = ["method", "setting", "trainable_parameters", "train_step_seconds", "train_step_ratio_to_lora",
                      "generation_tokens_per_second", "generation_ratio_to_base", "train_state_mb_estimate",
                      "train_peak_memory_mb"]


def test_efficiency_plot_writes_png(tmp_path):
    table = write_csv(tmp_path / "efficiency.csv", EFFICIENCY_COLUMNS,
                      [["excitor", "r4", 770, 0.3, 0.75, 950, 0.95, 0.37, ""],
                       ["lora", "r2", 672, 0.4, 1.0, 1000, 1.0, 0.37, ""],
                       ["base", "base", 0, "", "", 1000, 1.0, "", ""]])
    out = tmp_path / "efficiency.png"

    plot_efficiency(table, out)

    assert_png(out)


def test_efficiency_plot_adds_memory_panel(tmp_path):
    columns = EFFICIENCY_COLUMNS + ["train_memory_ratio_to_lora"]
    with_memory = write_csv(tmp_path / "memory.csv", columns,
                            [["excitor", "r4", 770, 0.3, 0.75, 950, 0.95, 0.37, "", 0.7],
                             ["lora", "r2", 672, 0.4, 1.0, 1000, 1.0, 0.37, "", 1.0],
                             ["base", "base", 0, "", "", 1000, 1.0, "", "", ""]])
    without = write_csv(tmp_path / "speed.csv", EFFICIENCY_COLUMNS,
                        [["excitor", "r4", 770, 0.3, 0.75, 950, 0.95, 0.37, ""],
                         ["base", "base", 0, "", "", 1000, 1.0, "", ""]])

    plot_efficiency(with_memory, tmp_path / "three.png")
    plot_efficiency(without, tmp_path / "two.png")

    # Panels are 4.5 inches wide each, so three panels make a figure 1.5 times as wide as two.
    three_width = Image.open(tmp_path / "three.png").size[0]
    two_width = Image.open(tmp_path / "two.png").size[0]
    assert three_width / two_width == pytest.approx(1.5, abs=0.1)


def test_efficiency_plot_missing_column(tmp_path):
    table = write_csv(tmp_path / "efficiency.csv", ["method", "train_step_seconds"], [["lora", 0.4]])

    with pytest.raises(UserError, match="generation_ratio_to_base|train_step_ratio_to_lora"):
        plot_efficiency(table, tmp_path / "efficiency.png")


def test_plot_command_draws_kind(table_csv, tmp_path):
    out = tmp_path / "ablation.png"

    status = main(["plot", "--kind", "ablation", "--table-csv", str(table_csv), "--out", str(out)])

    assert status == 0
    assert_png(out)


def test_plot_command_wrong_input(table_csv, tmp_path, capsys):
    status = main(["plot", "--kind", "efficiency", "--table-csv", str(table_csv), "--out", str(tmp_path / "e.png")])

    assert status == 2
    assert "--efficiency-csv" in capsys.readouterr().err


def test_colour_order_lists_every_method():
    from baselines import METHODS

    assert COLOR_ORDER == tuple(METHODS)
