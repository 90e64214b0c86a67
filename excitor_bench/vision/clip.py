"""Train a tiny CLIP on captioned scenes, score its retrieval, and load a frozen CLIP vision tower.

LLaMA-Excitor feeds the features of a frozen CLIP vision tower (openai/clip-vit-large-patch14 at
paper scale) into the language model. On CPU machines the benchmark trains a tiny CLIP instead, with
transformers' own CLIPModel and contrastive loss, and saves it as a real CLIP folder:

    out_dir/
      config.json, model.safetensors      CLIPModel.save_pretrained (text and vision towers)
      preprocessor_config.json            the image processor (resize, crop, normalisation)
      tokenizer.json, tokenizer_config.json
                                          a word-level tokenizer trained on the captions
      train.json                          the settings, the loss of every step and the run's figures

So `load_vision_tower` takes either that folder or a hub id such as openai/clip-vit-large-patch14,
and `image_features` returns the same two feature kinds from both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

# transformers 5.25 has two CLIP image processors: CLIPImageProcessor, which needs torchvision (and
# without it falls back to the PIL one with a warning), and CLIPImageProcessorPil (PIL and NumPy).
# The PIL one works without torchvision, gives the same pixel values on every machine whether or not
# torchvision is installed, and reads any CLIP preprocessor_config.json, openai/clip-vit-large-patch14's
# included. Its saved file still names "CLIPImageProcessor", so AutoImageProcessor can load it too.
from transformers import CLIPImageProcessorPil

from excitor_bench.config import reject_unknown_keys
from excitor_bench.errors import UserError

logger = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
# The order fixes the ids: pad 0, unk 1, bos 2, eos 3. The eos id must not be 2, because
# CLIPTextTransformer treats eos_token_id == 2 as an old config and pools at the argmax of the ids.
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN]

# OpenAI's CLIP training clips the learned logit scale at 100 (temperature at least 0.01).
MAX_LOGIT_SCALE = math.log(100.0)
# Floor for the per-channel standard deviation of the training images, so that a channel that is
# nearly constant in every image is not divided by zero. One 8-bit intensity step.
MIN_IMAGE_STD = 1.0 / 255.0
TRAIN_FILE = "train.json"
# The ClipSettings fields that are not positive integers, checked one by one.
NON_SIZE_FIELDS = ("learning_rate", "weight_decay", "seed", "warmup")
EMBED_BATCH_SIZE = 256


@dataclass
class ClipSettings:
    """The `clip:` section: the sizes of the tiny CLIP and its contrastive training schedule.

    With these defaults, the default scenes of excitor_bench.world.scenes (620 training images of
    32x32 px with 5 captions each) trained in 35 s on one thread of an AMD EPYC CPU. That was one
    run with torch 2.13 while other jobs shared the 2 cores. On the 100 test scenes, recall at 1 was
    79 % from image to caption and 77 % from caption to image, against a chance level of 1 %. Some
    captions are the same text for several scenes, which caps caption-to-image recall at 1 near 87 %.
    NOTE: on that busy machine, 2 threads made a similar run 7 times slower than 1 thread.
    """

    image_size: int = 32
    patch_size: int = 8
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate_size: int = 256
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 256
    projection_dim: int = 64
    max_text_length: int = 32
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name in NON_SIZE_FIELDS:
                continue
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"clip.{field.name} = {value!r} is invalid; set it to a positive integer in the config")
        if self.image_size % self.patch_size:
            raise UserError(
                f"clip.image_size = {self.image_size} is not divisible by clip.patch_size = {self.patch_size}; "
                "change one of them in the config"
            )
        for tower in ("vision", "text"):
            hidden, heads = getattr(self, f"{tower}_hidden_size"), getattr(self, f"{tower}_heads")
            if hidden % heads:
                raise UserError(
                    f"clip.{tower}_hidden_size = {hidden} is not divisible by clip.{tower}_heads = {heads}; "
                    "change one of them in the config"
                )
        # Each caption needs at least BOS, one word and EOS.
        if self.max_text_length < 3:
            raise UserError(
                f"clip.max_text_length = {self.max_text_length} is invalid; set it to at least 3 in the config"
            )
        if self.batch_size < 2:
            raise UserError(
                f"clip.batch_size = {self.batch_size} is invalid; the contrastive loss needs at least 2 pairs per "
                "batch, so set it to 2 or more in the config"
            )
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or not 0 <= self.warmup <= self.steps:
            raise UserError(f"clip.warmup = {self.warmup!r} is invalid; set it to an integer from 0 to clip.steps")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"clip.seed = {self.seed!r} is invalid; set it to an integer >= 0 in the config")
        if not is_number(self.learning_rate) or self.learning_rate <= 0:
            raise UserError(f"clip.learning_rate = {self.learning_rate!r} is invalid; set it to a positive number")
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            raise UserError(f"clip.weight_decay = {self.weight_decay!r} is invalid; set it to a number >= 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "the config") -> ClipSettings:
        """Build settings from the `clip:` section, filling defaults for missing keys.

        Raises UserError naming the first unknown key, the file it came from and the valid keys.
        """
        values = dict(values or {})
        reject_unknown_keys(cls, "clip", values, source)
        return cls(**values)

    def clip_config(self, tokenizer: PreTrainedTokenizerFast) -> CLIPConfig:
        """Return the CLIPConfig, taking the vocabulary and special token ids from the tokenizer."""
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.text_hidden_size,
            intermediate_size=self.text_intermediate_size,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_text_length,
            projection_dim=self.projection_dim,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            # CLIPTextTransformer pools the text at the first position whose id equals this eos id.
            # Left at its default (49407, from OpenAI's vocabulary), it would match nothing and pool
            # position 0, the BOS token, for every caption.
            eos_token_id=tokenizer.eos_token_id,
        )
        vision_config = CLIPVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.vision_hidden_size,
            intermediate_size=self.vision_intermediate_size,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            projection_dim=self.projection_dim,
            num_channels=3,
        )
        return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=self.projection_dim)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class CaptionedImages:
    """Training pairs grouped by image: each distinct image once, with all of its distinct captions."""

    images: list[PIL.Image.Image]
    captions: list[str]
    """All captions, grouped by image: image i owns captions[offsets[i] : offsets[i] + counts[i]]."""
    offsets: list[int]
    counts: list[int]


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def train_clip(
    pairs: Sequence[tuple[PIL.Image.Image, str]],
    settings: ClipSettings | dict[str, Any],
    out_dir: Path,
    *,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a tiny CLIPModel contrastively on (image, caption) pairs and save it as a CLIP folder.

    Pairs that share an image (same size, mode and pixels) are grouped, so that a batch never contains
    one image twice: each step draws `batch_size` distinct images and one random caption of each.
    `device` defaults to CUDA when available. The same settings, pairs, device and thread count
    give bit-identical weights. Returns the run's figures, which `out_dir/train.json` also stores
    together with the loss of every step.
    """
    if not isinstance(settings, ClipSettings):
        settings = ClipSettings.from_dict(settings)
    data = group_pairs(pairs)
    if len(data.images) < 2:
        raise UserError(
            f"the CLIP training pairs contain {len(data.images)} distinct image(s); the contrastive loss needs "
            "at least 2, so generate more scenes"
        )
    # NOTE: only the CPU path has been run. Training on CUDA is expected to work but is untested.
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)

    tokenizer = train_caption_tokenizer(data.captions, settings.max_text_length)
    processor = build_image_processor(data.images, settings.image_size)
    pixel_values = processor(images=data.images, return_tensors="pt")["pixel_values"].to(device)  # (N, 3, H, W)
    caption_ids, caption_mask = encode_captions(tokenizer, data.captions, settings.max_text_length)  # (M, T) each
    caption_ids, caption_mask = caption_ids.to(device), caption_mask.to(device)

    torch.manual_seed(settings.seed)
    model = CLIPModel(settings.clip_config(tokenizer)).to(device)
    optimizer = build_optimizer(model, settings)
    schedule = get_cosine_schedule_with_warmup(optimizer, settings.warmup, settings.steps)
    batch_size = min(settings.batch_size, len(data.images))
    logger.info(
        "training a %.2fM-parameter CLIP on %d images with %d captions, batch %d, %d steps on %s",
        count_parameters(model) / 1e6, len(data.images), len(data.captions), batch_size, settings.steps, device,
    )

    run = train_loop(model, optimizer, schedule, data, pixel_values, caption_ids, caption_mask, settings, progress)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    figures = {
        "steps": settings.steps,
        "batch_size": batch_size,
        "images": len(data.images),
        "captions": len(data.captions),
        "vocab_size": len(tokenizer),
        "parameters": count_parameters(model),
        "vision_parameters": count_parameters(model.vision_model),
        "text_parameters": count_parameters(model.text_model),
        "first_loss": run["first_loss"],
        "final_loss": run["final_loss"],
        # The loss of a model that scores every pair alike: cross-entropy over a uniform batch.
        "uniform_loss": math.log(batch_size),
        "logit_scale": model.logit_scale.exp().item(),
        "time_s": run["time_s"],
        "pairs_per_s": settings.steps * batch_size / run["time_s"],
        "device": str(device),
        "num_threads": torch.get_num_threads(),
    }
    record = {**figures, "settings": dataclasses.asdict(settings), "losses": run["losses"]}
    (out_dir / TRAIN_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    logger.info("saved the CLIP to %s: final loss %.4f in %.1f s", out_dir, figures["final_loss"], figures["time_s"])
    return figures


def group_pairs(pairs: Sequence[tuple[PIL.Image.Image, str]]) -> CaptionedImages:
    """Check the pairs and group their captions by image content, in first-seen order."""
    if len(pairs) == 0:
        raise UserError("no CLIP training pairs were given; generate the scenes first")
    groups: dict[bytes, tuple[PIL.Image.Image, dict[str, None]]] = {}
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UserError(f"CLIP training pair {index} is {type(pair).__name__}; pass (PIL image, caption) pairs")
        image, caption = pair
        if not isinstance(image, PIL.Image.Image):
            raise UserError(f"CLIP training pair {index} has a {type(image).__name__} as image; pass a PIL image")
        if not isinstance(caption, str) or not caption.strip():
            raise UserError(
                f"CLIP training pair {index} has the caption {caption!r}; give every image a non-empty caption"
            )
        key = image_key(image)
        if key not in groups:
            groups[key] = (image, {})
        groups[key][1][caption] = None

    images, captions, offsets, counts = [], [], [], []
    for image, image_captions in groups.values():
        images.append(image)
        offsets.append(len(captions))
        counts.append(len(image_captions))
        captions.extend(image_captions)
    return CaptionedImages(images=images, captions=captions, offsets=offsets, counts=counts)


def image_key(image: PIL.Image.Image) -> bytes:
    """Return a digest of the image's mode, size and pixels, equal for pixel-identical images."""
    digest = hashlib.sha256(f"{image.mode} {image.size}".encode())
    digest.update(image.tobytes())
    return digest.digest()


def train_caption_tokenizer(captions: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """Train a lowercase word-level tokenizer on the captions, with CLIP's BOS/EOS framing.

    Every encoding is BOS, the words, EOS, and truncation to `max_length` keeps both special tokens.
    Words not seen in training map to UNK.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    # Like CLIP's own tokenizer: Unicode-normalised and lowercased, words and punctuation split apart.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1, show_progress=False)
    # Sorted, so that the vocabulary does not depend on the order of the pairs.
    tokenizer.train_from_iterator(sorted(captions), trainer=trainer)

    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    logger.info("trained a %d-word caption tokenizer on %d captions", len(wrapped), len(captions))
    return wrapped


def encode_captions(tokenizer, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize captions, right-padded to the longest, and return input ids and attention mask, (M, T) each."""
    encoded = tokenizer(
        list(captions), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    truncated = sum(len(tokenizer(caption)["input_ids"]) > max_length for caption in captions)
    if truncated:
        logger.warning(
            "%d of %d captions are longer than %d tokens and were truncated", truncated, len(captions), max_length
        )
    return encoded["input_ids"], encoded["attention_mask"]


def build_image_processor(images: Sequence[PIL.Image.Image], image_size: int) -> CLIPImageProcessorPil:
    """Return a CLIP image processor that resizes and crops to `image_size` and normalises with the images' statistics.

    The tiny CLIP is trained from scratch, so OpenAI's mean and std (statistics of OpenAI's training
    images) have no special meaning for it. Like them, ours are the per-channel mean and std of the
    training images, taken after resizing and cropping, which gives the model inputs of mean 0 and
    std 1 per channel.
    """
    geometry = {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size}}
    unnormalised = CLIPImageProcessorPil(**geometry, do_normalize=False)
    pixels = np.stack(unnormalised(images=list(images))["pixel_values"]).astype(np.float64)  # (N, 3, H, W) in [0, 1]
    mean = pixels.mean(axis=(0, 2, 3))
    std = np.maximum(pixels.std(axis=(0, 2, 3)), MIN_IMAGE_STD)
    image_mean = [round(float(value), 6) for value in mean]
    image_std = [round(float(value), 6) for value in std]
    logger.info("image normalisation from %d training images: mean %s std %s", len(images), image_mean, image_std)
    return CLIPImageProcessorPil(**geometry, image_mean=image_mean, image_std=image_std)


def build_optimizer(model: torch.nn.Module, settings: ClipSettings) -> torch.optim.AdamW:
    """Build AdamW with weight decay on matrices only. Biases, norms and the logit scale are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # beta2 = 0.98 as in CLIP's training recipe, which is steadier than 0.999 for contrastive losses.
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.98), eps=1e-6)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def sample_batches(counts: Sequence[int], batch_size: int, generator: torch.Generator):
    """Yield (image indices, caption choice) batches forever: epochs over a random image order.

    Each batch has `batch_size` distinct images. The remainder of an epoch that does not fill a batch
    is dropped. The caption choice is a uniform draw in [0, 1) per image, scaled to its caption count.
    """
    while True:
        order = torch.randperm(len(counts), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield order[start : start + batch_size], torch.rand(batch_size, generator=generator)


def train_loop(
    model: CLIPModel,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    data: CaptionedImages,
    pixel_values: torch.Tensor,
    caption_ids: torch.Tensor,
    caption_mask: torch.Tensor,
    settings: ClipSettings,
    progress: bool,
) -> dict[str, Any]:
    """Run the optimisation steps and return every step's loss, the first and final loss and the wall time."""
    model.train()
    batch_size = min(settings.batch_size, len(data.images))
    offsets = torch.tensor(data.offsets)
    counts = torch.tensor(data.counts)
    generator = torch.Generator().manual_seed(settings.seed)
    batches = sample_batches(data.counts, batch_size, generator)
    losses: list[float] = []
    start = window_start = time.perf_counter()

    bar = tqdm(range(1, settings.steps + 1), desc="train clip", unit="step", disable=not progress, mininterval=2.0)
    for step in bar:
        images, draws = next(batches)
        captions = offsets[images] + (draws * counts[images]).long()  # (B,) one caption of each image
        output = model(
            input_ids=caption_ids[captions],  # (B, T)
            attention_mask=caption_mask[captions],  # (B, T)
            pixel_values=pixel_values[images],  # (B, 3, H, W)
            return_loss=True,
        )
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

        value = output.loss.item()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.3f}")
        if step % settings.log_every == 0 or step == settings.steps:
            elapsed = time.perf_counter() - window_start
            steps_in_window = step % settings.log_every or settings.log_every
            logger.info(
                "step %d/%d loss %.4f lr %.2e logit scale %.1f %.0f pairs/s",
                step, settings.steps, value, schedule.get_last_lr()[0], model.logit_scale.exp().item(),
                steps_in_window * batch_size / elapsed,
            )
            window_start = time.perf_counter()

    # The final loss averages the last steps, because one batch's loss is noisy.
    tail = losses[-max(1, min(20, settings.steps // 5)) :]
    return {
        "losses": losses,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "time_s": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------------------------------


def retrieval_scores(model_dir: Path, items: Sequence[tuple[PIL.Image.Image, Sequence[str]]]) -> dict[str, Any]:
    """Score image-to-caption and caption-to-image retrieval of the CLIP in `model_dir` on held-out items.

    Every image is ranked against all captions of all items, and every caption against all images,
    by cosine similarity of the projected embeddings. An image counts as hit at k when any of its own
    captions is among its top k captions. A caption counts as hit when its own image is among its
    top k images. Recall at 1 and 5 and their chance levels (`chance_recall_at_k`) are percentages. The
    model runs on the CPU in float32, and the same folder and items give the same scores.
    """
    model_dir = Path(model_dir)
    fix = "pass a folder saved by train_clip, which contains both towers and the tokenizer"
    if not model_dir.exists():
        raise UserError(f"the CLIP folder {model_dir} was not found; {fix}")
    check_clip_folder(model_dir, ("clip",), fix)
    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"the CLIP folder {model_dir} has no tokenizer.json; {fix}")
    images, captions, owners = flatten_items(items)
    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    processor = CLIPImageProcessorPil.from_pretrained(str(model_dir), local_files_only=True)

    similarity = clip_similarity(model, tokenizer, processor, images, captions)  # (N, M)
    counts = [owners.count(index) for index in range(len(images))]
    scores: dict[str, Any] = {"images": len(images), "captions": len(captions)}
    for k in (1, 5):
        image_recall, caption_recall = recall_at_k(similarity, owners, k)
        image_chance, caption_chance = chance_recall_at_k(counts, k)
        scores[f"image_to_caption_recall_at_{k}"] = image_recall
        scores[f"caption_to_image_recall_at_{k}"] = caption_recall
        scores[f"image_to_caption_chance_at_{k}"] = image_chance
        scores[f"caption_to_image_chance_at_{k}"] = caption_chance
    logger.info(
        "retrieval on %d images and %d captions: image->caption R@1 %.1f %% (chance %.1f %%), "
        "caption->image R@1 %.1f %% (chance %.1f %%)",
        len(images), len(captions), scores["image_to_caption_recall_at_1"], scores["image_to_caption_chance_at_1"],
        scores["caption_to_image_recall_at_1"], scores["caption_to_image_chance_at_1"],
    )
    return scores


def flatten_items(
    items: Sequence[tuple[PIL.Image.Image, Sequence[str]]],
) -> tuple[list[PIL.Image.Image], list[str], list[int]]:
    """Check the items and return the images, all captions in item order, and each caption's image index."""
    if len(items) < 2:
        raise UserError(f"retrieval needs at least 2 held-out images, got {len(items)}; generate more scenes")
    images, captions, owners = [], [], []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise UserError(f"retrieval item {index} is {type(item).__name__}; pass (PIL image, captions) pairs")
        image, image_captions = item
        if not isinstance(image, PIL.Image.Image):
            raise UserError(f"retrieval item {index} has a {type(image).__name__} as image; pass a PIL image")
        if isinstance(image_captions, str) or not image_captions:
            raise UserError(
                f"retrieval item {index} has the captions {image_captions!r}; pass a non-empty list of strings"
            )
        for caption in image_captions:
            if not isinstance(caption, str) or not caption.strip():
                raise UserError(
                    f"retrieval item {index} has the caption {caption!r}; every caption must be non-empty text"
                )
            captions.append(caption)
            owners.append(index)
        images.append(image)
    return images, captions, owners


@torch.no_grad()
def clip_similarity(
    model: CLIPModel,
    tokenizer,
    processor: CLIPImageProcessorPil,
    images: Sequence[PIL.Image.Image],
    captions: Sequence[str],
) -> torch.Tensor:
    """Return the cosine similarity of every image to every caption, (N_images, N_captions), float64."""
    image_embeds, text_embeds = [], []
    for start in range(0, len(images), EMBED_BATCH_SIZE):
        pixels = processor(images=list(images[start : start + EMBED_BATCH_SIZE]), return_tensors="pt")["pixel_values"]
        image_embeds.append(model.get_image_features(pixel_values=pixels).pooler_output)  # (b, D)
    max_length = model.config.text_config.max_position_embeddings
    for start in range(0, len(captions), EMBED_BATCH_SIZE):
        ids, mask = encode_captions(tokenizer, captions[start : start + EMBED_BATCH_SIZE], max_length)
        text_embeds.append(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output)  # (b, D)
    image_matrix = torch.nn.functional.normalize(torch.cat(image_embeds).double(), dim=-1)  # (N, D)
    text_matrix = torch.nn.functional.normalize(torch.cat(text_embeds).double(), dim=-1)  # (M, D)
    return image_matrix @ text_matrix.T  # (N, M)


def recall_at_k(similarity: torch.Tensor, caption_owner: Sequence[int], k: int) -> tuple[float, float]:
    """Return (image-to-caption, caption-to-image) recall at k in percent from an image-by-caption similarity.

    `similarity` is (N_images, N_captions); `caption_owner[j]` is the index of caption j's image.
    Ties count as their expected value under a uniformly random order of the tied entries, so the
    result does not depend on the order of images or captions, and a model that scores everything
    alike gets exactly the chance level.
    """
    n_images, n_captions = similarity.shape
    owner = torch.as_tensor(caption_owner)
    if owner.shape != (n_captions,) or owner.min() < 0 or owner.max() >= n_images:
        raise ValueError(f"caption_owner must give an image index in [0, {n_images}) for each of {n_captions} captions")

    image_hits = 0.0
    for image in range(n_images):
        row = similarity[image]  # (M,)
        own = owner == image
        best = row[own].max()
        higher = int((row[~own] > best).sum())
        tied_other = int((row[~own] == best).sum())
        tied_own = int((row[own] == best).sum())
        image_hits += hit_probability(k - higher, tied_own, tied_other)

    caption_hits = 0.0
    for caption in range(n_captions):
        column = similarity[:, caption]  # (N,)
        target = column[owner[caption]]
        others = torch.cat([column[: owner[caption]], column[owner[caption] + 1 :]])
        higher = int((others > target).sum())
        tied_other = int((others == target).sum())
        caption_hits += hit_probability(k - higher, 1, tied_other)

    return 100.0 * image_hits / n_images, 100.0 * caption_hits / n_captions


def hit_probability(slots: int, relevant: int, irrelevant: int) -> float:
    """Return the probability that a random order of a tied block puts a relevant entry in its first `slots` places.

    The block has `relevant` entries that count as a hit and `irrelevant` ones that do not. It is
    1 - C(irrelevant, slots) / C(relevant + irrelevant, slots), the chance that the first places are
    all irrelevant subtracted from 1.
    """
    if slots <= 0:
        return 0.0
    if slots > irrelevant:
        return 1.0
    return 1.0 - math.comb(irrelevant, slots) / math.comb(relevant + irrelevant, slots)


def chance_recall_at_k(captions_per_image: Sequence[int], k: int) -> tuple[float, float]:
    """Return (image-to-caption, caption-to-image) recall at k in percent of a uniformly random ranking.

    Caption to image: one of N images is right, so chance is min(k, N) / N. Image to caption: an image
    with c of the M captions is hit unless all k top captions belong to other images, so chance is
    the mean over images of 1 - C(M - c, k) / C(M, k).
    """
    n_images = len(captions_per_image)
    n_captions = sum(captions_per_image)
    image_chance = sum(hit_probability(k, count, n_captions - count) for count in captions_per_image) / n_images
    caption_chance = min(k, n_images) / n_images
    return 100.0 * image_chance, 100.0 * caption_chance


# ---------------------------------------------------------------------------------------------------
# The frozen vision tower
# ---------------------------------------------------------------------------------------------------

CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
# A hub id is "name" or "owner/name" made of letters, digits, "-", "_" and ".". Paths such as "/x",
# "./x", "~/x" or "a/b/c" do not match, so a missing folder of that form is never looked up online.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
VISION_TOWER_FIX = (
    "pass a CLIP folder (such as one saved by train_clip, with config.json, model.safetensors and "
    "preprocessor_config.json) or a hub id such as openai/clip-vit-large-patch14"
)


def load_vision_tower(
    path_or_id: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[CLIPVisionModel, CLIPImageProcessorPil]:
    """Load the frozen vision tower of a CLIP folder or hub id, and its image processor.

    Only the vision weights are read: a full CLIPModel checkpoint loads, and its text tower and
    projections are skipped. The model is in eval mode with requires_grad False. A local folder is
    never looked up on the hub.
    """
    local = Path(path_or_id).expanduser()
    if local.exists():
        check_clip_folder(local)
        source, local_only = str(local), True
    elif HUB_ID.match(str(path_or_id)):
        source, local_only = str(path_or_id), False
    else:
        raise UserError(f"the CLIP folder {path_or_id} was not found; {VISION_TOWER_FIX}")

    # transformers logs a load report that lists the text tower's weights of a full CLIPModel
    # checkpoint as UNEXPECTED. They are skipped on purpose, and only missing vision weights are an error.
    try:
        model, info = CLIPVisionModel.from_pretrained(
            source, dtype=dtype, local_files_only=local_only, output_loading_info=True
        )
        processor = CLIPImageProcessorPil.from_pretrained(source, local_files_only=local_only)
    except OSError as error:
        where = "in the folder" if local_only else "locally or on the hub as"
        raise UserError(
            f"no CLIP vision tower could be loaded {where} {source} ({error}); {VISION_TOWER_FIX}"
        ) from error
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(
            f"the checkpoint {source} lacks {len(missing)} vision tower weights (first: {missing[0]}); "
            f"{VISION_TOWER_FIX}"
        )

    model = model.to(device).eval()
    model.requires_grad_(False)
    logger.info(
        "loaded the CLIP vision tower from %s: hidden size %d, %d patches of %d px, %.1fM parameters, %s on %s",
        source, model.config.hidden_size, (model.config.image_size // model.config.patch_size) ** 2,
        model.config.patch_size, count_parameters(model) / 1e6, dtype, device,
    )
    return model, processor


def check_clip_folder(
    folder: Path, model_types: Sequence[str] = CLIP_MODEL_TYPES, fix: str = VISION_TOWER_FIX
) -> None:
    """Raise UserError, ending with `fix`, unless `folder` contains a CLIP config.json and preprocessor_config.json."""
    if not folder.is_dir():
        raise UserError(f"the CLIP path {folder} is a file, not a folder; {fix}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"the CLIP folder {folder} has no config.json; {fix}")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise UserError(f"the CLIP config {config_path} is not a JSON object ({error}); {fix}") from error
    if model_type not in model_types:
        raise UserError(
            f"the folder {folder} contains a model of type {model_type!r}, expected one of "
            f"{', '.join(model_types)}; {fix}"
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise UserError(f"the CLIP folder {folder} has no preprocessor_config.json; {fix}")


@torch.no_grad()
def image_features(
    vision: CLIPVisionModel, processor: CLIPImageProcessorPil, images: Sequence[PIL.Image.Image]
) -> dict[str, torch.Tensor]:
    """Encode images with the frozen vision tower, on its device and in its dtype.

    Returns "global", the pooled class token after the final layer norm, (B, C_v), and "tokens",
    the last hidden states of the class token and every patch, (B, 1 + patches, C_v). C_v is
    vision_config.hidden_size, because neither goes through CLIP's visual projection.
    """
    if len(images) == 0:
        raise ValueError("image_features needs at least one image")
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
    pixels = pixels.to(device=vision.device, dtype=vision.dtype)
    output = vision(pixel_values=pixels)
    return {"global": output.pooler_output, "tokens": output.last_hidden_state}
