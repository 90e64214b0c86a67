"""Tests for the efficiency benchmark: ratios, the CSV writer and the memory estimate on hand-made figures.

No test asserts a measured time; one runs the whole benchmark on a tiny random model to check its record.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from excitor_bench.benchmark import (EFFICIENCY_COLUMNS, BenchmarkSettings, default_method_settings, efficiency_rows,
                                     run_benchmark, saved_activation_bytes, train_state_bytes_estimate,
                                     write_efficiency_csv)
from excitor_bench.cli import main
from excitor_bench.config import load_config
from excitor_bench.errors import UserError
from excitor_bench.grid import Setting

REPOSITORY = Path(__file__).resolve().parent.parent
MICRO_CONFIG = REPOSITORY / ".test" / "config" / "config.yaml"
SETTINGS = {"excitor": "r4", "lora": "r2", "full": "default"}
STEP_SECONDS = {"excitor": 0.3, "lora": 0.4, "full": 0.8}
TOKENS_PER_SECOND = {"base": 1000.0, "excitor": 950.0, "lora": 1000.0, "full": 500.0}


def hand_made_rows(step_seconds=STEP_SECONDS, tokens_per_second=TOKENS_PER_SECOND) -> list[dict]:
    return efficiency_rows(SETTINGS, {"excitor": 770, "lora": 672, "full": 93408}, step_seconds, tokens_per_second,
                           {"excitor": 0.5, "lora": 0.5, "full": 1.5}, {})


def test_rows_ratios_hand_made():
    rows = {row["method"]: row for row in hand_made_rows()}

    # 0.3 / 0.4 and 950 / 1000; full: 0.8 / 0.4 and 500 / 1000.
    assert rows["excitor"]["train_step_ratio_to_lora"] == pytest.approx(0.75)
    assert rows["excitor"]["generation_ratio_to_base"] == pytest.approx(0.95)
    assert rows["full"]["train_step_ratio_to_lora"] == pytest.approx(2.0)
    assert rows["full"]["generation_ratio_to_base"] == pytest.approx(0.5)
    assert rows["lora"]["train_step_ratio_to_lora"] == pytest.approx(1.0)


def test_rows_order_and_base_row():
    rows = hand_made_rows()

    assert [row["method"] for row in rows] == ["excitor", "lora", "full", "base"]
    assert [row["setting"] for row in rows] == ["r4", "r2", "default", "base"]
    base = rows[-1]
    assert base["trainable_parameters"] == 0
    assert base["generation_tokens_per_second"] == 1000.0
    assert base["generation_ratio_to_base"] == 1.0
    assert base["train_step_seconds"] is None
    assert base["train_step_ratio_to_lora"] is None


def test_rows_without_lora_have_no_step_ratio():
    step_seconds = {"excitor": 0.3, "full": 0.8}

    rows = efficiency_rows({"excitor": "r4", "full": "default"}, {}, step_seconds, TOKENS_PER_SECOND, {}, {})

    assert [row["train_step_ratio_to_lora"] for row in rows] == [None, None, None]
    assert rows[0]["generation_ratio_to_base"] == pytest.approx(0.95)


def test_csv_writer_hand_made(tmp_path):
    out = tmp_path / "results" / "efficiency.csv"

    write_efficiency_csv(hand_made_rows(), out)

    with out.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == EFFICIENCY_COLUMNS
    header = lines[0]
    excitor = dict(zip(header, lines[1]))
    assert excitor["method"] == "excitor"
    assert excitor["trainable_parameters"] == "770"
    assert excitor["train_step_seconds"] == "0.3"
    assert excitor["train_step_ratio_to_lora"] == "0.75"
    assert excitor["generation_ratio_to_base"] == "0.95"
    assert excitor["train_peak_memory_mb"] == ""  # not measured on a CPU
    base = dict(zip(header, lines[-1]))
    assert base["train_step_seconds"] == ""
    assert base["generation_ratio_to_base"] == "1"
    assert len(lines) == 5


def test_csv_writer_rounds_to_six_digits(tmp_path):
    out = tmp_path / "efficiency.csv"
    rows = efficiency_rows({"lora": "r2"}, {"lora": 1}, {"lora": 1 / 3}, {"base": 3.0, "lora": 1.0}, {}, {})

    write_efficiency_csv(rows, out)

    lora = dict(zip(EFFICIENCY_COLUMNS, out.read_text().splitlines()[1].split(",")))
    assert lora["train_step_seconds"] == "0.333333"
    assert lora["generation_ratio_to_base"] == "0.333333"


def test_state_estimate_of_linear_layer():
    layer = nn.Linear(4, 3)  # 12 weights and 3 biases, float32
    layer.bias.requires_grad_(False)

    # 15 parameters x 4 bytes, plus gradient and two AdamW moments of the 12 trainable weights.
    assert train_state_bytes_estimate(layer) == 15 * 4 + 3 * 12 * 4


def test_state_estimate_of_frozen_model():
    layer = nn.Linear(2, 2).requires_grad_(False)

    assert train_state_bytes_estimate(layer) == 6 * 4


class TwoLayerScorer(nn.Module):
    def __init__(self, first_trainable: bool):
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.second = nn.Linear(8, 3)
        self.first.requires_grad_(first_trainable)

    def forward(self, inputs):
        return self.second(torch.relu(self.first(inputs))).sum()


@pytest.mark.parametrize(("first_trainable", "expected"), [
    # Only the second layer trains: it keeps its input, the ReLU output of 2 x 8 float32 = 64 bytes.
    (False, 64),
    # The first layer also keeps its input, 2 x 4 x 4 = 32 bytes. The ReLU saves its output for its own
    # backward, the same storage the second layer keeps, so it counts once.
    (True, 96),
])
def test_saved_activations_of_two_layers(first_trainable, expected):
    inputs = torch.randn(2, 4)

    assert saved_activation_bytes(TwoLayerScorer(first_trainable), {"inputs": inputs}) == expected


def test_saved_activations_of_frozen_model():
    model = TwoLayerScorer(first_trainable=False).requires_grad_(False)

    assert saved_activation_bytes(model, {"inputs": torch.randn(2, 4)}) == 0


def test_memory_ratio_uses_state_and_activations():
    rows = efficiency_rows({"excitor": "r4", "lora": "r2"}, {}, {}, {}, {"excitor": 2.0, "lora": 3.0}, {},
                           activation_mb={"excitor": 1.0, "lora": 5.0})

    # (2 + 1) / (3 + 5) on the CPU; a measured CUDA peak takes precedence.
    assert rows[0]["train_memory_ratio_to_lora"] == pytest.approx(3 / 8)
    assert rows[1]["train_memory_ratio_to_lora"] == 1.0
    assert rows[0]["train_activation_mb"] == 1.0
    on_gpu = efficiency_rows({"excitor": "r4", "lora": "r2"}, {}, {}, {}, {"excitor": 2.0, "lora": 3.0},
                             {"excitor": 10.0, "lora": 40.0}, activation_mb={"excitor": 1.0, "lora": 5.0})
    assert on_gpu[0]["train_memory_ratio_to_lora"] == pytest.approx(0.25)


def test_settings_from_dict():
    settings = BenchmarkSettings.from_dict({"rounds": 3, "new_tokens": 8})

    assert settings.rounds == 3
    assert settings.new_tokens == 8
    assert settings.batch_size == BenchmarkSettings().batch_size


def test_settings_unknown_key():
    with pytest.raises(UserError, match="efficiency.round"):
        BenchmarkSettings.from_dict({"round": 3}, "config.yaml")


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True])
def test_settings_invalid_size(value):
    with pytest.raises(UserError, match="whole number"):
        BenchmarkSettings.from_dict({"rounds": value})


def test_default_settings_of_micro_config():
    settings = default_method_settings(load_config(MICRO_CONFIG), str(MICRO_CONFIG))

    # The micro config's defaults: Excitor rank 4 (ablation over rank), LoRA rank 2, prefix and
    # LLaMA-Adapter with 4 prompts; full fine-tuning has no axis.
    assert [(s.method, s.setting_id) for s in settings] == [("excitor", "r4"), ("lora", "r2"), ("prefix", "k4"),
                                                            ("llama_adapter", "k4"), ("full", "default")]
    assert settings[0].hyperparameters["rank"] == 4


TINY_MODEL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 32, "max_position_embeddings": 64, "vocab_size": 64}
TINY_RUN = BenchmarkSettings(rounds=1, steps_per_round=1, batch_size=2, sequence_length=8, generation_batch=1,
                             prompt_length=4, new_tokens=4, device="cpu")


def test_run_keeps_record_keys():
    methods = [Setting("excitor", "r2", {"rank": 2, "prompt_length": 2, "num_layers": 1}),
               Setting("lora", "r2", {"rank": 2})]

    result = run_benchmark(None, TINY_MODEL, methods, TINY_RUN)

    for key in ("model", "machine", "setup", "training_step_seconds", "excitor_to_lora_step_ratio",
                "generation_tokens_per_second", "excitor_to_base_generation_ratio"):
        assert key in result, key
    assert set(result["training_step_seconds"]) == {"excitor", "lora"}
    assert set(result["generation_tokens_per_second"]) == {"base", "excitor", "lora"}
    assert [row["method"] for row in result["efficiency"]] == ["excitor", "lora", "base"]
    # LoRA r2 on q_proj and v_proj of 2 layers: q is 16 -> 16 and v is 16 -> 8 (one KV head of 8),
    # so each layer trains 2 * (16 + 16) + 2 * (16 + 8) = 112 parameters.
    assert result["trainable_parameters"]["lora"] == 2 * 112
    assert result["train_peak_memory_mb"] is None  # CPU
    # Both methods keep activations for backward, LoRA in both layers and Excitor in its top one.
    assert result["train_activation_mb"]["lora"] > result["train_activation_mb"]["excitor"] > 0
    json.dumps(result)  # the record must be valid JSON


def test_unknown_method_is_rejected():
    with pytest.raises(UserError, match="unknown method 'dora'"):
        run_benchmark(None, TINY_MODEL, [Setting("dora", "r2", {})], TINY_RUN)


def test_command_plot_needs_csv(tmp_path, capsys):
    status = main(["benchmark", "--plot", str(tmp_path / "e.png"), "--out", str(tmp_path / "b.json")])

    assert status == 2
    assert "--csv" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_command_rejects_bad_methods(tmp_path, capsys):
    status = main(["benchmark", "--methods", '{"lora": 2}', "--out", str(tmp_path / "b.json")])

    assert status == 2
    assert "--methods" in capsys.readouterr().err


def test_command_writes_csv_and_plot(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"base_model": {k: v for k, v in TINY_MODEL.items() if k != "vocab_size"}}))
    methods = json.dumps({"lora": {"setting": "r2", "hyperparameters": {"rank": 2}}})
    settings = json.dumps({"rounds": 1, "steps_per_round": 1, "batch_size": 2, "sequence_length": 8,
                           "generation_batch": 1, "prompt_length": 4, "new_tokens": 4, "device": "cpu"})

    status = main(["benchmark", "--config", str(config), "--methods", methods, "--settings", settings,
                   "--out", str(tmp_path / "b.json"), "--csv", str(tmp_path / "e.csv"),
                   "--plot", str(tmp_path / "e.png")])

    assert status == 0
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert [row["method"] for row in rows] == ["lora", "base"]
    assert rows[0]["train_step_ratio_to_lora"] == "1"
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forward_ratio_and_adapter_size_columns():
    rows = efficiency_rows({"lora": "r2"}, {"lora": 1}, {"lora": 0.5}, {"base": 2.0, "lora": 1.0}, {}, {},
                           forward_seconds={"base": 0.2, "lora": 0.3}, adapter_bytes={"lora": 4096})
    lora, base = rows
    # Hand figures: 0.3 s against the base model's 0.2 s is 1.5 times; the base row is the reference.
    assert lora["forward_ratio_to_base"] == pytest.approx(1.5)
    assert lora["adapter_bytes"] == 4096
    assert base["forward_ratio_to_base"] == 1.0
    assert base["adapter_bytes"] is None
