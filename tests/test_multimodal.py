"""Tests of multi-modal Excitor on a tiny LLaMA and a tiny CLIP vision tower built from configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from excitor import ExcitorConfig, ExcitorKeyProjection, excitor_modules
from excitor.multimodal import (
    PROJECTION_WEIGHTS_NAME,
    VISUAL_CONFIG_NAME,
    ExcitorVisualModel,
    VisualConfig,
    VisualEncoder,
)

HIDDEN = 64
VOCAB = 100
IMAGE_SIZE = 16


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    return LlamaForCausalLM(config).float().eval()


def tiny_vision_tower(seed: int = 1) -> CLIPVisionModel:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=8)
    return CLIPVisionModel(config).eval()


def pixels(batch: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def token_ids(batch: int = 2, length: int = 10, seed: int = 3) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def visual_model(prompt_mode: str = "add", features: str = "global", seed: int = 0) -> ExcitorVisualModel:
    config = ExcitorConfig(rank=4, prompt_length=5, num_layers=2)
    return ExcitorVisualModel(tiny_llama(seed), tiny_vision_tower(), config,
                              VisualConfig(prompt_mode=prompt_mode, features=features))


def open_gates(model: nn.Module, value: float = 0.5) -> None:
    with torch.no_grad():
        for block in excitor_modules(model):
            block.excitor_gate.fill_(value)


MODES = [("add", "global"), ("rows", "global"), ("add", "tokens"), ("rows", "tokens")]


@pytest.mark.parametrize("prompt_mode, features", MODES)
def test_logits_equal_base_at_init_whatever_the_image(prompt_mode, features):
    ids = token_ids()
    base_logits = tiny_llama()(input_ids=ids).logits
    model = visual_model(prompt_mode, features)
    logits = model(input_ids=ids, pixel_values=pixels()).logits
    assert torch.equal(logits, base_logits)


@pytest.mark.parametrize("prompt_mode", ["add", "rows"])
def test_image_changes_logits_once_gates_open(prompt_mode):
    model = visual_model(prompt_mode)
    open_gates(model)
    ids = token_ids(batch=1).repeat(2, 1)
    images = pixels()
    logits = model(input_ids=ids, pixel_values=images).logits
    assert not torch.allclose(logits[0], logits[1], atol=1e-5), "two images gave the same logits"
    same = model(input_ids=ids, pixel_values=images[:1].repeat(2, 1, 1, 1)).logits
    torch.testing.assert_close(same[0], same[1])


@pytest.mark.parametrize("prompt_mode", ["add", "rows"])
def test_projection_gets_gradient_after_one_step(prompt_mode):
    model = visual_model(prompt_mode)
    ids, images = token_ids(), pixels()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    projection = model.visual_encoder.projection

    model(input_ids=ids, labels=ids, pixel_values=images).loss.backward()
    # At g == 0 the image cannot affect the output yet: only the gates receive a gradient.
    assert projection.weight.grad is None or torch.count_nonzero(projection.weight.grad) == 0
    assert all(torch.count_nonzero(b.excitor_gate.grad) > 0 for b in excitor_modules(model))
    optimizer.step()
    optimizer.zero_grad()

    model(input_ids=ids, labels=ids, pixel_values=images).loss.backward()
    assert torch.count_nonzero(projection.weight.grad) > 0
    assert torch.count_nonzero(projection.bias.grad) > 0
    assert all(p.grad is None for p in model.visual_encoder.vision_tower.parameters())


def test_only_excitor_and_projection_train():
    model = visual_model()
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names, "nothing trains"
    assert all("excitor_" in name or name.startswith("visual_encoder.projection.") for name in names)
    assert "visual_encoder.projection.weight" in names


def test_vision_tower_stays_in_eval_mode():
    model = visual_model()
    model.train()
    assert not model.visual_encoder.vision_tower.training
    assert model.visual_encoder.projection.training


def test_image_call_leaves_no_state():
    model = visual_model()
    open_gates(model)
    ids = token_ids()
    before = model(input_ids=ids).logits
    model(input_ids=ids, pixel_values=pixels())
    assert all(b.prompt_offset is None and b.prompt_rows is None for b in excitor_modules(model))
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def block_pair(rows: int) -> tuple[ExcitorKeyProjection, ExcitorKeyProjection, torch.Tensor]:
    """A block with K prompts and the same block given K + rows prompts, with the extra rows random."""
    torch.manual_seed(4)
    key = nn.Linear(HIDDEN, 32, bias=False)
    small = ExcitorKeyProjection(key, ExcitorConfig(rank=4, prompt_length=5, gate_init=0.7), num_key_value_heads=2)
    large = ExcitorKeyProjection(key, ExcitorConfig(rank=4, prompt_length=5 + rows, gate_init=0.7),
                                 num_key_value_heads=2)
    extra = torch.randn(rows, HIDDEN)
    with torch.no_grad():
        large.excitor_down.copy_(small.excitor_down)
        large.excitor_up.copy_(small.excitor_up)
        large.excitor_prompts.copy_(torch.cat([small.excitor_prompts, extra]))
    return small, large, extra


def test_prompt_rows_act_as_extra_prompts():
    small, large, extra = block_pair(rows=3)
    x = torch.randn(2, 6, HIDDEN)
    small.prompt_rows = extra.expand(2, -1, -1)  # (B, N, C)
    torch.testing.assert_close(small(x), large(x))


def test_prompt_offset_adds_to_every_prompt():
    small, large, _ = block_pair(rows=0)
    offset = torch.randn(1, 1, HIDDEN)
    with torch.no_grad():
        large.excitor_prompts.add_(offset[0])
    x = torch.randn(1, 6, HIDDEN)
    small.prompt_offset = offset
    torch.testing.assert_close(small(x), large(x))


def test_encoder_returns_one_token_or_all_tokens():
    tower = tiny_vision_tower()
    patches = (IMAGE_SIZE // 8) ** 2
    assert VisualEncoder(tower, HIDDEN, "global")(pixels(3)).shape == (3, 1, HIDDEN)
    assert VisualEncoder(tower, HIDDEN, "tokens")(pixels(3)).shape == (3, patches + 1, HIDDEN)
    assert VisualEncoder(tower, HIDDEN, "tokens").num_tokens == patches + 1


@pytest.mark.parametrize("prompt_mode", ["add", "rows"])
def test_save_load_round_trip(tmp_path, prompt_mode):
    model = visual_model(prompt_mode)
    open_gates(model)
    with torch.no_grad():
        model.visual_encoder.projection.weight.mul_(3.0)
    model.save_pretrained(tmp_path)
    assert {VISUAL_CONFIG_NAME, PROJECTION_WEIGHTS_NAME} <= {p.name for p in tmp_path.iterdir()}

    loaded = ExcitorVisualModel.from_pretrained(tiny_llama(), tiny_vision_tower(), tmp_path)
    assert loaded.visual_config == model.visual_config
    assert not any(p.requires_grad for p in loaded.parameters())
    ids, images = token_ids(), pixels()
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values=images).logits,
                               model(input_ids=ids, pixel_values=images).logits)


def test_load_with_other_vision_tower_raises(tmp_path):
    visual_model().save_pretrained(tmp_path)
    config = CLIPVisionConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=8)
    with pytest.raises(ValueError, match="projection|weight"):
        ExcitorVisualModel.from_pretrained(tiny_llama(), CLIPVisionModel(config), tmp_path)


def test_load_without_visual_config_raises(tmp_path):
    visual_model().save_pretrained(tmp_path)
    (tmp_path / VISUAL_CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=VISUAL_CONFIG_NAME):
        ExcitorVisualModel.from_pretrained(tiny_llama(), tiny_vision_tower(), tmp_path)


def greedy_without_cache(model: ExcitorVisualModel, ids: torch.Tensor, images: torch.Tensor, steps: int):
    for _ in range(steps):
        logits = model(input_ids=ids, pixel_values=images, use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("prompt_mode", ["add", "rows"])
def test_batched_cached_generate_matches_full_forwards(prompt_mode):
    model = visual_model(prompt_mode)
    open_gates(model, 2.0)
    ids, images = token_ids(batch=3, length=6), pixels(3)
    with torch.no_grad():
        expected = greedy_without_cache(model, ids, images, steps=6)
        generated = model.generate(input_ids=ids, pixel_values=images, max_new_tokens=6, do_sample=False,
                                   use_cache=True, attention_mask=torch.ones_like(ids))
        alone = model.generate(input_ids=ids[1:2], pixel_values=images[1:2], max_new_tokens=6, do_sample=False,
                               use_cache=True, attention_mask=torch.ones_like(ids[1:2]))
    assert torch.equal(generated, expected)
    assert torch.equal(generated[1:2], alone), "batching mixed the images of different examples"
