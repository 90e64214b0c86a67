"""Tests for aggregate: runs.csv, table.csv with intervals, comparisons.csv and timings.csv.

Expected intervals come from bootstrap distributions worked out by hand. With one seed and
item scores [1, 0], a resample of the two items has mean 0, 0.5 or 1 with probabilities 1/4,
1/2 and 1/4, so the 95 % percentile interval is [0, 1]. With scores [1, 0, 0, 0] the number
of 1s in a resample is Binomial(4, 1/4): P(0) = 0.316 and P(at most 2) = 0.949, so the
interval is [0, 0.75]. Scores that are equal on every item give a zero-width interval.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from excitor_bench.aggregate import aggregate
from excitor_bench.errors import UserError

FIGURES = {
    "trainable_parameters": 100,
    "total_parameters": 10_000,
    "train_seconds": 1.0,
    "peak_memory_mb": 10.0,
    "tokens_per_second": 50.0,
    "adapter_bytes": 400,
    "final_loss": 0.5,
}


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def fake_run(root, method, setting, seed, mmlu, exact_match):
    run = root / "runs" / method / setting / f"seed{seed}"
    write(run / "spec.json", {"method": method, "setting": setting, "seed": seed,
                              "hyperparameters": {"rank": 4, "learning_rate": 0.001}})
    write(run / "train.json", FIGURES)
    return [
        write(run / "eval" / "mmlu.json", {"evaluation": "mmlu", "run": str(run), "accuracy": mmlu,
                                           "categories": {"stem": mmlu}}),
        write(run / "eval" / "instructions.json", {"evaluation": "instructions", "run": str(run),
                                                   "exact_match": exact_match}),
    ]


def fake_base(root, mmlu, exact_match):
    return [
        write(root / "base" / "mmlu.json", {"evaluation": "mmlu", "run": "base", "accuracy": mmlu,
                                            "categories": {"stem": mmlu}}),
        write(root / "base" / "instructions.json", {"evaluation": "instructions", "run": "base",
                                                    "exact_match": exact_match}),
    ]


def test_aggregate_runs_and_table(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)
    files += fake_run(tmp_path, "lora", "r4", 1, 0.60, 0.70)

    aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")
    runs = pd.read_csv(tmp_path / "runs.csv")
    table = pd.read_csv(tmp_path / "table.csv").set_index("method")

    assert list(runs["method"]) == ["base", "lora", "lora"]
    assert runs.loc[1, "knowledge_retained"] == pytest.approx(0.70 - 0.80)
    assert runs.loc[2, "instruction_gain"] == pytest.approx(0.70)
    assert runs.loc[1, "trainable_percent"] == pytest.approx(1.0)
    assert runs.loc[1, "hp_rank"] == 4
    # Hand figures: mean of 0.70 and 0.60 is 0.65; their sample standard deviation is 0.0707107.
    assert table.loc["lora", "mmlu_accuracy_mean"] == pytest.approx(0.65)
    assert table.loc["lora", "mmlu_accuracy_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert table.loc["lora", "n_runs"] == 2
    assert table.loc["base", "knowledge_retained_mean"] == 0
    assert pd.isna(table.loc["base", "knowledge_retained_std"])
    assert list(table.columns[:5]) == ["setting", "n_runs", "knowledge_retained_mean",
                                       "instruction_exact_match_mean", "mmlu_accuracy_mean"]


def test_aggregate_without_base_fails(tmp_path):
    files = fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)

    with pytest.raises(UserError, match="base model"):
        aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")


def test_aggregate_names_broken_file(tmp_path):
    files = fake_base(tmp_path, 0.8, 0.0)
    files[0].write_text("{not json")

    with pytest.raises(UserError, match="mmlu.json is not valid JSON"):
        aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")


def fake_visual_run(root, method, setting, seed, cider, scienceqa_percent):
    run = root / "visual" / method / setting / f"seed{seed}"
    write(run / "spec.json", {"task": "visual", "method": method, "setting": setting, "seed": seed,
                              "hyperparameters": {"rank": 4, "learning_rate": 0.001}})
    write(run / "train.json", {**FIGURES, "trainable_parameters": 150})
    metrics = {"BLEU-4": 20.0, "ROUGE-L": 40.0, "CIDEr": cider, "SPICE": None}
    groups = {"NAT": 50.0, "G1-6": scienceqa_percent, "G7-12": None}
    return [
        write(run / "eval" / "captions.json", {"evaluation": "captions", "run": str(run), "metrics": metrics}),
        write(run / "eval" / "scienceqa.json", {"evaluation": "scienceqa", "run": str(run),
                                                "accuracy": scienceqa_percent, "groups": groups}),
    ]


def test_visual_run_joins_text_row_of_same_setting(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "excitor", "r4", 0, 0.78, 0.40)
    files += fake_visual_run(tmp_path, "excitor", "r4", 0, cider=95.5, scienceqa_percent=62.5)
    files += fake_visual_run(tmp_path, "excitor", "r4_vis-rows", 0, cider=80.0, scienceqa_percent=50.0)
    floor = {"evaluation": "captions", "run": "most_common_caption", "metrics": {"CIDEr": 12.0, "SPICE": None}}
    files.append(write(tmp_path / "floor" / "captions.json", floor))

    aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("setting")

    assert list(runs["method"]) == ["base", "most_common_caption", "excitor", "excitor"]
    joined = runs.loc["r4"]
    assert joined["mmlu_accuracy"] == pytest.approx(0.78)
    assert joined["caption_cider"] == pytest.approx(95.5)
    assert joined["scienceqa_accuracy"] == pytest.approx(0.625)
    assert joined["scienceqa_g1_6"] == pytest.approx(0.625)
    assert pd.isna(joined["scienceqa_g7_12"])
    assert pd.isna(joined["caption_spice"])
    assert joined["trainable_parameters"] == 100
    assert joined["visual_trainable_parameters"] == 150
    assert pd.isna(runs.loc["r4_vis-rows", "mmlu_accuracy"])
    assert runs.loc["most_common_caption", "caption_cider"] == pytest.approx(12.0)
    table = pd.read_csv(tmp_path / "table.csv")
    assert "caption_cider_mean" in list(table.columns[:8])


# ----------------------------------------------------------------------------- item-level results


def mmlu_items(correct):
    return [{"subject": "astronomy", "index": index, "correct": value} for index, value in enumerate(correct)]


def instruction_items(correct):
    return [{"index": index, "expected": "x", "answer": "x" if value else "y", "correct": value}
            for index, value in enumerate(correct)]


def item_run(root, method, setting, seed, mmlu_correct, instruction_correct, *, default=None, figures=None):
    """Write a text run whose evaluations carry per_item results; the aggregates are their means."""
    run = root / "runs" / method / setting / f"seed{seed}"
    spec = {"method": method, "setting": setting, "seed": seed, "hyperparameters": {"rank": 4}}
    if default is not None:
        spec["default"] = default
    write(run / "spec.json", spec)
    write(run / "train.json", figures or FIGURES)
    mmlu = {"evaluation": "mmlu", "run": str(run), "accuracy": sum(mmlu_correct) / len(mmlu_correct),
            "per_item": mmlu_items(mmlu_correct)}
    instructions = {"evaluation": "instructions", "run": str(run),
                    "exact_match": sum(instruction_correct) / len(instruction_correct),
                    "per_item": instruction_items(instruction_correct)}
    return [write(run / "eval" / "mmlu.json", mmlu), write(run / "eval" / "instructions.json", instructions)]


def item_base(root, mmlu_correct, instruction_correct):
    mmlu = {"evaluation": "mmlu", "run": "base", "accuracy": sum(mmlu_correct) / len(mmlu_correct),
            "per_item": mmlu_items(mmlu_correct)}
    instructions = {"evaluation": "instructions", "run": "base",
                    "exact_match": sum(instruction_correct) / len(instruction_correct),
                    "per_item": instruction_items(instruction_correct)}
    return [write(root / "base" / "mmlu.json", mmlu), write(root / "base" / "instructions.json", instructions)]


def item_visual_run(root, method, setting, seed, cider_by_image, scienceqa_correct, *, default=None):
    run = root / "visual" / method / setting / f"seed{seed}"
    spec = {"task": "visual", "method": method, "setting": setting, "seed": seed, "hyperparameters": {"rank": 4}}
    if default is not None:
        spec["default"] = default
    write(run / "spec.json", spec)
    write(run / "train.json", FIGURES)
    per_image = {str(image): {"CIDEr": cider, "BLEU-4": 0.0, "caption": "a cat"} for image, cider in cider_by_image.items()}
    captions = {"evaluation": "captions", "run": str(run), "per_item": per_image,
                "metrics": {"CIDEr": sum(cider_by_image.values()) / len(cider_by_image), "SPICE": None}}
    problems = [{"pid": f"p{index}", "groups": ["NAT"], "predicted": 0, "answer": 0 if value else 1,
                 "correct": value, "output": "A"} for index, value in enumerate(scienceqa_correct)]
    scienceqa = {"evaluation": "scienceqa", "run": str(run), "per_item": problems, "groups": {"NAT": None},
                 "accuracy": 100 * sum(scienceqa_correct) / len(scienceqa_correct)}
    return [write(run / "eval" / "captions.json", captions), write(run / "eval" / "scienceqa.json", scienceqa)]


def run_aggregate(root, files, **options):
    out = root / "results"
    aggregate(files, out / "runs.csv", out / "table.csv", comparisons_csv=out / "comparisons.csv",
              timings_csv=out / "timings.csv", **options)
    table = pd.read_csv(out / "table.csv").set_index(["method", "setting"])
    return out, table


def test_interval_of_base_row_from_items_only(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0, 0, 0])

    _, table = run_aggregate(tmp_path, files)
    base = table.loc[("base", "base")]

    assert base["mmlu_accuracy_mean"] == pytest.approx(0.5)
    assert base["mmlu_accuracy_ci_low"] == pytest.approx(0.0)
    assert base["mmlu_accuracy_ci_high"] == pytest.approx(1.0)
    assert base["instruction_exact_match_ci_low"] == pytest.approx(0.0)
    assert base["instruction_exact_match_ci_high"] == pytest.approx(0.75)
    # The base row minus itself is 0 on every item.
    assert base["knowledge_retained_ci_low"] == pytest.approx(0.0)
    assert base["knowledge_retained_ci_high"] == pytest.approx(0.0)


def test_interval_over_two_identical_seeds(tmp_path):
    files = item_base(tmp_path, [1, 1, 1, 1], [0, 0, 0, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [1, 1, 0, 0], [1, 1, 1, 1])
    files += item_run(tmp_path, "lora", "r4", 1, [1, 1, 0, 0], [1, 1, 1, 1])

    _, table = run_aggregate(tmp_path, files)
    lora = table.loc[("lora", "r4")]

    # Items [1, 1, 0, 0]: resample mean k/4 with k ~ Binomial(4, 1/2), and P(0) = P(4) = 1/16 > 2.5 %.
    assert lora["mmlu_accuracy_mean"] == pytest.approx(0.5)
    assert lora["mmlu_accuracy_ci_low"] == pytest.approx(0.0)
    assert lora["mmlu_accuracy_ci_high"] == pytest.approx(1.0)
    assert lora["mmlu_accuracy_std"] == pytest.approx(0.0)
    # Every item is 1 for both seeds and 0 for the base model: a gain of exactly 1 in every replicate.
    assert lora["instruction_gain_mean"] == pytest.approx(1.0)
    assert lora["instruction_gain_ci_low"] == pytest.approx(1.0)
    assert lora["instruction_gain_ci_high"] == pytest.approx(1.0)
    # MMLU: the base model scores 1 on all 4 items and lora on 2, so the loss is between -1 and 0.
    assert lora["knowledge_retained_mean"] == pytest.approx(-0.5)
    assert lora["knowledge_retained_ci_low"] == pytest.approx(-1.0)
    assert lora["knowledge_retained_ci_high"] == pytest.approx(0.0)


def test_interval_columns_follow_mean(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])

    out, _ = run_aggregate(tmp_path, files)
    columns = list(pd.read_csv(out / "table.csv").columns)

    start = columns.index("mmlu_accuracy_mean")
    assert columns[start + 1 : start + 3] == ["mmlu_accuracy_ci_low", "mmlu_accuracy_ci_high"]
    start = columns.index("knowledge_retained_mean")
    assert columns[start + 1 : start + 3] == ["knowledge_retained_ci_low", "knowledge_retained_ci_high"]
    assert "instruction_gain_ci_low" in columns
    assert "instruction_gain_std" in columns


def test_single_item_single_seed_interval(tmp_path):
    files = item_base(tmp_path, [1], [0])

    _, table = run_aggregate(tmp_path, files)
    base = table.loc[("base", "base")]

    assert base["mmlu_accuracy_ci_low"] == pytest.approx(1.0)
    assert base["mmlu_accuracy_ci_high"] == pytest.approx(1.0)
    assert base["instruction_exact_match_ci_high"] == pytest.approx(0.0)


def test_caption_and_scienceqa_intervals(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])
    files += item_visual_run(tmp_path, "excitor", "r4", 0, {7: 100.0, 9: 50.0}, [1, 1, 1])

    _, table = run_aggregate(tmp_path, files)
    excitor = table.loc[("excitor", "r4")]

    # CIDEr stays x100: the mean of 100 and 50, and resamples of two images give 50, 75 or 100.
    assert excitor["caption_cider_mean"] == pytest.approx(75.0)
    assert excitor["caption_cider_ci_low"] == pytest.approx(50.0)
    assert excitor["caption_cider_ci_high"] == pytest.approx(100.0)
    assert excitor["scienceqa_accuracy_mean"] == pytest.approx(1.0)
    assert excitor["scienceqa_accuracy_ci_low"] == pytest.approx(1.0)
    assert pd.isna(excitor["mmlu_accuracy_mean"])


def test_different_items_within_setting_fail(tmp_path):
    files = item_base(tmp_path, [1, 0, 1], [1, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [1, 0, 1], [1, 0])
    files += item_run(tmp_path, "lora", "r4", 1, [1, 0], [1, 0])

    with pytest.raises(UserError) as error:
        run_aggregate(tmp_path, files)

    message = str(error.value)
    assert "lora/r4/seed1/eval/mmlu.json" in message
    assert "lora/r4/seed0/eval/mmlu.json" in message
    assert "('astronomy', '2')" in message
    assert "\n" not in message


def test_different_items_from_base_fail(tmp_path):
    files = item_base(tmp_path, [1, 0, 1], [1, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [1, 0], [1, 0])

    with pytest.raises(UserError, match="base/mmlu.json"):
        run_aggregate(tmp_path, files)


def test_repeated_item_fails(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])
    evaluation = json.loads(files[0].read_text())
    evaluation["per_item"].append(evaluation["per_item"][0])
    files[0].write_text(json.dumps(evaluation))

    with pytest.raises(UserError, match="twice"):
        run_aggregate(tmp_path, files)


def test_run_without_per_item_has_no_interval(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [1, 0], [1, 0])
    files += fake_run(tmp_path, "lora", "r4", 1, 0.5, 0.5)

    _, table = run_aggregate(tmp_path, files)

    assert table.loc[("lora", "r4"), "mmlu_accuracy_mean"] == pytest.approx(0.5)
    assert pd.isna(table.loc[("lora", "r4"), "mmlu_accuracy_ci_low"])
    assert table.loc[("base", "base"), "mmlu_accuracy_ci_high"] == pytest.approx(1.0)


def test_invalid_confidence_fails(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])

    with pytest.raises(UserError, match="confidence 1.5 is invalid"):
        run_aggregate(tmp_path, files, confidence=1.5)


# ----------------------------------------------------------------------------- relative change and timings


def test_mmlu_relative_change(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)
    files += fake_run(tmp_path, "lora", "r4", 1, 0.60, 0.70)

    out, table = run_aggregate(tmp_path, files)
    runs = pd.read_csv(out / "runs.csv")

    # (0.70 - 0.80) / 0.80 = -12.5 %, (0.60 - 0.80) / 0.80 = -25 %. Mean -18.75, sample std 6.25 * sqrt(2).
    assert list(runs["mmlu_relative_change"]) == pytest.approx([0.0, -12.5, -25.0])
    assert table.loc[("lora", "r4"), "mmlu_relative_change_mean"] == pytest.approx(-18.75)
    assert table.loc[("lora", "r4"), "mmlu_relative_change_std"] == pytest.approx(8.838835, abs=1e-5)


def test_timings_move_to_own_file(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)
    files += fake_visual_run(tmp_path, "lora", "r4", 0, cider=90.0, scienceqa_percent=50.0)

    out, table = run_aggregate(tmp_path, files)
    runs = pd.read_csv(out / "runs.csv")
    timings = pd.read_csv(out / "timings.csv")

    for column in ("train_seconds", "tokens_per_second", "peak_memory_mb", "visual_train_seconds"):
        assert column not in runs, column
        assert f"{column}_mean" not in table, column
    assert list(timings.columns) == ["method", "setting", "seed", "train_seconds", "tokens_per_second",
                                     "peak_memory_mb", "visual_train_seconds", "visual_tokens_per_second",
                                     "visual_peak_memory_mb"]
    assert list(timings["method"]) == ["lora"]
    assert timings.loc[0, "tokens_per_second"] == 50.0
    assert runs.loc[1, "final_loss"] == 0.5
    assert runs.loc[1, "visual_adapter_bytes"] == 400


def test_rerun_is_byte_identical(tmp_path):
    def aggregate_into(out, seconds):
        figures = {**FIGURES, "train_seconds": seconds, "tokens_per_second": 100 / seconds, "peak_memory_mb": seconds}
        files = item_base(tmp_path / "in", [1, 0, 1, 1], [0, 1, 0, 0])
        files += item_run(tmp_path / "in", "excitor", "r4", 0, [1, 0, 1, 0], [1, 1, 0, 1], figures=figures)
        files += item_run(tmp_path / "in", "excitor", "r4", 1, [1, 1, 1, 0], [1, 0, 0, 1], figures=figures)
        files += item_run(tmp_path / "in", "lora", "r8", 0, [0, 0, 1, 1], [1, 1, 1, 0], figures=figures)
        aggregate(files, out / "runs.csv", out / "table.csv", comparisons_csv=out / "comparisons.csv",
                  timings_csv=out / "timings.csv", table_md=out / "table.md", table_tex=out / "table.tex",
                  resamples=300, permutations=300)

    # The second aggregation reads training figures of a slower machine.
    aggregate_into(tmp_path / "first", seconds=1.0)
    aggregate_into(tmp_path / "second", seconds=3.7)

    for name in ("runs.csv", "table.csv", "comparisons.csv", "table.md", "table.tex"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    assert (tmp_path / "first" / "timings.csv").read_bytes() != (tmp_path / "second" / "timings.csv").read_bytes()
    assert "[" in (tmp_path / "first" / "table.md").read_text()


# ----------------------------------------------------------------------------- comparisons


def test_comparison_of_identical_runs_has_p_one(tmp_path):
    files = item_base(tmp_path, [1, 0, 1], [1, 0, 0])
    files += item_run(tmp_path, "excitor", "r4", 0, [1, 1, 0], [1, 0, 1])
    files += item_run(tmp_path, "lora", "r4", 0, [1, 1, 0], [1, 0, 1])

    out, _ = run_aggregate(tmp_path, files)
    comparisons = pd.read_csv(out / "comparisons.csv").set_index(["metric", "baseline"])
    row = comparisons.loc[("mmlu_accuracy", "lora")]

    assert row["difference"] == 0
    assert row["ci_low"] == 0
    assert row["ci_high"] == 0
    assert row["p_value"] == 1
    assert row["p_value_sign_flip"] == 1
    assert row["n_items"] == 3
    assert row["excitor_mean"] == pytest.approx(2 / 3)


def test_comparison_columns_and_order(tmp_path):
    files = item_base(tmp_path, [0, 0, 0, 0], [0, 0, 0, 0])
    files += item_run(tmp_path, "excitor", "r4", 0, [1, 1, 1, 1], [1, 0, 1, 0])
    files += item_run(tmp_path, "excitor", "r4", 1, [1, 1, 1, 1], [1, 0, 1, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [0, 0, 0, 0], [0, 0, 0, 0])
    files += item_run(tmp_path, "adapter", "p10", 0, [0, 0, 0, 0], [0, 0, 0, 0])

    out, _ = run_aggregate(tmp_path, files)
    comparisons = pd.read_csv(out / "comparisons.csv")

    assert list(comparisons.columns) == [
        "metric", "excitor_setting", "baseline", "baseline_setting", "excitor_mean", "baseline_mean",
        "difference", "ci_low", "ci_high", "p_value", "p_value_sign_flip", "n_items", "n_seeds_excitor",
        "n_seeds_baseline", "test",
    ]
    assert list(comparisons["metric"]) == ["mmlu_accuracy"] * 3 + ["instruction_exact_match"] * 3
    assert list(comparisons["baseline"]) == ["base", "adapter", "lora"] * 2
    mmlu_lora = comparisons.iloc[2]
    assert mmlu_lora["difference"] == pytest.approx(1.0)
    assert mmlu_lora["ci_low"] == pytest.approx(1.0)
    assert mmlu_lora["n_seeds_excitor"] == 2
    assert mmlu_lora["n_seeds_baseline"] == 1
    # All four item differences are +1: only the all-plus and all-minus sign patterns reach
    # |sum| = 4, so p = 2 / 16 = 0.125 up to the Monte Carlo error of 10000 permutations.
    assert mmlu_lora["p_value_sign_flip"] == pytest.approx(0.125, abs=0.012)
    # Every replicate difference is 1, so none lies at or below 0: p = 2 / (2000 resamples + 1).
    assert mmlu_lora["p_value"] == pytest.approx(2 / 2001)
    assert "bootstrap" in mmlu_lora["test"]
    assert "sign flip" in mmlu_lora["test"]


def test_comparison_uses_marked_default_setting(tmp_path):
    files = item_base(tmp_path, [0, 0], [0, 0])
    files += item_run(tmp_path, "excitor", "a_small", 0, [0, 0], [0, 0])
    files += item_run(tmp_path, "excitor", "b_large", 0, [1, 1], [1, 1], default=True)
    files += item_run(tmp_path, "lora", "a_small", 0, [1, 0], [1, 0])
    files += item_run(tmp_path, "lora", "b_large", 0, [1, 1], [1, 1])

    out, _ = run_aggregate(tmp_path, files)
    comparisons = pd.read_csv(out / "comparisons.csv")
    lora = comparisons[(comparisons["baseline"] == "lora") & (comparisons["metric"] == "mmlu_accuracy")].iloc[0]

    # Excitor's marked default is b_large. No lora spec says "default", so the first sorted setting counts.
    assert lora["excitor_setting"] == "b_large"
    assert lora["baseline_setting"] == "a_small"
    assert lora["difference"] == pytest.approx(0.5)


def test_comparison_skips_metric_one_side_lacks(tmp_path):
    files = item_base(tmp_path, [0, 1], [0, 1])
    files += item_visual_run(tmp_path, "excitor", "r4", 0, {1: 80.0, 2: 40.0}, [1, 0])
    files += item_visual_run(tmp_path, "lora", "r4", 0, {1: 60.0, 2: 40.0}, [0, 0])

    out, _ = run_aggregate(tmp_path, files)
    comparisons = pd.read_csv(out / "comparisons.csv")

    assert list(comparisons["metric"]) == ["caption_cider", "scienceqa_accuracy"]
    assert list(comparisons["baseline"]) == ["lora", "lora"]
    assert comparisons.loc[0, "difference"] == pytest.approx(10.0)


def test_two_marked_defaults_fail(tmp_path):
    files = item_base(tmp_path, [0, 1], [0, 1])
    files += item_run(tmp_path, "excitor", "a", 0, [0, 1], [0, 1], default=True)
    files += item_run(tmp_path, "excitor", "b", 0, [0, 1], [0, 1], default=True)

    with pytest.raises(UserError, match="mark only one setting"):
        run_aggregate(tmp_path, files)


def test_runs_from_different_inputs_are_not_merged(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)
    files += fake_run(tmp_path, "lora", "r4", 1, 0.60, 0.70)
    for seed, digest in ((0, "sha256:aaa"), (1, "sha256:aaa")):
        write(tmp_path / "runs" / "lora" / "r4" / f"seed{seed}" / "provenance.json",
              {"inputs": {"train_data": {"path": "train.json", "sha256": digest}}})
    aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")

    write(tmp_path / "runs" / "lora" / "r4" / "seed1" / "provenance.json",
          {"inputs": {"train_data": {"path": "train.json", "sha256": "sha256:bbb"}}})
    with pytest.raises(UserError, match="different versions of train_data"):
        aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv")


def test_provenance_table_lists_each_run(tmp_path):
    files = fake_base(tmp_path, 0.80, 0.0)
    files += fake_run(tmp_path, "lora", "r4", 0, 0.70, 0.50)
    record = {"seed": 0, "spec": {"method": "lora", "setting": "r4"}, "git": {"commit": "abc", "dirty": False},
              "packages": {"torch": "2.13.0"}, "inputs": {"train_data": {"sha256": "sha256:" + "f" * 64}}}
    write(tmp_path / "runs" / "lora" / "r4" / "seed0" / "provenance.json", record)

    aggregate(files, tmp_path / "runs.csv", tmp_path / "table.csv", provenance_csv=tmp_path / "provenance.csv")
    table = pd.read_csv(tmp_path / "provenance.csv", dtype=str)

    assert list(table["method"]) == ["lora"]
    assert table.loc[0, "task"] == "text"
    assert table.loc[0, "git_commit"] == "abc"
    assert table.loc[0, "package_torch"] == "2.13.0"
    assert table.loc[0, "input_train_data"] == "f" * 12


def test_large_counts_are_written_exactly(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])
    files += item_run(tmp_path, "full", "default", 0, [1, 0], [1, 0],
                      figures={**FIGURES, "trainable_parameters": 1000576, "adapter_bytes": 4007364})

    out, _ = run_aggregate(tmp_path, files)

    # The base row leaves these cells empty, so pandas stores them as floats; six significant digits
    # would write 1.00058e+06.
    runs = (out / "runs.csv").read_text()
    assert ",1000576," in runs
    assert ",4007364," in runs


def test_file_order_does_not_change_outputs(tmp_path):
    files = item_base(tmp_path, [1, 0, 1], [1, 0, 0])
    files += item_run(tmp_path, "excitor", "r4", 0, [1, 1, 0], [1, 0, 1])
    files += item_visual_run(tmp_path, "excitor", "r4", 0, {1: 40.0, 2: 60.0}, [1, 0])
    files += item_run(tmp_path, "lora", "r4", 0, [0, 1, 0], [0, 0, 1])

    forward, _ = run_aggregate(tmp_path / "forward", files)
    backward, _ = run_aggregate(tmp_path / "backward", list(reversed(files)))

    for name in ("runs.csv", "table.csv", "comparisons.csv"):
        assert (forward / name).read_bytes() == (backward / name).read_bytes(), name


def test_random_choice_is_a_reference_row(tmp_path):
    files = item_base(tmp_path, [1, 0], [1, 0])
    files += item_visual_run(tmp_path, "excitor", "r4", 0, {1: 40.0, 2: 60.0}, [1, 1, 0, 1])
    chance = [{"pid": f"p{index}", "groups": ["NAT"], "predicted": None, "answer": 0, "correct": 0.25,
               "output": None} for index in range(4)]
    files.append(write(tmp_path / "random_choice.json", {
        "evaluation": "scienceqa", "run": "random_choice", "per_item": chance, "groups": {"NAT": 25.0},
        "accuracy": 25.0}))

    out, table = run_aggregate(tmp_path, files)

    assert table.loc[("random_choice", "random_choice"), "scienceqa_accuracy_mean"] == pytest.approx(0.25)
    comparisons = pd.read_csv(out / "comparisons.csv").set_index(["metric", "baseline"])
    # Excitor is right on 3 of 4 problems, against an expected 1/4 on each: a difference of 0.5.
    assert comparisons.loc[("scienceqa_accuracy", "random_choice"), "difference"] == pytest.approx(0.5)
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["method"][:2]) == ["base", "random_choice"]
