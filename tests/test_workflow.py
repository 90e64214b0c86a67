"""The whole workflow on the micro config, run as a user runs it: through the snakemake command."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPOSITORY = Path(__file__).resolve().parent.parent
MICRO_CONFIG = REPOSITORY / ".test" / "config" / "config.yaml"

pytestmark = pytest.mark.slow
# Excitor's visual setting: the micro defaults with the config's visual.defaults (learning rate, 3 layers,
# initialisation scale) applied.
VISUAL_EXCITOR = "r4_lr0.02_l3_init_scale0.5"


def snakemake(workdir: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPOSITORY / "Snakefile"),
               "--directory", str(workdir), "--cores", "2", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, "results/table.csv", "--configfile", str(MICRO_CONFIG))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_table_has_every_method(finished_workflow):
    table = pd.read_csv(finished_workflow / "results" / "table.csv")

    # The micro config has Excitor at ranks 2 and 4, and with images at its visual defaults with the
    # visual prompts added or as rows. Each baseline has one setting, plus the base row and the floors
    # of captions and ScienceQA.
    assert sorted(table["method"]) == ["base", "excitor", "excitor", "excitor", "excitor", "full", "llama_adapter",
                                       "lora", "most_common_caption", "prefix", "random_choice"]
    assert set(table.loc[table["method"] == "excitor", "hp_rank"]) == {2, 4}
    visual_only = ["most_common_caption", "random_choice", VISUAL_EXCITOR, f"{VISUAL_EXCITOR}_vis-rows"]
    text_rows = table[~table["setting"].isin(visual_only)]
    for column in ("mmlu_accuracy_mean", "instruction_exact_match_mean", "knowledge_retained_mean"):
        assert text_rows[column].notna().all(), column


def test_table_has_visual_columns_for_every_method(finished_workflow):
    table = pd.read_csv(finished_workflow / "results" / "table.csv").set_index(["method", "setting"])
    visual_rows = [("excitor", VISUAL_EXCITOR), ("excitor", f"{VISUAL_EXCITOR}_vis-rows"), ("lora", "r2"),
                   ("prefix", "k4"), ("llama_adapter", "k4"), ("full", "default"), ("base", "base")]

    for row in visual_rows:
        assert table.loc[row, "caption_cider_mean"] >= 0, row
        assert 0 <= table.loc[row, "scienceqa_accuracy_mean"] <= 1, row
    assert table.loc[("most_common_caption", "most_common_caption"), "caption_cider_mean"] >= 0
    # Every ScienceQA problem of the scenes has 2 to 5 choices, so chance lies between 1/5 and 1/2.
    assert 0.2 <= table.loc[("random_choice", "random_choice"), "scienceqa_accuracy_mean"] <= 0.5
    assert pd.isna(table.loc[("excitor", "r2"), "caption_cider_mean"]), "only default settings run with images"
    assert pd.isna(table.loc[("excitor", "r4"), "caption_cider_mean"]), "visual.defaults renamed Excitor's setting"
    retrieval = (finished_workflow / "results" / "clip" / "retrieval.json").read_text()
    assert "image_to_caption_recall_at_1" in retrieval


def test_runs_have_efficiency_figures(finished_workflow):
    runs = pd.read_csv(finished_workflow / "results" / "runs.csv")
    # The text runs: every tuned row with an MMLU score (visual-only settings have none).
    references = ["base", "most_common_caption", "random_choice"]
    tuned = runs[~runs["method"].isin(references) & runs["mmlu_accuracy"].notna()]
    visual = runs[runs["caption_cider"].notna() & (runs["method"] != "base")]

    assert len(tuned) == 6
    for column in ("trainable_parameters", "adapter_bytes", "final_loss"):
        assert (tuned[column] > 0).all(), column
    assert len(visual) == 7  # six visual runs and the caption floor
    runs_with_images = visual[visual["method"] != "most_common_caption"]
    assert (runs_with_images["visual_trainable_parameters"] > 0).all()
    full = tuned[tuned["method"] == "full"].iloc[0]
    excitor = tuned[tuned["method"] == "excitor"].iloc[0]
    assert excitor["trainable_parameters"] < full["trainable_parameters"]
    assert excitor["adapter_bytes"] < full["adapter_bytes"]

    timings = pd.read_csv(finished_workflow / "results" / "timings.csv")
    text_timings = timings[timings["train_seconds"].notna()]
    assert len(text_timings) == len(tuned)
    for column in ("train_seconds", "peak_memory_mb", "tokens_per_second"):
        assert (text_timings[column] > 0).all(), column
    assert (timings["visual_train_seconds"].dropna() > 0).sum() == len(runs_with_images)


def test_plot_is_written(finished_workflow):
    plot = finished_workflow / "results" / "plots" / "knowledge_vs_instructions.png"

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_call_has_nothing_to_do(finished_workflow):
    result = snakemake(finished_workflow, "results/table.csv", "--dry-run", "--configfile", str(MICRO_CONFIG))

    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_retraining_a_run_gives_byte_identical_results(finished_workflow):
    # Train one text run and one visual run again from scratch, then rebuild everything downstream.
    results = finished_workflow / "results"
    before = {name: (results / name).read_bytes() for name in ("runs.csv", "table.csv", "comparisons.csv")}
    targets = ["results/runs/lora/r2/seed0/train.json", "results/visual/runs/lora/r2/seed0/train.json"]

    retrain = snakemake(finished_workflow, *targets, "--force", "--configfile", str(MICRO_CONFIG))
    rebuild = snakemake(finished_workflow, "results/table.csv", "--configfile", str(MICRO_CONFIG))

    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    assert "evaluate_visual_run" in rebuild.stdout + rebuild.stderr, "the retrained runs were not evaluated again"
    for name, content in before.items():
        assert (results / name).read_bytes() == content, name


def test_rebuilt_data_and_models_are_identical(finished_workflow, tmp_path):
    # Everything a run depends on, built again in a new folder: the world and scenes, the tokenizer,
    # the pretrained base model and the tiny CLIP. With the retraining test above, this covers every stage.
    targets = ["results/base_model/config.json", "results/clip/config.json"]
    result = snakemake(tmp_path, *targets, "--configfile", str(MICRO_CONFIG))
    assert result.returncode == 0, result.stderr[-3000:]

    # These two record wall-clock seconds; everything else must match.
    timed = {"base_model/pretrain_stats.json", "clip/train.json"}
    for folder in ("world", "tokenizer", "base_model", "clip"):
        first = {path.relative_to(finished_workflow / "results"): path
                 for path in (finished_workflow / "results" / folder).rglob("*") if path.is_file()}
        second = {path.relative_to(tmp_path / "results"): path
                  for path in (tmp_path / "results" / folder).rglob("*") if path.is_file()}
        assert first.keys() == second.keys(), folder
        compared = [name for name in first if str(name) not in timed]
        assert compared, folder
        for name in compared:
            assert first[name].read_bytes() == second[name].read_bytes(), name


def test_failed_run_keeps_finished_ones(finished_workflow, tmp_path):
    # Excitor on 5 of the micro model's 3 layers cannot be built, so only that run fails.
    config = yaml.safe_load(MICRO_CONFIG.read_text())
    config["methods"]["excitor"]["ablation"]["num_layers"] = [5]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    adapter = finished_workflow / "results" / "runs" / "lora" / "r2" / "seed0" / "adapter"
    modified = adapter.stat().st_mtime

    result = snakemake(finished_workflow, "results/table.csv", "--configfile", str(broken))

    assert result.returncode != 0
    log = finished_workflow / "results" / "logs" / "train" / "excitor" / "r4_l5" / "seed0.log"
    last_line = log.read_text().strip().splitlines()[-1]
    assert last_line.startswith("error:")
    assert "num_layers" in last_line
    assert adapter.stat().st_mtime == modified


def test_misspelt_key_is_one_line(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("seedz: [0]\n")

    result = snakemake(tmp_path, "--dry-run", "--configfile", str(config))

    assert result.returncode != 0
    assert "error:" in result.stderr
    assert "'seedz'" in result.stderr
    error_line = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert str(config) in error_line
    # Only the file that sets the key is named, not the default it is merged over.
    assert "config/config.yaml" not in error_line
    assert "Traceback" not in result.stderr
