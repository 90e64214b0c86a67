"""Visual instruction tuning and its evaluation: COCO captions and ScienceQA with a frozen CLIP.

Every method tunes on one mixture: each training caption of the Karpathy "train" and "restval" splits
as its own example, plus every ScienceQA training problem. Both use the Alpaca template, so the prompt
format is the one the text-only runs learn:

    captions   instruction CAPTION_INSTRUCTION, no input;            response: the caption
    ScienceQA  instruction SCIENCEQA_INSTRUCTION, input build_prompt; response: "The answer is B."

A ScienceQA problem without an image gets a white image of the vision tower's input size, so every
example of a batch has one. The model learns that the picture is empty only from the problem's context text.
Evaluation decodes greedily, in left-padded batches with the KV cache, and scores captions with
pycocoevalcap and ScienceQA by answer letter.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from tqdm.auto import tqdm

from excitor_bench.data import Example, collate, encode_prompt, tokenize_example
from excitor_bench.errors import UserError
from excitor_bench.evaluate.instructions import left_padded
from excitor_bench.models import load_base_model, resolve_device, resolve_dtype
from excitor_bench.train import (
    TrainingSettings,
    build_failed,
    build_method,
    optimise,
    write_figures,
    write_run_provenance,
)

log = logging.getLogger(__name__)

CAPTION_INSTRUCTION = "Write a short caption for the image."
SCIENCEQA_INSTRUCTION = "Answer the multiple-choice question. Use the image if there is one."
PIXEL_CACHE_SIZE = 4096
"""Processed images kept in memory during training: all of the tiny world's, or about 2.5 GB of 224 px images."""


@dataclass(frozen=True)
class VisualExample:
    """One image (or None for a text-only problem), its Alpaca-format text and a name for messages."""

    image: Path | None
    example: Example
    item: str


def caption_examples(images: Sequence[Any]) -> list[VisualExample]:
    """Return one training example per caption of each image."""
    return [
        VisualExample(image.path, Example(CAPTION_INSTRUCTION, "", caption), f"COCO image {image.image_id}")
        for image in images
        for caption in image.captions
    ]


def scienceqa_examples(problems: Sequence[Any]) -> list[VisualExample]:
    from excitor_bench.evaluate.scienceqa import build_prompt, build_target

    return [
        VisualExample(problem.image, Example(SCIENCEQA_INSTRUCTION, build_prompt(problem), build_target(problem)),
                      f"ScienceQA problem {problem.pid}")
        for problem in problems
    ]


def load_training_examples(data: dict[str, Any]) -> list[VisualExample]:
    """Read the training captions and ScienceQA problems named in a visual run spec's `data`."""
    from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy
    from excitor_bench.vision.scienceqa import load_scienceqa

    images = load_karpathy(Path(data["coco"]), Path(data["coco_images"]), splits=TRAIN_SPLITS)
    problems = load_scienceqa(Path(data["scienceqa"]), "train")
    log.info("visual training data: %d captions of %d images and %d ScienceQA problems",
             sum(len(image.captions) for image in images), len(images), len(problems))
    return caption_examples(images) + scienceqa_examples(problems)


class PixelBatcher:
    """Turn image paths into a batch of pixel values with the vision tower's image processor."""

    def __init__(self, processor: Any, cache_size: int = PIXEL_CACHE_SIZE) -> None:
        self.processor = processor
        size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
        height = size.get("height") or size.get("shortest_edge")
        width = size.get("width") or size.get("shortest_edge")
        self.blank = PIL.Image.new("RGB", (width, height), (255, 255, 255))
        self.pixels = functools.lru_cache(maxsize=cache_size)(self._pixels)

    def _pixels(self, image: Path | None, item: str) -> torch.Tensor:
        from excitor_bench.vision.images import load_image

        picture = self.blank if image is None else load_image(image, item)
        return self.processor(images=[picture], return_tensors="pt")["pixel_values"][0]  # (3, H, W)

    def __call__(self, examples: Sequence[VisualExample]) -> torch.Tensor:
        return torch.stack([self.pixels(example.image, example.item) for example in examples])  # (B, 3, H, W)


def load_vision(vision_model: str, device: torch.device, dtype: torch.dtype):
    from excitor_bench.vision.clip import load_vision_tower

    return load_vision_tower(vision_model, device=device, dtype=dtype)


def train_visual(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train one visual run and write its adapter, projection and figures under `out_dir`.

    `spec` is a text run's spec (see excitor_bench.train.train) with `vision_model` (a CLIP folder or
    hub id), `features` ("global" or "tokens") and `data` ({coco, coco_images, scienceqa}) in place
    of `train_data`.
    """
    from excitor.multimodal import VisualConfig

    out_dir = Path(out_dir)
    settings = TrainingSettings.from_dict(spec.get("training", {}))
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)

    examples = load_training_examples(spec["data"])
    base_model, tokenizer = load_base_model(spec["base_model"], device=device, dtype=dtype)
    vision, processor = load_vision(spec["vision_model"], device, dtype)
    method = build_method(spec)
    try:
        model = method.build_visual(base_model, vision, VisualConfig(features=spec.get("features", "global")))
    except ValueError as error:
        raise build_failed(spec, error) from None

    encoded, kept = [], []
    for example in examples:
        ids, labels = tokenize_example(example.example, tokenizer, settings.max_length)
        if any(label != -100 for label in labels):
            encoded.append((ids, labels))
            kept.append(example)
    if not encoded:
        raise UserError(f"no visual training example fits training.max_length = {settings.max_length}; "
                        "raise visual.training.max_length in the config")
    if len(kept) < len(examples):
        log.warning("dropped %d of %d visual examples whose prompt alone exceeds max_length %d",
                    len(examples) - len(kept), len(examples), settings.max_length)
    pixels = PixelBatcher(processor)

    def make_batch(indices: list[int]) -> dict[str, torch.Tensor]:
        batch = collate([encoded[i] for i in indices], tokenizer.pad_token_id)
        batch["pixel_values"] = pixels([kept[i] for i in indices])
        return batch

    figures = optimise(model, method, make_batch, [len(ids) for ids, _ in encoded], settings, seed, device)
    figures["dtype"] = str(dtype).removeprefix("torch.")
    adapter_dir = out_dir / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    method.save_visual(model, adapter_dir)
    data = spec["data"]
    # The annotation files are hashed, not the image folders, which hold 13 GB for real COCO.
    write_run_provenance(spec, out_dir, {
        "base_model": spec["base_model"],
        "vision_model": spec["vision_model"],
        "coco": data["coco"],
        "scienceqa_problems": str(Path(data["scienceqa"]) / "problems.json"),
        "scienceqa_splits": str(Path(data["scienceqa"]) / "pid_splits.json"),
    })
    return write_figures(figures, adapter_dir, out_dir)


def load_visual_run(run_dir: Path, base_model: str, vision_model: str, *, device: torch.device,
                    dtype: torch.dtype):
    """Rebuild a visual run from its saved adapter onto a fresh base model and the frozen vision tower."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file():
        raise UserError(f"{spec_path} not found; train the run first (excitor-bench train-visual ... --out {run_dir})")
    spec = json.loads(spec_path.read_text())
    model, tokenizer = load_base_model(base_model, device=device, dtype=dtype)
    vision, processor = load_vision(vision_model, device, dtype)
    tuned = build_method(spec).load_visual(model, vision, run_dir / "adapter")
    tuned.to(device)
    tuned.eval()
    return tuned, tokenizer, processor


def context_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


@torch.no_grad()
def generate_visual(model, tokenizer, processor, examples: Sequence[VisualExample], *, max_new_tokens: int,
                    batch_size: int) -> list[str]:
    """Decode greedily with the KV cache, in left-padded batches, and return only the new text.

    A model without a vision input (the untuned base model) is given the text alone.
    """
    sees_images = hasattr(model, "visual_encoder")
    pixels = PixelBatcher(processor, cache_size=batch_size) if sees_images else None
    visual_positions = getattr(model, "visual_sequence_length", 0) if sees_images else 0
    limit = context_length(model)
    device = next(model.parameters()).device
    outputs: list[str] = []
    for start in tqdm(range(0, len(examples), batch_size), desc="generate", unit="batch", mininterval=2.0):
        chunk = examples[start: start + batch_size]
        sequences = [encode_prompt(tokenizer, example.example.prompt) for example in chunk]
        for example, ids in zip(chunk, sequences):
            needed = len(ids) + visual_positions + max_new_tokens
            if limit is not None and needed > limit:
                raise UserError(
                    f"{example.item}: the prompt needs {needed} positions ({len(ids)} prompt tokens, "
                    f"{visual_positions} visual, {max_new_tokens} new) but the model's context is {limit}; "
                    "lower max_new_tokens or use a model with a longer context (prompts are never truncated)"
                )
        batch = left_padded(sequences, tokenizer.pad_token_id, device)
        if pixels is not None:
            batch["pixel_values"] = pixels(chunk).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        outputs.extend(tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    return outputs


def first_line(text: str) -> str:
    return " ".join(text.strip().split("\n", 1)[0].split())


def evaluate_captions(model, tokenizer, processor, annotations: Path, images: Path, *, split: str = "test",
                      max_new_tokens: int = 24, batch_size: int = 32, limit: int | None = None) -> dict[str, Any]:
    """Caption the split's images and score the captions against the references with pycocoevalcap."""
    from excitor_bench.evaluate.captions import check_java, score_captions
    from excitor_bench.vision.coco import load_karpathy

    check_java()  # before generating, so a missing Java costs no model time
    records = load_karpathy(Path(annotations), Path(images), splits=[split])[:limit]
    examples = [VisualExample(record.path, Example(CAPTION_INSTRUCTION, "", ""), f"COCO image {record.image_id}")
                for record in records]
    outputs = generate_visual(model, tokenizer, processor, examples, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    predictions = {record.image_id: first_line(output) for record, output in zip(records, outputs)}
    scores = score_captions({record.image_id: list(record.captions) for record in records}, predictions)
    for image_id, item in scores["per_item"].items():
        item["caption"] = predictions[image_id]
    log.info("captions on %d %s images: %s", len(records), split, scores["metrics"])
    return {"split": split, **scores}


def evaluate_scienceqa(model, tokenizer, processor, root: Path, *, split: str = "test", max_new_tokens: int = 8,
                       batch_size: int = 32, limit: int | None = None) -> dict[str, Any]:
    """Generate an answer to each of the split's problems and score the letters, overall and per ScienceQA group."""
    from excitor_bench.evaluate.scienceqa import score_scienceqa
    from excitor_bench.vision.scienceqa import load_scienceqa

    problems = load_scienceqa(Path(root), split)[:limit]
    examples = scienceqa_examples(problems)
    outputs = generate_visual(model, tokenizer, processor, examples, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    result = score_scienceqa(problems, outputs)
    log.info("ScienceQA %s accuracy %.2f %% on %d problems", split, result["accuracy"], len(problems))
    return {"split": split, **result}


def evaluate_random_choice(root: Path, *, split: str = "test", limit: int | None = None) -> dict[str, Any]:
    """Score the floor a ScienceQA answerer must beat: a uniform random choice, as expected per problem."""
    from excitor_bench.evaluate.scienceqa import score_random_choice
    from excitor_bench.vision.scienceqa import load_scienceqa

    problems = load_scienceqa(Path(root), split)[:limit]
    return {"split": split, **score_random_choice(problems)}


def evaluate_most_common_caption(train_annotations: Path, images: Path, *, split: str = "test",
                                 limit: int | None = None) -> dict[str, Any]:
    """Score the floor a captioner must beat: the most common training caption, given for every image."""
    from excitor_bench.evaluate.captions import most_common_caption, score_captions
    from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy

    training = load_karpathy(Path(train_annotations), Path(images), splits=TRAIN_SPLITS, check_images=False)
    caption = most_common_caption(c for record in training for c in record.captions)
    records = load_karpathy(Path(train_annotations), Path(images), splits=[split], check_images=False)[:limit]
    scores = score_captions({r.image_id: list(r.captions) for r in records}, {r.image_id: caption for r in records})
    log.info("most common training caption %r on %d %s images: %s", caption, len(records), split, scores["metrics"])
    return {"split": split, "caption": caption, **scores}

