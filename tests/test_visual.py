"""Visual runs end to end on micro scenes: training, saving, loading, generation and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

from excitor_bench.data import Example
from excitor_bench.errors import UserError
from excitor_bench.visual import (
    PixelBatcher,
    VisualExample,
    caption_examples,
    evaluate_scienceqa,
    load_training_examples,
    load_visual_run,
    train_visual,
)
from excitor_bench.world.scenes import build_scenes

MICRO_SCENES = {"train_scenes": 6, "restval_scenes": 1, "val_scenes": 2, "test_scenes": 3,
                "scienceqa_train_problems": 9, "scienceqa_val_problems": 9, "scienceqa_test_problems": 9}
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(MICRO_SCENES, out)
    return out


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory) -> Path:
    """A random CLIP vision tower saved with its image processor, as a CLIP folder is."""
    out = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=8)
    CLIPVisionModel(config).save_pretrained(out)
    processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                      crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory, micro_model_dir) -> Path:
    """The micro model with room for ScienceQA prompts, which its small vocabulary makes long."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("long_context_model")
    config = LlamaConfig.from_pretrained(micro_model_dir)
    config.max_position_embeddings = 1024
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(micro_model_dir).save_pretrained(out)
    return out


def data_paths(scenes: Path) -> dict[str, str]:
    return {"coco": str(scenes / "coco" / "dataset_coco.json"), "coco_images": str(scenes / "coco" / "images"),
            "scienceqa": str(scenes / "scienceqa")}


def spec(method: str, scenes: Path, vision_dir: Path, base_model: Path, **hyperparameters) -> dict:
    return {"task": "visual", "method": method, "setting": "test", "seed": 0,
            "hyperparameters": {"learning_rate": 1e-2, **hyperparameters},
            "training": {"steps": 2, "batch_size": 4, "max_length": 512, "warmup_steps": 0, "log_every": 1},
            "base_model": str(base_model), "vision_model": str(vision_dir), "features": "global",
            "data": data_paths(scenes)}


def test_training_mixture_has_every_caption_and_problem(scenes):
    examples = load_training_examples(data_paths(scenes))
    coco = json.loads((scenes / "coco" / "dataset_coco.json").read_text())
    captions = sum(len(image["sentences"]) for image in coco["images"] if image["split"] in ("train", "restval"))
    assert len(examples) == captions + MICRO_SCENES["scienceqa_train_problems"]
    assert all(example.example.output.startswith("The answer is") for example in examples[captions:])


def test_caption_examples_pair_each_caption_with_its_image(scenes):
    from excitor_bench.vision.coco import load_karpathy

    images = load_karpathy(scenes / "coco" / "dataset_coco.json", scenes / "coco" / "images", splits=["test"])
    examples = caption_examples(images)
    assert [e.example.output for e in examples[:5]] == list(images[0].captions)
    assert {e.image for e in examples[:5]} == {images[0].path}


def test_problem_without_image_gets_a_white_image(vision_dir):
    processor = CLIPImageProcessorPil.from_pretrained(vision_dir)
    batcher = PixelBatcher(processor)
    pixels = batcher([VisualExample(None, Example("q", "", "a"), "ScienceQA problem 1")])
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    # White is 1.0 after rescaling, then (1.0 - mean) / std per channel.
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    torch.testing.assert_close(pixels[0, :, 0, 0], (1.0 - mean) / std)


@pytest.mark.parametrize("method, hyperparameters", [("excitor", {"rank": 2, "prompt_length": 3, "num_layers": 2,
                                                                  "visual_prompts": "rows"}),
                                                      ("lora", {"rank": 2})])
def test_visual_run_trains_saves_and_evaluates(tmp_path, scenes, vision_dir, base_model_dir, method,
                                               hyperparameters):
    run_spec = spec(method, scenes, vision_dir, base_model_dir, **hyperparameters)
    (tmp_path / "spec.json").write_text(json.dumps(run_spec))
    figures = train_visual(run_spec, tmp_path)

    assert figures["trainable_parameters"] > 0
    assert (tmp_path / "adapter" / "visual_projection.safetensors").is_file()
    assert len(json.loads((tmp_path / "train.json").read_text())["losses"]) == 2

    device = torch.device("cpu")
    model, tokenizer, processor = load_visual_run(tmp_path, str(base_model_dir), str(vision_dir), device=device,
                                                  dtype=torch.float32)
    result = evaluate_scienceqa(model, tokenizer, processor, scenes / "scienceqa", max_new_tokens=3, limit=4)
    assert result["n_items"] == 4
    assert len(result["per_item"]) == 4
    assert 0 <= result["accuracy"] <= 100


def test_prompt_longer_than_context_names_the_problem(tmp_path, scenes, vision_dir, micro_model_dir):
    from excitor_bench.models import load_base_model

    model, tokenizer = load_base_model(str(micro_model_dir), device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(UserError, match=r"ScienceQA problem \S+: the prompt needs"):
        evaluate_scienceqa(model, tokenizer, None, scenes / "scienceqa", max_new_tokens=1000, limit=2)
