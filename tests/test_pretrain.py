"""Tests for pretraining the tiny LLaMA base model, on micro settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from excitor_bench.errors import UserError
from excitor_bench.pretrain import BaseModelSettings, PretrainSettings, pretrain
from excitor_bench.tokenizer import train_tokenizer
from excitor_bench.world import build_world
from excitor_bench.world.quick_mmlu import score_mmlu_letters

MICRO_WORLD = {
    "seed": 1,
    "kinds": 4,
    "entities_per_kind": 4,
    "attributes_per_kind": 2,
    "values_per_attribute": 4,
    "fact_documents_per_entity": 2,
    "practice_questions_per_fact": 2,
    "instruction_train_examples": 20,
}
MICRO_MODEL = {
    "vocab_size": 320,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
MICRO_PRETRAIN = {"steps": 30, "batch_size": 8, "sequence_length": 32, "learning_rate": 3e-3, "warmup": 3, "log_every": 10}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Return (world folder, tokenizer folder) built from the micro world."""
    root = tmp_path_factory.mktemp("inputs")
    build_world(MICRO_WORLD, root / "world")
    files = [root / "world" / "corpus.txt", root / "world" / "alpaca" / "train.json"]
    train_tokenizer(files, MICRO_MODEL["vocab_size"], root / "tokenizer")
    return root / "world", root / "tokenizer"


@pytest.fixture(scope="module")
def base_dir(inputs, tmp_path_factory) -> Path:
    world, tokenizer = inputs
    out = tmp_path_factory.mktemp("base")
    pretrain(MICRO_MODEL, MICRO_PRETRAIN, world / "corpus.txt", tokenizer, out, num_threads=2, progress=False)
    return out


def test_pretrain_lowers_loss(base_dir):
    stats = json.loads((base_dir / "pretrain_stats.json").read_text(encoding="utf-8"))
    assert stats["steps"] == 30
    # The first loss of an untrained model is near ln(vocab) = ln(320) = 5.77.
    assert 5.0 < stats["first_loss"] < 6.5
    assert stats["final_loss"] < stats["first_loss"] - 1.0
    assert stats["tokens_per_s"] > 0


def test_pretrain_deterministic(inputs, base_dir, tmp_path):
    world, tokenizer = inputs
    pretrain(MICRO_MODEL, MICRO_PRETRAIN, world / "corpus.txt", tokenizer, tmp_path, num_threads=2, progress=False)
    first = load_file(str(base_dir / "model.safetensors"))
    second = load_file(str(tmp_path / "model.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_pretrain_other_seed_differs(inputs, base_dir, tmp_path):
    world, tokenizer = inputs
    settings = {**MICRO_PRETRAIN, "seed": 1, "steps": 5}
    pretrain(MICRO_MODEL, settings, world / "corpus.txt", tokenizer, tmp_path, num_threads=2, progress=False)
    first = load_file(str(base_dir / "model.safetensors"))
    second = load_file(str(tmp_path / "model.safetensors"))
    assert not torch.equal(first["model.embed_tokens.weight"], second["model.embed_tokens.weight"])


def test_saved_folder_loads_as_llama_with_gqa(base_dir):
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    assert model.config.model_type == "llama"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert model.config.num_key_value_heads == 2
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == 32
    # GQA: the key projection is narrower than the query projection.
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.out_features * 2 == attention.q_proj.out_features


def test_saved_model_generates(base_dir):
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    inputs = tokenizer("The following are", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_quick_mmlu_returns_fraction(inputs, base_dir):
    world, _ = inputs
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    accuracy = score_mmlu_letters(model, tokenizer, world / "mmlu")
    # 4 subjects x 3 test questions: the accuracy is a multiple of 1/12.
    assert 0.0 <= accuracy <= 1.0
    assert abs(accuracy * 12 - round(accuracy * 12)) < 1e-9


@pytest.mark.parametrize(
    ("model", "train", "fragment"),
    [
        ({"num_key_value_heads": 4}, {}, "num_key_value_heads"),
        ({"num_key_value_heads": 3}, {}, "num_key_value_heads"),
        ({"hidden_size": 30}, {}, "hidden_size"),
        ({"layers": 2}, {}, "base_model.layers"),
        ({}, {"steps": 0}, "pretrain.steps"),
        ({}, {"warmup": 50}, "pretrain.warmup"),
        ({}, {"sequence_length": 100}, "max_position_embeddings"),
    ],
)
def test_invalid_settings_raise_user_error(inputs, tmp_path, model, train, fragment):
    world, tokenizer = inputs
    with pytest.raises(UserError, match=fragment):
        pretrain({**MICRO_MODEL, **model}, {**MICRO_PRETRAIN, **train}, world / "corpus.txt", tokenizer, tmp_path)


def test_settings_defaults_are_gqa():
    settings = BaseModelSettings.from_dict({})
    assert settings.num_key_value_heads < settings.num_attention_heads
    assert PretrainSettings.from_dict({"seed": 4}).seed == 4
