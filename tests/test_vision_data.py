"""Tests for the image decoder and the COCO Karpathy and ScienceQA loaders, on fixtures in the real layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from excitor_bench.errors import UserError
from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy
from excitor_bench.vision.images import load_image
from excitor_bench.vision.scienceqa import SCIENCEQA_GROUPS, Problem, load_scienceqa, problem_groups

FIXTURES = Path(__file__).parent / "fixtures"
COCO_JSON = FIXTURES / "coco" / "dataset_coco.json"
COCO_IMAGES = FIXTURES / "coco" / "images"
SCIENCEQA = FIXTURES / "scienceqa"

WHITE = (255, 255, 255)


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------- load_image


def test_image_grayscale_jpeg():
    image = load_image(COCO_IMAGES / "val2014" / "COCO_val2014_000000391895.jpg", "COCO image 391895")
    assert image.mode == "RGB"
    assert image.size == (20, 12)
    left, right = image.getpixel((0, 6)), image.getpixel((19, 6))
    assert left[0] == left[1] == left[2]
    assert max(left) < 30
    assert min(right) > 225


def test_image_rgba_transparent_area_white():
    image = load_image(COCO_IMAGES / "train2014" / "COCO_train2014_000000522418.png", "COCO image 522418")
    assert image.mode == "RGB"
    assert image.size == (16, 10)
    assert image.getpixel((2, 5)) == (255, 0, 0)
    # The transparent half stores blue; compositing over white must hide it.
    assert image.getpixel((12, 5)) == WHITE


def test_image_palette_with_transparency():
    image = load_image(COCO_IMAGES / "val2014" / "COCO_val2014_000000184613.png", "COCO image 184613")
    assert image.mode == "RGB"
    assert image.size == (12, 18)
    assert image.getpixel((6, 3)) == (0, 128, 0)
    assert image.getpixel((6, 14)) == WHITE


def test_image_cmyk_jpeg():
    image = load_image(COCO_IMAGES / "val2014" / "COCO_val2014_000000318556.jpg", "COCO image 318556")
    assert image.mode == "RGB"
    assert image.size == (14, 14)
    red, green, blue = image.getpixel((7, 7))
    assert red > 200
    assert green < 60
    assert blue < 60


def test_image_la_composited_over_white():
    image = load_image(SCIENCEQA / "images" / "val" / "2" / "image.png", "ScienceQA problem 2")
    assert image.size == (6, 6)
    assert image.getpixel((3, 1)) == WHITE
    assert image.getpixel((3, 4)) == (100, 100, 100)


def test_image_16_bit_scaled_not_clipped():
    image = load_image(SCIENCEQA / "images" / "test" / "4" / "image.png", "ScienceQA problem 4")
    assert image.size == (4, 2)
    # 0..65535 maps to 0..255 by dividing by 257: 257 -> 1, 32896 -> 128.
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (1, 1, 1), (128, 128, 128), WHITE]


def test_image_missing_file(tmp_path):
    path = tmp_path / "absent.jpg"
    with pytest.raises(UserError) as error:
        load_image(path, "COCO image 391895")
    assert "COCO image 391895" in str(error.value)
    assert str(path) in str(error.value)
    assert "not found" in str(error.value)


def test_image_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture", encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_image(path, "ScienceQA problem 12")
    assert "ScienceQA problem 12" in str(error.value)
    assert str(path) in str(error.value)
    assert "not a readable image" in str(error.value)


def test_image_truncated_file(tmp_path):
    data = (COCO_IMAGES / "val2014" / "COCO_val2014_000000391895.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as error:
        load_image(path, "COCO image 7")
    assert "COCO image 7" in str(error.value)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- load_karpathy


def test_karpathy_all_splits_in_file_order():
    images = load_karpathy(COCO_JSON, COCO_IMAGES)
    assert [image.image_id for image in images] == [391895, 522418, 184613, 318556]
    assert [image.split for image in images] == ["test", "train", "restval", "val"]
    assert images[0].path == COCO_IMAGES / "val2014" / "COCO_val2014_000000391895.jpg"
    assert images[1].path == COCO_IMAGES / "train2014" / "COCO_train2014_000000522418.png"
    assert images[0].captions == (
        "A gray gradient that runs from black to white.",
        "A dark left edge fading to a light right edge.",
    )


def test_karpathy_train_splits_include_restval():
    images = load_karpathy(COCO_JSON, COCO_IMAGES, TRAIN_SPLITS)
    assert [image.image_id for image in images] == [522418, 184613]


def test_karpathy_single_split_as_string():
    images = load_karpathy(COCO_JSON, COCO_IMAGES, "test")
    assert [image.image_id for image in images] == [391895]


def test_karpathy_paths_load_as_images():
    for image in load_karpathy(COCO_JSON, COCO_IMAGES):
        assert load_image(image.path, f"COCO image {image.image_id}").mode == "RGB"


def test_karpathy_check_images_off(tmp_path):
    images = load_karpathy(COCO_JSON, tmp_path, check_images=False)
    assert len(images) == 4
    assert images[0].path == tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"


def karpathy_error(tmp_path: Path, data, **kwargs) -> str:
    """Write `data` as a Karpathy file and return the UserError message that loading it raises."""
    path = write_json(tmp_path / "dataset_coco.json", data)
    with pytest.raises(UserError) as error:
        load_karpathy(path, COCO_IMAGES, **kwargs)
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_karpathy_missing_file(tmp_path):
    path = tmp_path / "dataset_coco.json"
    with pytest.raises(UserError) as error:
        load_karpathy(path, COCO_IMAGES)
    assert str(path) in str(error.value)
    assert "not found" in str(error.value)


def test_karpathy_not_json(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text("{images: oops", encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_karpathy(path, COCO_IMAGES)
    assert str(path) in str(error.value)
    assert "not valid JSON" in str(error.value)


def test_karpathy_no_images_list(tmp_path):
    message = karpathy_error(tmp_path, {"annotations": []})
    assert '"images"' in message


def test_karpathy_image_missing_key(tmp_path):
    data = load_json(COCO_JSON)
    del data["images"][1]["filename"]
    message = karpathy_error(tmp_path, data)
    assert "522418" in message
    assert "'filename'" in message


def test_karpathy_image_missing_cocoid(tmp_path):
    data = load_json(COCO_JSON)
    del data["images"][2]["cocoid"]
    message = karpathy_error(tmp_path, data)
    assert "images[2]" in message
    assert "'cocoid'" in message


def test_karpathy_image_without_sentences(tmp_path):
    data = load_json(COCO_JSON)
    data["images"][2]["sentences"] = []
    message = karpathy_error(tmp_path, data)
    assert "184613" in message
    assert "no sentences" in message


def test_karpathy_sentence_without_raw(tmp_path):
    data = load_json(COCO_JSON)
    del data["images"][3]["sentences"][1]["raw"]
    message = karpathy_error(tmp_path, data)
    assert "318556" in message
    assert "sentences[1]" in message


def test_karpathy_duplicate_cocoid(tmp_path):
    data = load_json(COCO_JSON)
    data["images"][3]["cocoid"] = 522418
    message = karpathy_error(tmp_path, data)
    assert "522418" in message
    assert "twice" in message


def test_karpathy_split_without_images(tmp_path):
    data = load_json(COCO_JSON)
    data["images"] = [image for image in data["images"] if image["split"] not in TRAIN_SPLITS]
    message = karpathy_error(tmp_path, data, splits=TRAIN_SPLITS)
    assert "'train' or 'restval'" in message
    assert "test (1), val (1)" in message


def test_karpathy_train_splits_without_restval(tmp_path):
    data = load_json(COCO_JSON)
    data["images"] = [image for image in data["images"] if image["split"] != "restval"]
    path = write_json(tmp_path / "dataset_coco.json", data)
    assert [image.split for image in load_karpathy(path, COCO_IMAGES, splits=TRAIN_SPLITS)] == ["train"]


def test_karpathy_missing_image_file(tmp_path):
    path = write_json(tmp_path / "dataset_coco.json", load_json(COCO_JSON))
    empty_root = tmp_path / "images"
    empty_root.mkdir()
    with pytest.raises(UserError) as error:
        load_karpathy(path, empty_root)
    message = str(error.value)
    assert str(path) in message
    assert "391895" in message
    assert str(empty_root / "val2014" / "COCO_val2014_000000391895.jpg") in message
    assert "3 more of the 4 images" in message


def test_karpathy_missing_image_outside_split_ignored(tmp_path):
    root = tmp_path / "images"
    shutil.copytree(COCO_IMAGES, root)
    (root / "val2014" / "COCO_val2014_000000391895.jpg").unlink()
    images = load_karpathy(COCO_JSON, root, TRAIN_SPLITS)
    assert len(images) == 2
    with pytest.raises(UserError, match="391895"):
        load_karpathy(COCO_JSON, root, ["test"])


# ---------------------------------------------------------------- load_scienceqa


def test_scienceqa_train_in_pid_splits_order():
    problems = load_scienceqa(SCIENCEQA, "train")
    assert [problem.pid for problem in problems] == ["1", "3"]
    first, second = problems
    assert first.question == "Which color is the square?"
    assert first.choices == ("blue", "red", "green")
    assert first.answer == 1
    assert first.hint == ""
    assert first.image == SCIENCEQA / "images" / "train" / "1" / "image.png"
    assert first.subject == "natural science"
    assert first.grade == "grade2"
    assert first.split == "train"
    assert first.task == "closed choice"
    assert first.skill == "Identify colors"
    assert first.lecture == "A short lecture."
    assert second.image is None


def test_scienceqa_subset_uses_problem_split_for_images():
    # minival lists the val problem 2, whose image lies under images/val/.
    (problem,) = load_scienceqa(SCIENCEQA, "minival")
    assert problem.pid == "2"
    assert problem.split == "val"
    assert problem.image == SCIENCEQA / "images" / "val" / "2" / "image.png"


def test_scienceqa_images_decode():
    for split in ("train", "val", "test"):
        for problem in load_scienceqa(SCIENCEQA, split):
            if problem.image is not None:
                assert load_image(problem.image, f"ScienceQA problem {problem.pid}").mode == "RGB"


def copy_scienceqa(tmp_path: Path) -> Path:
    root = tmp_path / "scienceqa"
    shutil.copytree(SCIENCEQA, root)
    return root


def scienceqa_error(root: Path, split: str = "train", **kwargs) -> str:
    with pytest.raises(UserError) as error:
        load_scienceqa(root, split, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def edit_problem(root: Path, pid: str, **changes) -> None:
    problems = load_json(root / "problems.json")
    for key, value in changes.items():
        if value is KeyError:
            del problems[pid][key]
        else:
            problems[pid][key] = value
    write_json(root / "problems.json", problems)


@pytest.mark.parametrize("name", ["problems.json", "pid_splits.json"])
def test_scienceqa_missing_file(tmp_path, name):
    root = copy_scienceqa(tmp_path)
    (root / name).unlink()
    message = scienceqa_error(root)
    assert str(root / name) in message
    assert "not found" in message


def test_scienceqa_bad_json(tmp_path):
    root = copy_scienceqa(tmp_path)
    (root / "problems.json").write_text('{"1": ', encoding="utf-8")
    message = scienceqa_error(root)
    assert str(root / "problems.json") in message
    assert "not valid JSON" in message


def test_scienceqa_unknown_split():
    message = scienceqa_error(SCIENCEQA, "dev")
    assert "'dev'" in message
    assert str(SCIENCEQA / "pid_splits.json") in message
    assert "minival, test, train, val" in message


def test_scienceqa_pid_without_problem(tmp_path):
    root = copy_scienceqa(tmp_path)
    write_json(root / "pid_splits.json", {**load_json(root / "pid_splits.json"), "train": ["1", "99"]})
    message = scienceqa_error(root)
    assert "pid 99" in message
    assert str(root / "problems.json") in message


def test_scienceqa_answer_out_of_range(tmp_path):
    root = copy_scienceqa(tmp_path)
    edit_problem(root, "3", answer=4)
    message = scienceqa_error(root)
    assert "problem 3" in message
    assert "answer 4" in message
    assert str(root / "problems.json") in message


def test_scienceqa_too_few_choices(tmp_path):
    root = copy_scienceqa(tmp_path)
    edit_problem(root, "3", choices=["pear"], answer=0)
    message = scienceqa_error(root)
    assert "problem 3" in message
    assert "at least 2" in message


def test_scienceqa_missing_key(tmp_path):
    root = copy_scienceqa(tmp_path)
    edit_problem(root, "1", subject=KeyError)
    message = scienceqa_error(root)
    assert "problem 1" in message
    assert "'subject'" in message
    assert str(root / "problems.json") in message


def test_scienceqa_invalid_grade(tmp_path):
    root = copy_scienceqa(tmp_path)
    edit_problem(root, "1", grade="grade13")
    message = scienceqa_error(root)
    assert "problem 1" in message
    assert "'grade13'" in message


def test_scienceqa_missing_image_file(tmp_path):
    root = copy_scienceqa(tmp_path)
    image = root / "images" / "train" / "1" / "image.png"
    image.unlink()
    message = scienceqa_error(root)
    assert "problem 1" in message
    assert str(image) in message
    assert len(load_scienceqa(root, "train", check_images=False)) == 2


# ---------------------------------------------------------------- problem_groups


def make_problem(subject: str, hint: str, image: Path | None, grade: str) -> Problem:
    return Problem(pid="0", question="Q?", choices=("a", "b"), answer=0, hint=hint, image=image, subject=subject,
                   topic="t", category="c", grade=grade, split="test")


@pytest.mark.parametrize(("subject", "hint", "image", "grade", "expected"), [
    ("natural science", "", Path("image.png"), "grade2", ("NAT", "IMG", "G1-6")),
    ("social science", "North is up.", Path("image.png"), "grade7", ("SOC", "TXT", "IMG", "G7-12")),
    ("language science", "", None, "grade12", ("LAN", "NO", "G7-12")),
    ("natural science", "A hint.", None, "grade6", ("NAT", "TXT", "G1-6")),
    # The official script tests the hint for truth, so a space counts as text context.
    ("language science", " ", None, "grade1", ("LAN", "TXT", "G1-6")),
    # Outside the official lists: no subject group and no grade group.
    ("mathematics", "", None, "grade13", ("NO",)),
])
def test_problem_groups_by_hand(subject, hint, image, grade, expected):
    assert problem_groups(make_problem(subject, hint, image, grade)) == expected


def test_problem_groups_on_fixture():
    groups = {problem.pid: problem_groups(problem) for split in ("train", "val", "test")
              for problem in load_scienceqa(SCIENCEQA, split)}
    assert groups == {
        "1": ("NAT", "IMG", "G1-6"),
        "2": ("SOC", "TXT", "IMG", "G1-6"),
        "3": ("LAN", "NO", "G7-12"),
        "4": ("NAT", "IMG", "G7-12"),
        "5": ("LAN", "TXT", "G7-12"),
    }
    assert set().union(*groups.values()) == set(SCIENCEQA_GROUPS)
