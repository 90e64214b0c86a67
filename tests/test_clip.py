"""Tests for the tiny CLIP: settings, training, retrieval scores and the vision-tower loader, on micro sizes."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPModel

from excitor_bench.errors import UserError
from excitor_bench.vision.clip import (
    ClipSettings,
    build_image_processor,
    chance_recall_at_k,
    group_pairs,
    image_features,
    load_vision_tower,
    recall_at_k,
    retrieval_scores,
    train_clip,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
CORNERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
IMAGE_SIZE = 16

# 16 x 16 px images cut into four 8 x 8 patches, so each corner of the scene is one patch.
MICRO_CLIP = {
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
    "vision_hidden_size": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "vision_intermediate_size": 64,
    "text_hidden_size": 32,
    "text_layers": 1,
    "text_heads": 2,
    "text_intermediate_size": 64,
    "projection_dim": 32,
    "max_text_length": 12,
    "steps": 300,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "warmup": 10,
    "seed": 0,
    "log_every": 50,
}


# (width, x offset, y offset) of a square inside its 8 x 8 quarter: 16 + 9 + 4 = 29 placements.
PLACEMENTS = [(width, dx, dy) for width in (5, 6, 7) for dx in range(9 - width) for dy in range(9 - width)]
random.Random(0).shuffle(PLACEMENTS)
TRAIN_PLACEMENTS, HELDOUT_PLACEMENTS = PLACEMENTS[:6], PLACEMENTS[6:]


def draw_scene(colour: str, corner: str, placement: tuple[int, int, int]) -> Image.Image:
    """Draw one coloured square at `placement` inside one quarter of a light 16 x 16 image."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (235, 235, 230))
    column, row = CORNERS[corner]
    width, dx, dy = placement
    left, top = column * 8 + dx, row * 8 + dy
    image.paste(COLOURS[colour], (left, top, left + width, top + width))
    return image


def captions_of(colour: str, corner: str) -> list[str]:
    return [f"a {colour} square at the {corner}", f"{corner}: {colour}"]


def make_scenes(placements: list[tuple[int, int, int]]) -> list[tuple[Image.Image, list[str]]]:
    """Every colour in every corner at each placement: 16 distinct scenes per placement, 2 captions each."""
    return [
        (draw_scene(colour, corner, placement), captions_of(colour, corner))
        for placement in placements
        for colour in COLOURS
        for corner in CORNERS
    ]


def make_heldout_scenes(seed: int) -> list[tuple[Image.Image, list[str]]]:
    """Every colour in every corner once, each at a placement that no training scene uses."""
    rng = random.Random(seed)
    return [
        (draw_scene(colour, corner, rng.choice(HELDOUT_PLACEMENTS)), captions_of(colour, corner))
        for colour in COLOURS
        for corner in CORNERS
    ]


def to_pairs(scenes: list[tuple[Image.Image, list[str]]]) -> list[tuple[Image.Image, str]]:
    return [(image, caption) for image, captions in scenes for caption in captions]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one thread, because a second thread made this tiny training 34 times slower on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clip")
    train_clip(to_pairs(make_scenes(TRAIN_PLACEMENTS)), MICRO_CLIP, out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def heldout_scenes() -> list[tuple[Image.Image, list[str]]]:
    return make_heldout_scenes(seed=2)


def read_train_record(model_dir: Path) -> dict:
    return json.loads((model_dir / "train.json").read_text(encoding="utf-8"))


# --- settings -----------------------------------------------------------------------------------


def test_settings_unknown_key_rejected():
    with pytest.raises(UserError) as error:
        ClipSettings.from_dict({"stepz": 10}, source="config/micro.yaml")
    message = str(error.value)
    assert "clip.stepz" in message
    assert "config/micro.yaml" in message
    assert "steps" in message


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"image_size": 30, "patch_size": 8}, "clip.image_size"),
        ({"vision_hidden_size": 30, "vision_heads": 4}, "clip.vision_hidden_size"),
        ({"text_hidden_size": 30, "text_heads": 4}, "clip.text_hidden_size"),
        ({"batch_size": 1}, "clip.batch_size"),
        ({"steps": 0}, "clip.steps"),
        ({"steps": 10, "warmup": 11}, "clip.warmup"),
        ({"learning_rate": 0}, "clip.learning_rate"),
        ({"weight_decay": -0.1}, "clip.weight_decay"),
        ({"max_text_length": 2}, "clip.max_text_length"),
        ({"vision_layers": True}, "clip.vision_layers"),
    ],
)
def test_settings_invalid_value_rejected(values, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        ClipSettings.from_dict(values)


def test_settings_defaults_accepted():
    settings = ClipSettings.from_dict({})
    assert settings.image_size % settings.patch_size == 0
    assert settings == ClipSettings()


# --- data preparation ---------------------------------------------------------------------------


def test_pairs_grouped_by_pixels():
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    same_red = Image.new("RGB", (4, 4), (255, 0, 0))
    blue = Image.new("RGB", (4, 4), (0, 0, 255))
    pairs = [(red, "red one"), (blue, "blue one"), (same_red, "red two"), (red, "red one")]

    data = group_pairs(pairs)

    assert len(data.images) == 2
    assert data.captions == ["red one", "red two", "blue one"]
    assert data.offsets == [0, 2]
    assert data.counts == [2, 1]


@pytest.mark.parametrize(
    ("pairs", "named"),
    [
        ([], "no CLIP training pairs"),
        ([(Image.new("RGB", (4, 4)), "ok"), ("not an image", "caption")], "pair 1"),
        ([(Image.new("RGB", (4, 4)), "  ")], "pair 0"),
        ([(Image.new("RGB", (4, 4)), "ok", "extra")], "pair 0"),
    ],
)
def test_bad_pairs_rejected(pairs, named):
    with pytest.raises(UserError, match=named):
        group_pairs(pairs)


def test_single_image_rejected(tmp_path):
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(UserError, match="at least 2"):
        train_clip([(image, "a"), (image, "b")], MICRO_CLIP, tmp_path, progress=False)


def test_normalisation_from_training_images():
    # Half the images black, half white: every channel has mean 0.5 and std 0.5 (in [0, 1] units).
    images = [Image.new("RGB", (8, 8), (0, 0, 0)), Image.new("RGB", (8, 8), (255, 255, 255))]
    processor = build_image_processor(images, image_size=8)
    assert list(processor.image_mean) == [0.5, 0.5, 0.5]
    assert list(processor.image_std) == [0.5, 0.5, 0.5]

    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 8, 8)
    assert torch.allclose(pixels[0], torch.full((3, 8, 8), -1.0))
    assert torch.allclose(pixels[1], torch.full((3, 8, 8), 1.0))


def test_constant_channel_std_floored():
    # Both images have blue 0, so the blue channel's std is 0 and must not divide by zero.
    images = [Image.new("RGB", (8, 8), (0, 0, 0)), Image.new("RGB", (8, 8), (255, 255, 0))]
    processor = build_image_processor(images, image_size=8)
    assert processor.image_std[2] == round(1 / 255, 6)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.isfinite(pixels).all()


# --- the saved folder ---------------------------------------------------------------------------


def test_folder_has_clip_files(trained_dir):
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json", "train.json"):
        assert (trained_dir / name).is_file(), name
    config = json.loads((trained_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "clip"
    assert config["vision_config"]["image_size"] == IMAGE_SIZE
    preprocessor = json.loads((trained_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
    assert preprocessor["crop_size"] == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert preprocessor["image_processor_type"] == "CLIPImageProcessor"


def test_tokenizer_frames_caption(trained_dir):
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    ids = tokenizer("A RED square")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a", "red", "square", "<|endoftext|>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a purple square")["input_ids"])[2] == "<unk>"


def test_tokenizer_truncation_keeps_eos(trained_dir):
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    ids = tokenizer("red " * 40, truncation=True, max_length=MICRO_CLIP["max_text_length"])["input_ids"]
    assert len(ids) == MICRO_CLIP["max_text_length"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id


def test_config_eos_matches_tokenizer(trained_dir):
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    text_config = CLIPModel.from_pretrained(trained_dir).config.text_config
    assert text_config.eos_token_id == tokenizer.eos_token_id
    assert text_config.pad_token_id == tokenizer.pad_token_id
    # eos id 2 would switch CLIPTextTransformer to pooling at the argmax of the ids.
    assert tokenizer.eos_token_id != 2


def test_text_pooling_ignores_padding(trained_dir):
    """A caption pools at its own EOS, so padding it next to a longer caption leaves its embedding unchanged."""
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    model = CLIPModel.from_pretrained(trained_dir).eval()
    short, long = "a red square", "a blue square at the bottom right"
    with torch.no_grad():
        alone = model.get_text_features(**tokenizer([short], return_tensors="pt")).pooler_output
        batch = tokenizer([short, long], padding=True, return_tensors="pt")
        assert batch["input_ids"][0, -1] == tokenizer.pad_token_id
        padded = model.get_text_features(**batch).pooler_output
        eos_only = model.text_model(**tokenizer([short], return_tensors="pt"))
    torch.testing.assert_close(padded[0], alone[0])
    # The pooled state is the final hidden state at the EOS position (index 4 of BOS a red square EOS).
    torch.testing.assert_close(eos_only.pooler_output[0], eos_only.last_hidden_state[0, 4])


# --- training -----------------------------------------------------------------------------------


def test_training_lowers_loss(trained_dir):
    record = read_train_record(trained_dir)
    losses = record["losses"]
    assert len(losses) == MICRO_CLIP["steps"]
    # A model that scores all 32 pairs of a batch alike has the loss ln(32) = 3.47.
    assert record["uniform_loss"] == pytest.approx(math.log(32))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert record["final_loss"] < 0.5 * math.log(32)


def test_train_record_figures(trained_dir):
    record = read_train_record(trained_dir)
    # 6 placements x 4 colours x 4 corners, with 2 captions each.
    assert record["images"] == 96
    assert record["captions"] == 192
    # The two 32 x 32 projections and the logit scale sit outside both towers.
    assert record["parameters"] == record["vision_parameters"] + record["text_parameters"] + 2 * 32 * 32 + 1
    assert record["settings"]["steps"] == MICRO_CLIP["steps"]
    assert record["time_s"] > 0


def test_same_seed_identical_weights(tmp_path):
    pairs = to_pairs(make_scenes(TRAIN_PLACEMENTS[:1]))
    settings = {**MICRO_CLIP, "steps": 4, "warmup": 1, "batch_size": 8}
    train_clip(pairs, settings, tmp_path / "first", device="cpu", progress=False)
    train_clip(pairs, settings, tmp_path / "second", device="cpu", progress=False)
    train_clip(pairs, {**settings, "seed": 1}, tmp_path / "other_seed", device="cpu", progress=False)

    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    other = load_file(tmp_path / "other_seed" / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["visual_projection.weight"], other["visual_projection.weight"])
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json", "config.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


# --- retrieval ----------------------------------------------------------------------------------


def test_retrieval_well_above_chance(trained_dir, heldout_scenes):
    scores = retrieval_scores(trained_dir, heldout_scenes)
    assert scores["images"] == 16
    assert scores["captions"] == 32
    # Chance, by hand: 16 images, 2 captions each. Caption to image: 1/16 at k=1, 5/16 at k=5.
    # Image to caption at k=1: 2 of 32 captions are right, 2/32 = 1/16. At k=5:
    # 1 - C(30, 5) / C(32, 5) = 1 - (27 * 26) / (32 * 31) = 290/992.
    assert scores["caption_to_image_chance_at_1"] == pytest.approx(100 / 16)
    assert scores["caption_to_image_chance_at_5"] == pytest.approx(500 / 16)
    assert scores["image_to_caption_chance_at_1"] == pytest.approx(100 / 16)
    assert scores["image_to_caption_chance_at_5"] == pytest.approx(100 * 290 / 992)
    # Well above chance: at least 6 times the chance level at k=1.
    assert scores["image_to_caption_recall_at_1"] >= 37.5
    assert scores["caption_to_image_recall_at_1"] >= 37.5
    assert scores["image_to_caption_recall_at_5"] >= 75.0
    assert scores["caption_to_image_recall_at_5"] >= 75.0


def test_retrieval_deterministic(trained_dir, heldout_scenes):
    assert retrieval_scores(trained_dir, heldout_scenes) == retrieval_scores(trained_dir, heldout_scenes)


def test_retrieval_bad_items_rejected(trained_dir, heldout_scenes):
    image = heldout_scenes[0][0]
    with pytest.raises(UserError, match="at least 2"):
        retrieval_scores(trained_dir, heldout_scenes[:1])
    with pytest.raises(UserError, match="item 1"):
        retrieval_scores(trained_dir, [(image, ["a"]), (image, "a caption, not a list")])
    with pytest.raises(UserError, match="item 0"):
        retrieval_scores(trained_dir, [(image, []), (image, ["a"])])


def test_retrieval_missing_folder_rejected(tmp_path, heldout_scenes):
    with pytest.raises(UserError, match="was not found"):
        retrieval_scores(tmp_path / "missing", heldout_scenes)


def test_recall_perfect_similarity():
    # 3 images with 2 captions each. Each image is most similar to its own captions.
    owners = [0, 0, 1, 1, 2, 2]
    similarity = torch.tensor(
        [
            [0.9, 0.8, 0.1, 0.0, 0.2, 0.1],
            [0.1, 0.2, 0.7, 0.9, 0.0, 0.3],
            [0.0, 0.1, 0.2, 0.1, 0.6, 0.8],
        ]
    )
    assert recall_at_k(similarity, owners, 1) == (100.0, 100.0)
    assert recall_at_k(similarity, owners, 5) == (100.0, 100.0)


def test_recall_known_misses():
    # One caption per image. Image 1 ranks caption 2 first and its own caption 1 second.
    # Caption 0's best image is image 2 (0.6 > 0.5), and captions 1 and 2 find their own image first.
    similarity = torch.tensor(
        [
            [0.5, 0.1, 0.0],
            [0.2, 0.4, 0.7],
            [0.6, 0.3, 0.9],
        ]
    )
    owners = [0, 1, 2]
    image_recall, caption_recall = recall_at_k(similarity, owners, 1)
    assert image_recall == pytest.approx(100 * 2 / 3)
    assert caption_recall == pytest.approx(100 * 2 / 3)
    # At k=2 image 1 finds caption 1 second and caption 0 finds image 0 second.
    assert recall_at_k(similarity, owners, 2) == (100.0, 100.0)


def test_recall_ties_count_half():
    # Image 0's own caption ties with caption 1 at the top: a random order puts it first half the time.
    similarity = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    image_recall, caption_recall = recall_at_k(similarity, [0, 1], 1)
    assert image_recall == pytest.approx(100 * (0.5 + 1) / 2)
    # Caption 0: image 0 scores 0.5, image 1 scores 0.0, a clear hit. Caption 1: image 1 wins 1.0 > 0.5.
    assert caption_recall == 100.0


def test_recall_constant_similarity_is_chance():
    # A model that scores every pair alike ranks at random: its recall is exactly the chance level.
    owners = [0, 0, 1, 1, 1, 2, 3, 3]
    counts = [2, 3, 1, 2]
    similarity = torch.zeros(4, 8)
    for k in (1, 2, 5):
        image_recall, caption_recall = recall_at_k(similarity, owners, k)
        image_chance, caption_chance = chance_recall_at_k(counts, k)
        assert image_recall == pytest.approx(image_chance)
        assert caption_recall == pytest.approx(caption_chance)


def test_chance_levels_by_hand():
    image_chance, caption_chance = chance_recall_at_k([5] * 100, 1)
    assert image_chance == pytest.approx(1.0)
    assert caption_chance == pytest.approx(1.0)

    # Image to caption at k=5: 1 - C(495, 5) / C(500, 5), written out as a product.
    image_chance, caption_chance = chance_recall_at_k([5] * 100, 5)
    all_wrong = (495 * 494 * 493 * 492 * 491) / (500 * 499 * 498 * 497 * 496)
    assert image_chance == pytest.approx(100 * (1 - all_wrong))
    assert caption_chance == pytest.approx(5.0)

    # Uneven counts: images with 1 and 3 of 4 captions, k=1: (1/4 + 3/4) / 2 = 50 %.
    image_chance, caption_chance = chance_recall_at_k([1, 3], 1)
    assert image_chance == pytest.approx(50.0)
    assert caption_chance == pytest.approx(50.0)
    # k larger than the number of images: the right image is always in the top k.
    assert chance_recall_at_k([1, 3], 5)[1] == 100.0


def test_recall_owner_mismatch_rejected():
    with pytest.raises(ValueError, match="caption_owner"):
        recall_at_k(torch.zeros(2, 3), [0, 1], 1)
    with pytest.raises(ValueError, match="caption_owner"):
        recall_at_k(torch.zeros(2, 2), [0, 2], 1)


# --- the vision tower ---------------------------------------------------------------------------


def test_vision_tower_matches_full_model(trained_dir, heldout_scenes):
    images = [image for image, _ in heldout_scenes[:5]]
    vision, processor = load_vision_tower(str(trained_dir))
    features = image_features(vision, processor, images)

    # 16 px / 8 px patches = 4 patches, plus the class token.
    assert features["global"].shape == (5, 32)
    assert features["tokens"].shape == (5, 5, 32)

    full = CLIPModel.from_pretrained(trained_dir).eval()
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = full.vision_model(pixel_values=pixels)
    assert torch.equal(features["global"], expected.pooler_output)
    assert torch.equal(features["tokens"], expected.last_hidden_state)


def test_vision_tower_loads_every_saved_weight(trained_dir):
    saved = load_file(trained_dir / "model.safetensors")
    vision, _ = load_vision_tower(str(trained_dir))
    loaded = vision.state_dict()
    saved_vision = {name.removeprefix("vision_model."): tensor for name, tensor in saved.items()
                    if name.startswith("vision_model.")}
    assert saved_vision.keys() <= loaded.keys()
    for name, tensor in saved_vision.items():
        assert torch.equal(loaded[name], tensor), name
    # Nothing of the text tower or the projections comes along.
    assert not any(name.startswith(("text_model", "text_projection", "visual_projection")) for name in loaded)


def test_vision_tower_frozen_in_eval_mode(trained_dir):
    vision, _ = load_vision_tower(str(trained_dir))
    assert not vision.training
    assert all(not parameter.requires_grad for parameter in vision.parameters())


def test_vision_tower_dtype_followed(trained_dir, heldout_scenes):
    vision, processor = load_vision_tower(str(trained_dir), device="cpu", dtype=torch.float64)
    features = image_features(vision, processor, [heldout_scenes[0][0]])
    assert features["global"].dtype == torch.float64
    assert features["tokens"].dtype == torch.float64


def test_vision_tower_converts_non_rgb(trained_dir):
    vision, processor = load_vision_tower(str(trained_dir))
    grey = Image.new("L", (20, 24), 128)
    rgba = Image.new("RGBA", (IMAGE_SIZE, IMAGE_SIZE), (255, 0, 0, 255))
    features = image_features(vision, processor, [grey, rgba])
    assert features["global"].shape == (2, 32)
    assert torch.isfinite(features["tokens"]).all()


def test_missing_folder_rejected(tmp_path):
    missing = tmp_path / "no_such_clip"
    with pytest.raises(UserError) as error:
        load_vision_tower(str(missing))
    message = str(error.value)
    assert str(missing) in message
    assert "openai/clip-vit-large-patch14" in message


def test_folder_without_config_rejected(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match="has no config.json"):
        load_vision_tower(str(tmp_path))


def test_file_instead_of_folder_rejected(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="not a folder"):
        load_vision_tower(str(path))


def test_llama_folder_rejected(micro_model_dir):
    with pytest.raises(UserError) as error:
        load_vision_tower(str(micro_model_dir))
    message = str(error.value)
    assert "'llama'" in message
    assert str(micro_model_dir) in message


def test_clip_folder_without_weights_rejected(trained_dir, tmp_path):
    copy = tmp_path / "clip"
    shutil.copytree(trained_dir, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no CLIP vision tower could be loaded"):
        load_vision_tower(str(copy))


def test_clip_folder_without_processor_rejected(trained_dir, tmp_path):
    copy = tmp_path / "clip"
    shutil.copytree(trained_dir, copy)
    (copy / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match="preprocessor_config.json"):
        load_vision_tower(str(copy))


def test_text_only_checkpoint_rejected(trained_dir, tmp_path):
    """A CLIP checkpoint without vision weights would load with random ones, so it must be rejected."""
    from safetensors.torch import save_file

    copy = tmp_path / "clip"
    shutil.copytree(trained_dir, copy)
    weights = load_file(copy / "model.safetensors")
    text_only = {name: tensor for name, tensor in weights.items() if not name.startswith("vision_model.")}
    save_file(text_only, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="lacks .* vision tower weights"):
        load_vision_tower(str(copy))


def test_image_features_no_images_rejected(trained_dir):
    vision, processor = load_vision_tower(str(trained_dir))
    with pytest.raises(ValueError, match="at least one image"):
        image_features(vision, processor, [])


def test_pixel_values_match_hand_normalisation(trained_dir):
    """The saved processor normalises a 16 px image with the stored mean and std, nothing else."""
    _, processor = load_vision_tower(str(trained_dir))
    image = draw_scene("red", "top left", (6, 1, 2))
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"][0]  # (3, 16, 16)
    raw = np.asarray(image, dtype=np.float64).transpose(2, 0, 1) / 255.0
    mean = np.array(processor.image_mean)[:, None, None]
    std = np.array(processor.image_std)[:, None, None]
    np.testing.assert_allclose(pixels.numpy(), (raw - mean) / std, rtol=1e-5, atol=1e-5)
