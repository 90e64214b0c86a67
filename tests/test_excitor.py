"""Tests of the Excitor method on tiny LLaMA models built from a config (no downloads)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from excitor import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ExcitorConfig,
    ExcitorKeyProjection,
    ExcitorModel,
    count_excitor_parameters,
    excitor_modules,
    excitor_state_dict,
    expected_parameter_count,
    get_excitor_model,
    inject_excitor,
    is_excitor_parameter,
    remove_excitor,
)

HIDDEN = 64
NUM_LAYERS = 4
NUM_HEADS = 4
VOCAB = 100


def tiny_llama_config(num_key_value_heads: int = 2, attn_implementation: str = "sdpa") -> LlamaConfig:
    # eos_token_id=None keeps generate() from stopping early, so every run yields the same number of tokens.
    return LlamaConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=None,
        attn_implementation=attn_implementation,
    )


def tiny_base(seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**config_overrides))
    return model.float().eval()


def input_ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


@torch.no_grad()
def perturb_excitor(model: nn.Module, seed: int = 7) -> None:
    """Give every block large random weights and a non-zero gate, so that keys change visibly per token."""
    generator = torch.Generator().manual_seed(seed)
    for block in excitor_modules(model):
        for name, parameter in block.named_parameters():
            if not is_excitor_parameter(name):
                continue
            noise = torch.randn(parameter.shape, generator=generator).to(parameter.dtype)
            if name == "excitor_gate":
                parameter.copy_(0.5 + noise.abs())
            elif name == "excitor_free_proj":
                parameter.add_(0.1 * noise)
            else:
                parameter.copy_(noise)


def logits_of(model: nn.Module, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


# Identity at initialisation


@pytest.mark.parametrize("gate", ["layer", "head"])
@pytest.mark.parametrize("key_source", ["frozen", "free"])
def test_logits_equal_base_at_init(gate, key_source):
    ids = input_ids()
    expected = logits_of(tiny_base(), ids)

    model = get_excitor_model(tiny_base(), ExcitorConfig(gate=gate, key_source=key_source))

    assert len(excitor_modules(model)) == NUM_LAYERS - 2
    assert torch.equal(logits_of(model, ids), expected)


def test_nonzero_gate_init_changes_logits():
    ids = input_ids()
    expected = logits_of(tiny_base(), ids)

    model = get_excitor_model(tiny_base(), ExcitorConfig(gate_init=1.0, init_scale=0.5))

    assert not torch.allclose(logits_of(model, ids), expected)


# Cold start: the gate learns first, then every parameter


@pytest.mark.parametrize("gate", ["layer", "head"])
def test_one_step_reaches_every_parameter(gate):
    ids = input_ids()
    base_logits = logits_of(tiny_base(), ids)
    model = get_excitor_model(tiny_base(), ExcitorConfig(gate=gate))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}

    lm_loss(model, ids).backward()
    for name, parameter in named.items():
        assert parameter.grad is not None, name
        if name.endswith("excitor_gate"):
            # The gate multiplies the whole extra key, so it gets a gradient while it is still 0.
            assert parameter.grad.abs().max() > 0, name
        else:
            # With g == 0 the rest of the block is cut off from the loss (the zero-gate cold start).
            assert torch.count_nonzero(parameter.grad) == 0, name
    optimizer.step()
    optimizer.zero_grad()

    lm_loss(model, ids).backward()
    for name, parameter in named.items():
        assert parameter.grad.abs().max() > 0, f"{name} got no gradient after one step"
    model.eval()
    assert not torch.equal(logits_of(model, ids), base_logits)


def test_up_initialised_nonzero():
    model = get_excitor_model(tiny_base(), ExcitorConfig())

    for block in excitor_modules(model):
        assert block.excitor_up.abs().max() > 0
        assert block.excitor_down.abs().max() > 0
        assert block.excitor_prompts.abs().max() > 0
        assert torch.count_nonzero(block.excitor_gate) == 0


def test_zero_up_gate_gets_gradient():
    # With W_up = 0 every token gets the same mixture. RoPE rotates that constant key shift
    # differently at each position, so the scores still vary along the key axis and the gate learns.
    model = get_excitor_model(tiny_base(), ExcitorConfig())
    with torch.no_grad():
        for block in excitor_modules(model):
            block.excitor_up.zero_()

    lm_loss(model, input_ids()).backward()

    for block in excitor_modules(model):
        assert block.excitor_gate.grad.abs().max() > 0


# Only Excitor parameters train


def test_only_excitor_parameters_require_grad():
    model = get_excitor_model(tiny_base(), ExcitorConfig(gate="head", key_source="free"))

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}

    assert trainable
    assert all(name.rsplit(".", 1)[-1].startswith("excitor_") for name in trainable)
    assert all(not name.rsplit(".", 1)[-1].startswith("excitor_") for name in frozen)
    assert any(name.endswith("k_proj.base_layer.weight") for name in frozen)
    assert "base_model.lm_head.weight" in frozen


def test_base_weights_unchanged_by_training():
    ids = input_ids()
    model = get_excitor_model(tiny_base(), ExcitorConfig(gate_init=0.5))
    before = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    for _ in range(2):
        lm_loss(model, ids).backward()
        optimizer.step()
        optimizer.zero_grad()

    for name, parameter in model.named_parameters():
        if name in before:
            assert torch.equal(parameter, before[name]), name


# Grouped-query and multi-head attention


@pytest.mark.parametrize("num_key_value_heads", [1, 2, 4])
@pytest.mark.parametrize("gate", ["layer", "head"])
def test_gqa_and_mha_shapes(num_key_value_heads, gate):
    ids = input_ids()
    model = get_excitor_model(tiny_base(num_key_value_heads=num_key_value_heads), ExcitorConfig(gate=gate))
    perturb_excitor(model)
    head_dim = HIDDEN // NUM_HEADS

    for block in excitor_modules(model):
        assert block.num_key_value_heads == num_key_value_heads
        assert block.excitor_gate.shape == ((1,) if gate == "layer" else (num_key_value_heads,))
        assert block(torch.randn(2, 5, HIDDEN)).shape == (2, 5, num_key_value_heads * head_dim)
    loss = lm_loss(model, ids)
    loss.backward()
    assert math.isfinite(loss.item())


def test_head_gate_scales_each_kv_head():
    torch.manual_seed(3)
    projection = nn.Linear(HIDDEN, 2 * 16, bias=False)
    block = ExcitorKeyProjection(projection, ExcitorConfig(gate="head"), num_key_value_heads=2)
    x = torch.randn(2, 5, HIDDEN)
    with torch.no_grad():
        block.excitor_gate.copy_(torch.tensor([0.0, 1.0]))
        keys = block(x).unflatten(-1, (2, 16))  # (B, T, H_kv, d)
        plain = projection(x).unflatten(-1, (2, 16))  # (B, T, H_kv, d)

    assert torch.equal(keys[:, :, 0], plain[:, :, 0])
    assert not torch.allclose(keys[:, :, 1], plain[:, :, 1])


def test_layer_gate_matches_equation():
    torch.manual_seed(4)
    projection = nn.Linear(HIDDEN, 32, bias=True)
    block = ExcitorKeyProjection(projection, ExcitorConfig(rank=4, prompt_length=6, init_scale=0.5), 2)
    with torch.no_grad():
        block.excitor_gate.fill_(0.7)
    x = torch.randn(2, 5, HIDDEN)

    # Written out term by term, without the module's cheaper ordering of the matmuls.
    low_rank = x @ block.excitor_down @ block.excitor_up  # (B, T, C)
    weights = torch.softmax(low_rank @ block.excitor_prompts.T / math.sqrt(HIDDEN), dim=-1)  # (B, T, K)
    mix = weights @ block.excitor_prompts  # (B, T, C)
    expected = projection(x) + 0.7 * (mix @ projection.weight.T)  # bias added once

    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("key_source", ["frozen", "free"])
def test_equal_head_gates_match_layer_gate(key_source):
    torch.manual_seed(5)
    projection = nn.Linear(HIDDEN, 32, bias=True)  # a bias must still be added once
    blocks = {}
    for gate in ("layer", "head"):
        torch.manual_seed(6)
        config = ExcitorConfig(gate=gate, key_source=key_source, init_scale=0.5)
        blocks[gate] = ExcitorKeyProjection(projection, config, num_key_value_heads=2)
        with torch.no_grad():
            blocks[gate].excitor_gate.fill_(0.7)
    x = torch.randn(2, 5, HIDDEN)

    with torch.no_grad():
        assert torch.allclose(blocks["head"](x), blocks["layer"](x), atol=1e-5)


# Generation with the KV cache


@pytest.mark.parametrize("gate", ["layer", "head"])
def test_cached_generate_matches_full_forwards(gate):
    model = get_excitor_model(tiny_base(), ExcitorConfig(gate=gate))
    perturb_excitor(model)
    prompt = input_ids(batch=2, length=6)
    new_tokens = 10

    with torch.no_grad():
        generated = model.generate(
            input_ids=prompt, max_new_tokens=new_tokens, do_sample=False, use_cache=True
        )

    tokens = prompt
    for _ in range(new_tokens):
        next_token = logits_of(model, tokens, use_cache=False)[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    assert generated.shape == (2, 6 + new_tokens)
    assert torch.equal(generated, tokens)


def test_perturbed_excitor_changes_greedy_tokens():
    prompt = input_ids(batch=2, length=6)
    base_tokens = tiny_base().generate(input_ids=prompt, max_new_tokens=10, do_sample=False)
    model = get_excitor_model(tiny_base(), ExcitorConfig())
    perturb_excitor(model)

    tuned_tokens = model.generate(input_ids=prompt, max_new_tokens=10, do_sample=False)

    assert not torch.equal(tuned_tokens, base_tokens)


# SDPA and eager attention agree


@pytest.mark.parametrize("gate", ["layer", "head"])
def test_sdpa_and_eager_agree(gate):
    ids = input_ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding on the first row exercises the mask path
    logits = {}
    for implementation in ("sdpa", "eager"):
        model = get_excitor_model(tiny_base(attn_implementation=implementation), ExcitorConfig(gate=gate))
        assert model.config._attn_implementation == implementation
        perturb_excitor(model)
        logits[implementation] = logits_of(model, ids, attention_mask=mask)

    assert torch.allclose(logits["sdpa"][0, 3:], logits["eager"][0, 3:], atol=1e-5)
    assert torch.allclose(logits["sdpa"][1], logits["eager"][1], atol=1e-5)


# Save and load


@pytest.mark.parametrize("gate", ["layer", "head"])
def test_save_load_round_trip(tmp_path, gate):
    ids = input_ids()
    config = ExcitorConfig(gate=gate, num_layers=3, rank=4, prompt_length=5)
    model = get_excitor_model(tiny_base(), config)
    perturb_excitor(model)
    expected = logits_of(model, ids)

    model.save_pretrained(tmp_path)
    loaded = ExcitorModel.from_pretrained(tiny_base(), tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME])
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == config.to_dict()
    assert loaded.excitor_config == config
    assert torch.equal(logits_of(loaded, ids), expected)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.training


def test_saved_file_holds_only_excitor_weights(tmp_path):
    from safetensors.torch import load_file

    model = get_excitor_model(tiny_base(), ExcitorConfig())
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / WEIGHTS_NAME))

    assert set(saved) == set(excitor_state_dict(model.base_model))
    assert sum(t.numel() for t in saved.values()) == count_excitor_parameters(model)


def test_load_trainable_restores_grad(tmp_path):
    get_excitor_model(tiny_base(), ExcitorConfig()).save_pretrained(tmp_path)

    loaded = ExcitorModel.from_pretrained(tiny_base(), tmp_path, is_trainable=True)

    trainable = [name for name, p in loaded.named_parameters() if p.requires_grad]
    assert trainable
    assert all(is_excitor_parameter(name) for name in trainable)


def test_load_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ExcitorModel.from_pretrained(tiny_base(), tmp_path / "absent")


def test_load_missing_weights_raises(tmp_path):
    get_excitor_model(tiny_base(), ExcitorConfig()).save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()

    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        ExcitorModel.from_pretrained(tiny_base(), tmp_path)


def test_load_onto_wrong_base_raises(tmp_path):
    get_excitor_model(tiny_base(), ExcitorConfig()).save_pretrained(tmp_path)
    torch.manual_seed(0)
    wider = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=VOCAB,
        )
    )

    with pytest.raises(ValueError, match="shape"):
        ExcitorModel.from_pretrained(wider, tmp_path)


def test_load_unknown_config_key_raises(tmp_path):
    get_excitor_model(tiny_base(), ExcitorConfig()).save_pretrained(tmp_path)
    values = json.loads((tmp_path / CONFIG_NAME).read_text())
    values["alpha"] = 8
    (tmp_path / CONFIG_NAME).write_text(json.dumps(values))

    with pytest.raises(ValueError, match="'alpha'"):
        ExcitorModel.from_pretrained(tiny_base(), tmp_path)


# Parameter counts


def hand_count(blocks: int, hidden: int, rank: int, prompts: int, gate_size: int) -> int:
    return blocks * (prompts * hidden + hidden * rank + rank * hidden + gate_size)


@pytest.mark.parametrize(
    ("config", "gate_size", "free_size"),
    [
        (ExcitorConfig(), 1, 0),
        (ExcitorConfig(gate="head"), 2, 0),
        (ExcitorConfig(key_source="free", rank=8, prompt_length=3, num_layers=4), 1, HIDDEN * 2 * 16),
    ],
)
def test_parameter_count_matches_formula(config, gate_size, free_size):
    model = get_excitor_model(tiny_base(), config)
    blocks = len(config.resolve_layers(NUM_LAYERS))
    by_hand = hand_count(blocks, HIDDEN, config.rank, config.prompt_length, gate_size) + blocks * free_size

    assert count_excitor_parameters(model) == by_hand
    assert expected_parameter_count(config, HIDDEN, NUM_LAYERS, 2, HIDDEN // NUM_HEADS) == by_hand
    assert model.get_nb_trainable_parameters()[0] == by_hand
    assert model.get_nb_trainable_parameters()[1] == by_hand + sum(p.numel() for p in tiny_base().parameters())
    assert str(by_hand) in model.print_trainable_parameters().replace(",", "")


def test_llama7b_shape_count_on_meta():
    config = ExcitorConfig(rank=16, prompt_length=30, num_layers=30)
    with torch.device("meta"):
        base = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                intermediate_size=16, vocab_size=16,
            )
        )
        model = get_excitor_model(base, config)

    gates = sum(p.numel() for name, p in model.named_parameters() if name.endswith("excitor_gate"))
    # Hand calculation: 30 layers x (30 x 4096 prompt entries + 4096 x 16 + 16 x 4096).
    assert 30 * (30 * 4096 + 4096 * 16 + 16 * 4096) == 7_618_560
    assert count_excitor_parameters(model) - gates == 7_618_560
    assert gates == 30
    assert expected_parameter_count(config, 4096, 32, 32, 128) == 7_618_560 + 30


# Config validation


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"rank": True}, "rank"),
        ({"prompt_length": -1}, "prompt_length"),
        ({"num_layers": 0}, "num_layers"),
        ({"layers": []}, "layers"),
        ({"layers": [1, 1]}, "layers"),
        ({"layers": [-1]}, "layers"),
        ({"layers": "0,1"}, "layers"),
        ({"layers": [0], "num_layers": 1}, "num_layers"),
        ({"gate": "token"}, "gate"),
        ({"gate_init": float("nan")}, "gate_init"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"init_scale": float("inf")}, "init_scale"),
        ({"key_source": "trainable"}, "key_source"),
        ({"target_module": ""}, "target_module"),
    ],
)
def test_config_rejects_bad_value(overrides, field_name):
    with pytest.raises(ValueError, match=field_name):
        ExcitorConfig(**overrides)


def test_config_round_trip_and_unknown_key():
    config = ExcitorConfig(rank=4, layers=[3, 1], gate="head", gate_init=0.1)

    assert config.layers == [1, 3]
    assert ExcitorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="'lora_alpha'"):
        ExcitorConfig.from_dict({"lora_alpha": 16})


def test_resolve_layers():
    assert ExcitorConfig().resolve_layers(32) == list(range(2, 32))
    assert ExcitorConfig().resolve_layers(2) == [1]
    assert ExcitorConfig().resolve_layers(1) == [0]
    assert ExcitorConfig(num_layers=3).resolve_layers(4) == [1, 2, 3]
    assert ExcitorConfig(layers=[0, 2]).resolve_layers(4) == [0, 2]
    with pytest.raises(ValueError, match="layers"):
        ExcitorConfig(layers=[0, 4]).resolve_layers(4)
    with pytest.raises(ValueError, match="num_layers"):
        ExcitorConfig(num_layers=5).resolve_layers(4)


def test_inject_out_of_range_layers_raises():
    with pytest.raises(ValueError, match="out of range"):
        get_excitor_model(tiny_base(), ExcitorConfig(layers=[1, 7]))


def test_inject_explicit_layers():
    model = get_excitor_model(tiny_base(), ExcitorConfig(layers=[0, 2]))
    layers = model.base_model.model.layers

    assert isinstance(layers[0].self_attn.k_proj, ExcitorKeyProjection)
    assert isinstance(layers[1].self_attn.k_proj, nn.Linear)
    assert isinstance(layers[2].self_attn.k_proj, ExcitorKeyProjection)
    assert isinstance(layers[3].self_attn.k_proj, nn.Linear)


def test_inject_twice_raises():
    model = tiny_base()
    inject_excitor(model, ExcitorConfig())

    with pytest.raises(ValueError, match="already contains"):
        inject_excitor(model, ExcitorConfig())


def test_inject_unsupported_layout_raises():
    class NoDecoderLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

    with pytest.raises(NotImplementedError, match="model.model.layers"):
        inject_excitor(NoDecoderLayers(), ExcitorConfig())
    with pytest.raises(NotImplementedError, match="self_attn.key"):
        inject_excitor(tiny_base(), ExcitorConfig(target_module="key"))


def test_remove_excitor_restores_base():
    ids = input_ids()
    expected = logits_of(tiny_base(), ids)
    model = tiny_base()
    inject_excitor(model, ExcitorConfig(gate_init=1.0))

    remove_excitor(model)

    assert not excitor_modules(model)
    assert torch.equal(logits_of(model, ids), expected)


# Multi-modal hook: a per-example prompt offset


def test_prompt_offset_per_example():
    ids = input_ids()
    model = get_excitor_model(tiny_base(), ExcitorConfig(prompt_length=5))
    perturb_excitor(model)
    plain = logits_of(model, ids)
    blocks = excitor_modules(model)

    for block in blocks:
        block.prompt_offset = torch.zeros(2, 5, HIDDEN)
    assert torch.allclose(logits_of(model, ids), plain, atol=1e-6)

    offset = torch.zeros(2, 5, HIDDEN)
    offset[1] = torch.randn(5, HIDDEN)
    for block in blocks:
        block.prompt_offset = offset
    shifted = logits_of(model, ids)
    assert torch.allclose(shifted[0], plain[0], atol=1e-6)
    assert not torch.allclose(shifted[1], plain[1], atol=1e-3)


# bf16


@pytest.mark.parametrize("gate", ["layer", "head"])
def test_bf16_forward_backward(gate):
    ids = input_ids()
    model = get_excitor_model(tiny_base().to(torch.bfloat16), ExcitorConfig(gate=gate, gate_init=0.1))

    loss = lm_loss(model, ids)
    loss.backward()

    assert math.isfinite(loss.item())
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.dtype == torch.bfloat16, name
            assert parameter.grad.dtype == torch.bfloat16, name
            assert torch.isfinite(parameter.grad).all(), name


# Folded weights at inference


def test_folded_inference_matches_training_path():
    model = get_excitor_model(tiny_base(), ExcitorConfig(rank=4, prompt_length=6))
    perturb_excitor(model)
    ids = input_ids()

    with torch.enable_grad():
        unfolded = model(input_ids=ids).logits.detach()
    folded = logits_of(model, ids)

    assert torch.allclose(folded, unfolded, atol=1e-4)


def test_folded_weights_follow_optimiser_step():
    model = get_excitor_model(tiny_base(), ExcitorConfig(rank=4, prompt_length=6))
    perturb_excitor(model)
    ids = input_ids()
    before = logits_of(model, ids)  # fills the folded-weight cache
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)

    lm_loss(model, ids).backward()
    optimizer.step()
    with torch.enable_grad():
        expected = model(input_ids=ids).logits.detach()
    after = logits_of(model, ids)

    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-4)
