"""Tests of the visual setting of every method: the visual prefix of the baselines and the shared interface."""

from __future__ import annotations

import pytest
import torch

from baselines import METHODS, get_method
from baselines.visual import IGNORE_INDEX, VisualPrefixModel
from excitor.multimodal import ExcitorVisualModel, VisualConfig
from test_multimodal import pixels, tiny_llama, tiny_vision_tower, token_ids

SMALL_SETTINGS = {
    "excitor": {"rank": 4, "prompt_length": 5, "num_layers": 2, "gate_init": 0.5},
    "lora": {"rank": 4},
    "prefix": {"prompt_length": 4},
    "llama_adapter": {"prompt_length": 4, "num_layers": 2},
    "full": {},
}


def build(name: str, **overrides) -> tuple:
    method = get_method(name, **{**SMALL_SETTINGS[name], **overrides})
    model = method.build_visual(tiny_llama(), tiny_vision_tower(), VisualConfig())
    return method, model


def test_every_method_has_a_visual_setting():
    assert set(SMALL_SETTINGS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(SMALL_SETTINGS))
def test_visual_training_updates_projection(name):
    method, model = build(name)
    model.train()
    ids = token_ids()
    labels = ids.clone()
    for _ in range(2):  # Excitor's projection is reached once its zero-initialised gates have moved
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, pixel_values=pixels()).loss
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter -= 0.1 * parameter.grad
    assert torch.count_nonzero(model.visual_encoder.projection.weight.grad) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.visual_encoder.vision_tower.parameters())


def test_excitor_visual_model_prompt_mode():
    _, model = build("excitor", visual_prompts="rows")
    assert isinstance(model, ExcitorVisualModel)
    assert model.visual_config.prompt_mode == "rows"
    _, lora = build("lora")
    assert isinstance(lora, VisualPrefixModel)


def test_unknown_visual_prompt_mode_raises():
    with pytest.raises(ValueError, match="prompt_mode"):
        build("excitor", visual_prompts="concat")


def test_placeholders_precede_first_attended_token():
    _, model = build("lora")
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 0]])  # a left-padded row, then a right-padded row
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    inputs = model.insert_placeholders(ids, mask, ids.clone(), count=2)
    assert inputs["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]
    assert inputs["labels"].tolist() == [[0, 0, IGNORE_INDEX, IGNORE_INDEX, 5, 6],
                                         [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, 0]]
    assert inputs["visual_positions"].tolist() == [[False, False, True, True, False, False],
                                                   [True, True, False, False, False, False]]


def test_visual_tokens_replace_the_placeholder_embeddings():
    _, model = build("full")
    ids = token_ids(batch=2, length=4)
    visual = torch.randn(2, 3, 64)
    inputs = model.insert_placeholders(ids, None, None, count=3)
    embeddings = model.language_model.get_input_embeddings()
    with model._visual_embeddings(visual, inputs["visual_positions"]):
        written = embeddings(inputs["input_ids"])
        one_step = embeddings(ids[:, :1])
    torch.testing.assert_close(written[:, :3], visual)
    torch.testing.assert_close(written[:, 3:], embeddings(ids))
    torch.testing.assert_close(one_step, embeddings(ids[:, :1]))
    assert not embeddings._forward_hooks, "the hook outlived its context"


@pytest.mark.parametrize("name", sorted(SMALL_SETTINGS))
def test_save_load_round_trip_and_left_padded_generation(tmp_path, name):
    method, model = build(name)
    with torch.no_grad():
        model.visual_encoder.projection.weight.mul_(4.0)  # make the image matter
    model.eval()
    method.save_visual(model, tmp_path)
    loaded = method.load_visual(tiny_llama(), tiny_vision_tower(), tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())

    ids, images = token_ids(batch=2, length=5), pixels()
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values=images).logits,
                               model(input_ids=ids, pixel_values=images).logits)

    # Row 0 is shorter: left padding must not change what it generates.
    padded = ids.clone()
    padded[0, :2] = 0
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    settings = {"max_new_tokens": 4, "do_sample": False, "use_cache": True, "pad_token_id": 0}
    with torch.no_grad():
        batch = loaded.generate(input_ids=padded, attention_mask=mask, pixel_values=images, **settings)
        alone = loaded.generate(input_ids=ids[:1, 2:], attention_mask=mask[:1, 2:], pixel_values=images[:1],
                                **settings)
    assert torch.equal(batch[:, :5], padded), "generate must return the prompt ids first"
    assert torch.equal(batch[:1, 5:], alone[:, 3:])
