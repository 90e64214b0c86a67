"""Shared fixtures: a micro tiny world, its tokenizer and an untrained tiny LLaMA saved like a real one."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from excitor_bench.tokenizer import train_tokenizer
from excitor_bench.world import build_world

MICRO_WORLD = {"kinds": 4, "entities_per_kind": 3, "instruction_train_examples": 64, "test_transform_examples": 4}


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(MICRO_WORLD, out)
    return out


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, micro_world) -> Path:
    """An untrained LLaMA with grouped-query attention and its tokenizer, in one save_pretrained folder."""
    out = tmp_path_factory.mktemp("base_model")
    train_tokenizer([micro_world / "corpus.txt", micro_world / "alpaca" / "train.json"], 300, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
