"""Tests for caption scoring through pycocoevalcap, the Java check and the most common caption.

The Java runs (PTB tokenizer, METEOR) take seconds, so one module fixture scores a small set
of hand-made cases and most tests read its result. SPICE never runs here. The tests point its
model folder at an empty or a fake one, because pycocoevalcap's Spice() downloads missing models.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from excitor_bench.errors import UserError
from excitor_bench.evaluate import captions
from excitor_bench.evaluate.captions import CAPTION_METRICS, check_java, most_common_caption, score_captions

REFERENCES = {
    # The prediction equals both references after PTB tokenization (lowercase, no punctuation).
    1: ["a red fox jumps high", "a red fox jumps high"],
    # The prediction shares no word with the references.
    2: ["two blue cups on a table", "blue cups stand on a wooden table"],
    # The prediction contains a carriage return, which Java would read as a line break.
    3: ["a green frog sits on a leaf", "a small frog on a leaf"],
    # The prediction is empty.
    4: ["an old man reads a newspaper", "an old man reading the paper"],
    5: ["the brown dog runs in the park", "a dog running through grass"],
}
PREDICTIONS = {
    1: "A red fox jumps high.",
    2: "seven purple owls",
    3: "a green\rfrog on a leaf",
    4: "",
    5: "the brown dog runs in the park",
}


class ForbiddenSpice:
    """Stands in for pycocoevalcap's Spice, whose constructor downloads models when they are missing."""

    def __init__(self):
        raise AssertionError("Spice() must not be constructed when its models are missing")


def replace_scorers(monkeypatch, **classes) -> None:
    """Make score_captions use the real scorer classes except the ones given."""
    real_load = captions._load_scorers
    monkeypatch.setattr(captions, "_load_scorers", lambda folder: dataclasses.replace(real_load(folder), **classes))


@pytest.fixture(scope="module")
def no_spice_models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spice_lib_without_models")


@pytest.fixture(scope="module")
def scored(no_spice_models) -> dict:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(captions, "_spice_lib_dir", lambda package_dir: no_spice_models)
        replace_scorers(monkeypatch, spice=ForbiddenSpice)
        return score_captions(REFERENCES, PREDICTIONS)


def test_result_has_every_metric_and_image(scored):
    assert tuple(scored["metrics"]) == CAPTION_METRICS
    assert scored["n_images"] == 5
    assert sorted(scored["per_item"]) == [1, 2, 3, 4, 5]
    for values in scored["per_item"].values():
        assert tuple(values) == CAPTION_METRICS[:-1]


def test_perfect_caption_scores_full_marks(scored):
    image = scored["per_item"][1]

    # BLEU's smoothing constants (1e-15 / 1e-9) keep it a hair below 100.
    assert image["BLEU-1"] == pytest.approx(100.0, abs=1e-6)
    assert image["BLEU-4"] == pytest.approx(100.0, abs=1e-6)
    assert image["ROUGE-L"] == pytest.approx(100.0)
    # Identical TF-IDF vectors have cosine 1 for each n-gram order. CIDEr-D averages the
    # orders and the references and multiplies by 10, which is 1000 on the x100 scale.
    assert image["CIDEr"] == pytest.approx(1000.0)


def test_disjoint_caption_scores_zero(scored):
    image = scored["per_item"][2]

    assert image["BLEU-1"] == pytest.approx(0.0, abs=1e-9)
    assert image["METEOR"] == 0.0
    assert image["ROUGE-L"] == 0.0
    assert image["CIDEr"] == 0.0


def test_cider_ranks_perfect_above_wrong(scored):
    per_item = scored["per_item"]

    assert per_item[1]["CIDEr"] > per_item[3]["CIDEr"] > per_item[2]["CIDEr"]


def test_corpus_cider_is_mean_of_images(scored):
    per_item = scored["per_item"].values()

    assert scored["metrics"]["CIDEr"] == pytest.approx(sum(v["CIDEr"] for v in per_item) / 5)
    assert scored["metrics"]["ROUGE-L"] == pytest.approx(sum(v["ROUGE-L"] for v in per_item) / 5)


def test_empty_prediction_scores_zero(scored):
    image = scored["per_item"][4]

    assert all(value == pytest.approx(0.0, abs=1e-9) for value in image.values()), image


def test_carriage_return_stays_in_caption(scored):
    # "a green frog on a leaf": all 6 words match a reference and the closest reference
    # length is 6, so BLEU-1 is 100. Had the carriage return split the line, image 3 would
    # get "a green" and image 4 would get "frog on a leaf".
    assert scored["per_item"][3]["BLEU-1"] == pytest.approx(100.0, abs=1e-6)
    assert scored["per_item"][4]["BLEU-1"] == 0.0


def test_spice_not_scored_without_models(scored, no_spice_models):
    assert scored["metrics"]["SPICE"] is None
    assert scored["spice"].startswith(f"not scored: the Stanford CoreNLP models are missing from {no_spice_models}")
    assert "python -m pycocoevalcap.spice.get_stanford_models" in scored["spice"]


def test_spice_scored_when_models_present(tmp_path, monkeypatch):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    for name in captions.SPICE_MODEL_JARS:
        (lib_dir / name).write_bytes(b"")
    received = {}

    class FakeSpice:
        def compute_score(self, gts, res):
            received.update(gts=gts, res=res)
            # pycocoevalcap's Spice returns sub-scores per image in sorted id order.
            return 0.25, [{"All": {"pr": 0.5, "re": 0.5, "f": 0.1 * image_id}} for image_id in sorted(gts)]

    monkeypatch.setattr(captions, "_spice_lib_dir", lambda package_dir: lib_dir)
    # The module fixture covers METEOR, so a fake here saves a Java start.
    monkeypatch.setattr(captions, "_meteor_scores", lambda meteor_class, gts, res: (0.5, [0.5] * len(gts)))
    replace_scorers(monkeypatch, spice=FakeSpice)

    result = score_captions({7: ["A cat."], 8: ["A dog."]}, {7: "a cat", 8: "a bird"})

    assert result["spice"] == "scored"
    assert result["metrics"]["SPICE"] == pytest.approx(25.0)
    assert result["per_item"][7]["SPICE"] == pytest.approx(70.0)
    assert result["per_item"][8]["SPICE"] == pytest.approx(80.0)
    assert received["gts"] == {7: ["a cat"], 8: ["a dog"]}


def test_spice_failure_is_reported(tmp_path, monkeypatch):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    for name in captions.SPICE_MODEL_JARS:
        (lib_dir / name).write_bytes(b"")

    class FailingSpice:
        def compute_score(self, gts, res):
            raise subprocess.CalledProcessError(1, ["java", "-jar", "-Xmx8G", "spice-1.0.jar"])

    monkeypatch.setattr(captions, "_spice_lib_dir", lambda package_dir: lib_dir)
    monkeypatch.setattr(captions, "_meteor_scores", lambda meteor_class, gts, res: (0.5, [0.5] * len(gts)))
    replace_scorers(monkeypatch, spice=FailingSpice)

    result = score_captions({7: ["A cat."], 8: ["A dog."]}, {7: "a cat", 8: "a bird"})

    assert result["spice"].startswith("not scored: SPICE failed (java exited with status 1")
    assert result["metrics"]["SPICE"] is None
    assert "SPICE" not in result["per_item"][7]
    assert result["metrics"]["CIDEr"] is not None


def test_read_only_package_is_copied(tmp_path, monkeypatch):
    read_only = tmp_path / "site-packages" / "pycocoevalcap"
    shutil.copytree(captions.pycocoevalcap_dir(), read_only, ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _, _ in os.walk(read_only):
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    listing_before = sorted(str(path) for path in read_only.rglob("*"))
    cache_home = tmp_path / "cache"

    monkeypatch.setattr(captions, "pycocoevalcap_dir", lambda: read_only)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    if os.geteuid() == 0:
        # Root can write despite the permission bits, so the probe treats only the copy as read-only.
        monkeypatch.setattr(captions, "_is_writable", lambda folder: not folder.is_relative_to(read_only))
    monkeypatch.setattr(captions, "_meteor_scores", lambda meteor_class, gts, res: (0.5, [0.5] * len(gts)))
    replace_scorers(monkeypatch, spice=ForbiddenSpice)

    try:
        result = score_captions(REFERENCES, PREDICTIONS)
        listing_after = sorted(str(path) for path in read_only.rglob("*"))
    finally:
        for folder, _, _ in os.walk(read_only):
            os.chmod(folder, stat.S_IRWXU)

    copy = cache_home / "excitor-bench" / f"pycocoevalcap-{captions._pycocoevalcap_version()}"
    assert (copy / "tokenizer" / "stanford-corenlp-3.4.1.jar").is_file()
    assert (copy / "meteor" / "data" / "paraphrase-en.gz").is_file()
    assert os.stat(copy / "tokenizer").st_mode & stat.S_IWUSR
    assert os.stat(copy / "spice").st_mode & stat.S_IWUSR
    assert listing_after == listing_before
    assert result["per_item"][1]["CIDEr"] == pytest.approx(1000.0)
    # The SPICE check and its advice point at the copy, where the models would have to go.
    assert str(copy / "spice" / "lib") in result["spice"]
    assert f"python {copy / 'spice' / 'get_stanford_models.py'}" in result["spice"]
    tokenizer_module = captions._load_scorers(copy).tokenizer.__module__
    assert Path(sys.modules[tokenizer_module].__file__).is_relative_to(copy)


def test_missing_java_names_installers(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(UserError) as error:
        check_java()
    message = str(error.value)
    assert "`java` was not found on PATH" in message
    assert "JRE 8 or newer" in message
    assert "apt install default-jre" in message
    assert "conda install -c conda-forge openjdk" in message
    assert "brew install openjdk" in message
    assert "\n" not in message

    with pytest.raises(UserError, match="was not found on PATH"):
        score_captions({1: ["a cat"]}, {1: "a cat"})


def write_fake_java(folder: Path, script: str) -> None:
    java = folder / "java"
    java.write_text("#!/bin/sh\n" + script)
    java.chmod(0o755)


def test_broken_java_is_reported(tmp_path, monkeypatch):
    write_fake_java(tmp_path, "echo 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(UserError, match="failed with exit status 1 .*could not create the Java Virtual Machine"):
        check_java()


def test_old_java_is_rejected(tmp_path, monkeypatch):
    write_fake_java(tmp_path, "echo 'java version \"1.7.0_80\"' >&2\n")
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(UserError, match="is Java 7, which is too old"):
        check_java()


@pytest.mark.parametrize(
    ("version_line", "major"),
    [('openjdk version "17.0.15" 2025-04-15', 17), ('java version "1.8.0_292"', 8), ("no version here", None)],
)
def test_java_version_parsing(tmp_path, version_line, major):
    write_fake_java(tmp_path, f"echo '{version_line}' >&2\n")

    assert captions._java_major_version(str(tmp_path / "java")) == major


@pytest.mark.parametrize(
    ("references", "predictions", "message"),
    [
        ({1: ["a cat"]}, {1: "a cat", 9: "a dog"}, "prediction for image 9 has no reference captions"),
        ({1: ["a cat"], 4: ["a dog"]}, {1: "a cat"}, "image 4 has reference captions but no prediction"),
        ({1: ["a cat"], 3: []}, {1: "a cat", 3: "a dog"}, "image 3 has no reference captions"),
        ({1: ["a cat", "  "]}, {1: "a cat"}, "reference caption 1 of image 1 is empty"),
        ({}, {}, "no images to score"),
    ],
)
def test_invalid_ids_and_references(references, predictions, message):
    with pytest.raises(UserError, match=message):
        score_captions(references, predictions)


def test_most_common_caption_normalizes():
    chosen = most_common_caption(["A dog runs.", "a cat sleeps", "  a DOG runs ", "a dog  runs!", "a cat sleeps"])

    # "a dog runs" occurs 3 times once case, spacing and end punctuation are ignored.
    assert chosen == "A dog runs."


def test_most_common_caption_tie_goes_to_first():
    assert most_common_caption(["a cat sleeps", "a dog runs", "a dog runs.", "A cat sleeps!"]) == "a cat sleeps"
    assert most_common_caption(["...", "", "one bird"]) == "one bird"


def test_most_common_caption_needs_a_caption():
    with pytest.raises(ValueError):
        most_common_caption(["", " . "])
