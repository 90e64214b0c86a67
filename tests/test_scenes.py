"""Tests for the visual tiny world: the files it writes, read back through the real-format loaders."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from pycocoevalcap.cider.cider import Cider

from excitor_bench.errors import UserError
from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy
from excitor_bench.vision.images import load_image
from excitor_bench.vision.scienceqa import SCIENCEQA_GROUPS, load_scienceqa, problem_groups
from excitor_bench.world.scenes import (
    COLORS,
    FAMILIES,
    POSITIONS,
    SceneSettings,
    build_scenes,
    Shape,
    direction_between,
    draw_scene,
    render_scene,
)
from excitor_bench.world.writers import read_corpus_documents

# 40 + 4 + 10 + 20 images; the problem counts are multiples of the 9 problem families.
SMALL = {
    "seed": 3,
    "train_scenes": 40,
    "restval_scenes": 4,
    "val_scenes": 10,
    "test_scenes": 20,
    "scienceqa_train_problems": 27,
    "scienceqa_val_problems": 9,
    "scienceqa_test_problems": 18,
}
PROBLEM_KEYS = {"question", "choices", "answer", "hint", "image", "task", "grade", "subject", "topic", "category",
                "skill", "lecture", "solution", "split"}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes_small")
    build_scenes(SMALL, out)
    return out


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes_default")
    build_scenes({}, out)
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


# ---------------------------------------------------------------- determinism and settings


def test_same_seed_identical_files(small_dir, tmp_path):
    build_scenes(SMALL, tmp_path)
    assert read_tree(tmp_path) == read_tree(small_dir)


def test_other_seed_different_files(small_dir, tmp_path):
    build_scenes({**SMALL, "seed": 4}, tmp_path)
    first, second = read_tree(small_dir), read_tree(tmp_path)
    assert first["coco/dataset_coco.json"] != second["coco/dataset_coco.json"]
    assert first["scienceqa/problems.json"] != second["scienceqa/problems.json"]


def test_settings_unknown_key():
    with pytest.raises(UserError) as error:
        SceneSettings.from_dict({"train_scene": 5})
    assert "visual.scenes.train_scene" in str(error.value)


@pytest.mark.parametrize(("key", "value"), [
    ("image_size", 8),
    ("max_shapes", 4),
    ("captions_per_image", 6),
    ("val_scenes", 0),
    ("restval_scenes", 0),
    ("scienceqa_val_problems", len(FAMILIES) - 1),
    ("test_scenes", True),
])
def test_settings_invalid_value(key, value):
    with pytest.raises(UserError) as error:
        SceneSettings.from_dict({key: value})
    assert f"visual.scenes.{key} = {value!r}" in str(error.value)


def test_settings_defaults():
    settings = SceneSettings.from_dict({})
    assert settings.image_size == 32
    assert settings.max_shapes == 2
    assert settings.captions_per_image == 5


# ---------------------------------------------------------------- COCO files


def test_coco_loads_every_split(small_dir):
    coco = small_dir / "coco"
    images = load_karpathy(coco / "dataset_coco.json", coco / "images")
    assert Counter(image.split for image in images) == {"train": 40, "restval": 4, "val": 10, "test": 20}
    assert len(load_karpathy(coco / "dataset_coco.json", coco / "images", TRAIN_SPLITS)) == 44
    assert len({image.image_id for image in images}) == 74


def test_coco_images_rgb_of_image_size(small_dir):
    coco = small_dir / "coco"
    for image in load_karpathy(coco / "dataset_coco.json", coco / "images"):
        picture = load_image(image.path, f"COCO image {image.image_id}")
        assert picture.mode == "RGB"
        assert picture.size == (32, 32)


def test_coco_entries_follow_karpathy_format(small_dir):
    data = load_json(small_dir / "coco" / "dataset_coco.json")
    assert data["dataset"] == "coco"
    sentence_ids = []
    for index, entry in enumerate(data["images"]):
        assert entry["imgid"] == index
        folder = "train2014" if entry["split"] == "train" else "val2014"
        assert entry["filepath"] == folder
        assert entry["filename"] == f"COCO_{folder}_{entry['cocoid']:012d}.png"
        assert len(entry["sentences"]) == 5
        assert entry["sentids"] == [sentence["sentid"] for sentence in entry["sentences"]]
        for sentence in entry["sentences"]:
            assert sentence["imgid"] == index
            # Karpathy's tokens are the lowercased words of the caption without punctuation.
            expected = sentence["raw"].lower().replace(",", "").replace(".", "").split()
            assert sentence["tokens"] == expected
            sentence_ids.append(sentence["sentid"])
    assert sentence_ids == list(range(len(sentence_ids)))


def test_coco_splits_mixed_in_file(small_dir):
    splits = [entry["split"] for entry in load_json(small_dir / "coco" / "dataset_coco.json")["images"]]
    assert splits != sorted(splits, key=["train", "restval", "val", "test"].index)


THE_IS_CLAUSE = re.compile(r"the (\w+) (\w+) is (?:on|at|in) the (\w+)")


def test_coco_pixels_match_captions(small_dir):
    """Each color that the "The X Y is at P" caption names is painted in cell P, and no other color is."""
    coco = small_dir / "coco"
    checked = 0
    for image in load_karpathy(coco / "dataset_coco.json", coco / "images"):
        caption = next(text for text in image.captions if text.startswith("The "))
        clauses = THE_IS_CLAUSE.findall(caption.lower())
        assert clauses, caption
        picture = load_image(image.path, str(image.image_id))
        pixels = picture.load()
        cell = picture.size[0] / 3
        named_colors = {color for color, _, _ in clauses}
        for color, _, position in clauses:
            column, row = POSITIONS[position]
            box = range(int(column * cell), int((column + 1) * cell)), range(int(row * cell), int((row + 1) * cell))
            painted = sum(pixels[x, y] == COLORS[color] for x in box[0] for y in box[1])
            assert painted >= 10, (caption, position)
            checked += 1
        all_pixels = {pixels[x, y] for x in range(picture.size[0]) for y in range(picture.size[1])}
        for color, rgb in COLORS.items():
            if color not in named_colors:
                assert rgb not in all_pixels, (caption, color)
    assert checked >= 74


RELATIONS = ("above", "below", "to the left of", "to the right of", "above and to the left of",
             "above and to the right of", "below and to the left of", "below and to the right of")
# "There is a blue square to the right of a red circle." and "A red circle to the left of a blue square."
RELATION_CAPTION = re.compile(r"(?:there is )?an? (\w+ \w+) (" + "|".join(RELATIONS) + r") an? (\w+ \w+)\.")


def expected_relation(position: str, other: str) -> str:
    """Relation of a shape in cell `position` to one in cell `other`, from the grid (row 0 is the top)."""
    (column, row), (other_column, other_row) = POSITIONS[position], POSITIONS[other]
    parts = []
    if row != other_row:
        parts.append("above" if row < other_row else "below")
    if column != other_column:
        parts.append("to the left of" if column < other_column else "to the right of")
    return " and ".join(parts)


def test_coco_relation_captions_match_positions(small_dir):
    coco = small_dir / "coco"
    checked = 0
    for image in load_karpathy(coco / "dataset_coco.json", coco / "images"):
        the_is_caption = next(caption for caption in image.captions if caption.startswith("The "))
        clauses = THE_IS_CLAUSE.findall(the_is_caption.lower())
        places = {f"{color} {kind}": position for color, kind, position in clauses}
        if len(places) != 2:
            continue
        matches = [RELATION_CAPTION.fullmatch(caption.lower()) for caption in image.captions]
        matches = [match for match in matches if match is not None]
        # Two two-shape templates state a relation: "There is B rel A." and "A rel B.".
        assert len(matches) == 2, image.captions
        for match in matches:
            subject, relation, reference = match.groups()
            assert relation == expected_relation(places[subject], places[reference]), image.captions
            checked += 1
    assert checked >= 10


def test_scene_shapes_never_overlap():
    rng = random.Random(0)
    for _ in range(300):
        scene = draw_scene(rng, 32, 3)
        boxes = [shape.bounding_box() for shape in scene.shapes]
        for index, (left, top, right, bottom) in enumerate(boxes):
            assert left >= 0
            assert top >= 0
            assert right <= 32
            assert bottom <= 32
            for other_left, other_top, other_right, other_bottom in boxes[index + 1:]:
                apart = right < other_left or other_right < left or bottom < other_top or other_bottom < top
                assert apart, scene


def test_scene_center_pixel_has_shape_color():
    rng = random.Random(1)
    for _ in range(200):
        scene = draw_scene(rng, 32, 2)
        pixels = render_scene(scene).load()
        for shape in scene.shapes:
            assert pixels[int(shape.x), int(shape.y)] == COLORS[shape.color], shape


def test_caption_share_of_most_common_small(default_dir):
    data = load_json(default_dir / "coco" / "dataset_coco.json")
    captions = Counter(sentence["raw"] for entry in data["images"] if entry["split"] in TRAIN_SPLITS
                       for sentence in entry["sentences"])
    _, top_count = captions.most_common(1)[0]
    assert sum(captions.values()) == 620 * 5
    assert top_count / sum(captions.values()) < 0.02


def test_constant_caption_scores_low_cider(default_dir):
    """Emitting the most common training caption scores far below a held-out human-style reference."""
    data = load_json(default_dir / "coco" / "dataset_coco.json")
    train = Counter(" ".join(sentence["tokens"]) for entry in data["images"] if entry["split"] in TRAIN_SPLITS
                    for sentence in entry["sentences"])
    constant = train.most_common(1)[0][0]
    test = [entry for entry in data["images"] if entry["split"] == "test"]
    references = {entry["cocoid"]: [" ".join(s["tokens"]) for s in entry["sentences"][1:]] for entry in test}
    constant_score, _ = Cider().compute_score(references, {entry["cocoid"]: [constant] for entry in test})
    held_out = {entry["cocoid"]: [" ".join(entry["sentences"][0]["tokens"])] for entry in test}
    held_out_score, _ = Cider().compute_score(references, held_out)
    assert held_out_score > 2.0
    assert constant_score < 0.3 * held_out_score


# ---------------------------------------------------------------- ScienceQA files


def test_scienceqa_loads_every_split(small_dir):
    root = small_dir / "scienceqa"
    counts = {split: len(load_scienceqa(root, split)) for split in ("train", "val", "test", "minitrain", "minival")}
    assert counts == {"train": 27, "val": 9, "test": 18, "minitrain": 6, "minival": 2}


def test_scienceqa_entries_have_every_real_field(small_dir):
    problems = load_json(small_dir / "scienceqa" / "problems.json")
    assert list(problems) == [str(number) for number in range(1, 55)]
    for entry in problems.values():
        assert set(entry) == PROBLEM_KEYS
        assert 2 <= len(entry["choices"]) <= 5
        assert len(set(entry["choices"])) == len(entry["choices"])
        assert entry["image"] in (None, "image.png")


def test_scienceqa_images_rgb(small_dir):
    root = small_dir / "scienceqa"
    with_image = 0
    for split in ("train", "val", "test"):
        for problem in load_scienceqa(root, split):
            if problem.image is not None:
                assert problem.image == root / "images" / split / problem.pid / "image.png"
                assert load_image(problem.image, problem.pid).size == (32, 32)
                with_image += 1
    assert with_image > 0


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_scienceqa_every_group_in_split(small_dir, split):
    groups = Counter(group for problem in load_scienceqa(small_dir / "scienceqa", split)
                     for group in problem_groups(problem))
    for group in SCIENCEQA_GROUPS:
        assert groups[group] > 0, group


def test_scienceqa_answers_balanced(default_dir):
    """For each number of choices, each answer position gets between half and 1.5 times its fair share."""
    root = default_dir / "scienceqa"
    problems = [problem for split in ("train", "val", "test") for problem in load_scienceqa(root, split)]
    assert len(problems) == 900
    by_count: dict[int, Counter[int]] = {}
    for problem in problems:
        by_count.setdefault(len(problem.choices), Counter())[problem.answer] += 1
    for count, positions in by_count.items():
        total = sum(positions.values())
        if total < 60:
            continue
        for position in range(count):
            share = positions[position] / total
            assert 0.5 / count <= share <= 1.5 / count, (count, position, share)


def test_scienceqa_answers_correct_for_image_questions(small_dir):
    """Color questions about the picture: the answer's color is painted in the image."""
    root = small_dir / "scienceqa"
    checked = 0
    for problem in load_scienceqa(root, "train") + load_scienceqa(root, "test"):
        if problem.question.startswith("What color is the") and problem.image is not None:
            picture = load_image(problem.image, problem.pid)
            colors = {picture.getpixel((x, y)) for x in range(32) for y in range(32)}
            assert COLORS[problem.choices[problem.answer]] in colors
            checked += 1
    assert checked > 0


def test_scienceqa_count_answers_match_pixels(default_dir):
    """The answer to "How many shapes?" equals the number of grid cells with non-background pixels."""
    numbers = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
    checked = 0
    for problem in load_scienceqa(default_dir / "scienceqa", "test"):
        if problem.question != "How many shapes are in the picture?":
            continue
        picture = load_image(problem.image, problem.pid)
        background = picture.getpixel((0, 0))  # corner cells never hold a shape
        cell = picture.size[0] / 3
        occupied = {(int(x // cell), int(y // cell)) for x in range(picture.size[0]) for y in range(picture.size[1])
                    if picture.getpixel((x, y)) != background}
        assert numbers[problem.choices[problem.answer]] == len(occupied), problem.pid
        checked += 1
    assert checked > 0


def shape_at(position: str) -> Shape:
    return Shape("circle", "red", position, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(("position", "origin", "expected"), [
    ("top", "center", "north"),
    ("bottom", "top", "south"),
    ("left", "right", "west"),
    ("right", "center", "east"),
    ("center", "left", "east"),
])
def test_compass_direction_by_hand(position, origin, expected):
    assert direction_between(shape_at(position), shape_at(origin)) == expected


def test_scienceqa_text_direction_answers(default_dir):
    """Hint "The A is D of the B."; the answer to "Which direction is the B from the A?" is opposite D."""
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    checked = 0
    for problem in load_scienceqa(default_dir / "scienceqa", "train"):
        match = re.fullmatch(r"The (\w+ \w+) is (\w+) of the (\w+ \w+)\.", problem.hint)
        if match is None:
            continue
        first, direction, second = match.groups()
        assert problem.question == f"Which direction is the {second} from the {first}?"
        assert problem.choices[problem.answer] == opposite[direction]
        checked += 1
    assert checked > 0


def test_scienceqa_alphabetical_answers(default_dir):
    problems = load_scienceqa(default_dir / "scienceqa", "test")
    alphabetical = [p for p in problems if p.question == "Which word comes first in alphabetical order?"]
    assert alphabetical
    for problem in alphabetical:
        assert problem.choices[problem.answer] == sorted(problem.choices)[0]


# ---------------------------------------------------------------- corpus and summary


def test_corpus_covers_every_word(default_dir):
    corpus_words = words((default_dir / "corpus.txt").read_text(encoding="utf-8"))
    used: set[str] = set()
    for entry in load_json(default_dir / "coco" / "dataset_coco.json")["images"]:
        for sentence in entry["sentences"]:
            used |= words(sentence["raw"])
    for entry in load_json(default_dir / "scienceqa" / "problems.json").values():
        for text in [entry["question"], entry["hint"], entry["lecture"], entry["solution"], *entry["choices"]]:
            used |= words(text)
    assert used - corpus_words == set()


def test_corpus_training_documents_only(small_dir):
    documents = read_corpus_documents(small_dir / "corpus.txt")
    # Glossary, one lecture per family, one document per train or restval image, one per train problem.
    assert len(documents) == 1 + len(FAMILIES) + 44 + 27
    data = load_json(small_dir / "coco" / "dataset_coco.json")
    train_documents = {"\n".join(s["raw"] for s in entry["sentences"]) for entry in data["images"]
                       if entry["split"] in TRAIN_SPLITS}
    held_out_documents = {"\n".join(s["raw"] for s in entry["sentences"]) for entry in data["images"]
                          if entry["split"] not in TRAIN_SPLITS}
    assert train_documents <= set(documents)
    assert not (held_out_documents - train_documents) & set(documents)
    problems = load_json(small_dir / "scienceqa" / "problems.json")
    train_pids = load_json(small_dir / "scienceqa" / "pid_splits.json")["train"]
    first = problems[train_pids[0]]
    answer_line = f"{first['question']} The answer is {first['choices'][first['answer']]}."
    assert any(answer_line in document for document in documents)


def test_summary_matches_files(small_dir):
    summary = load_json(small_dir / "summary.json")
    assert summary["coco_images"] == {"train": 40, "restval": 4, "val": 10, "test": 20}
    assert summary["coco_captions"] == 74 * 5
    for split, count in (("train", 27), ("val", 9), ("test", 18)):
        groups = Counter(group for problem in load_scienceqa(small_dir / "scienceqa", split)
                         for group in problem_groups(problem))
        expected = {"problems": count, **{group: groups[group] for group in SCIENCEQA_GROUPS}}
        assert summary["scienceqa"][split] == expected
