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
