"""Read COCO captions in the Karpathy split format (dataset_coco.json) with their image folders.

The file is {"images": [...], "dataset": "coco"}. Each image entry has "filepath" (e.g. "val2014"),
"filename", "imgid", "split" (train, restval, val or test), "sentids", "cocoid" and "sentences",
each sentence with "tokens", "raw", "imgid" and "sentid". The image file is
image_root / filepath / filename.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "restval")
"""Karpathy's "restval" images are training images, as in every paper that uses the split."""

# Keys that every image entry must have. "imgid" and "sentids" are not needed to load captions.
REQUIRED_IMAGE_KEYS = ("filepath", "filename", "split", "cocoid", "sentences")


@dataclass(frozen=True)
class CaptionedImage:
    """One image of a Karpathy split file and its reference captions."""

    image_id: int
    """The image's `cocoid`, which caption scores and predictions are keyed by."""
    split: str
    """One of train, restval, val, test."""
    path: Path
    """image_root / filepath / filename."""
    captions: tuple[str, ...]
    """The raw sentences, in file order."""


def load_karpathy(json_path: Path, image_root: Path, splits: Iterable[str] | None = None,
                  check_images: bool = True) -> list[CaptionedImage]:
    """Read the images of `splits` (None for all) from a Karpathy split file, in file order.

    "restval" is a split of its own, so callers that train pass TRAIN_SPLITS. With
    `check_images`, every selected image file must exist; files are not decoded here, so that
    reading the 123k entries of the real file stays fast. Raises UserError for a missing or
    invalid file, an invalid entry, a duplicate cocoid, requested splits without any image or a
    missing image file.
    """
    json_path = Path(json_path)
    image_root = Path(image_root)
    if isinstance(splits, str):
        splits = (splits,)
    requested = None if splits is None else tuple(splits)

    entries = read_image_entries(json_path)
    folders: dict[str, Path] = {}
    records: list[CaptionedImage] = []
    seen: set[int] = set()
    split_counts: Counter[str] = Counter()
    for index, entry in enumerate(entries):
        record = parse_image_entry(entry, index, json_path, image_root, folders)
        if record.image_id in seen:
            raise UserError(
                f"{json_path}: cocoid {record.image_id} appears twice (second time at images[{index}]); "
                "remove the duplicate entry, since captions and scores are keyed by cocoid"
            )
        seen.add(record.image_id)
        split_counts[record.split] += 1
        if requested is None or record.split in requested:
            records.append(record)

    # The request fails only when none of its splits has images, so TRAIN_SPLITS also reads a file without restval.
    if requested and not any(split_counts[split] for split in requested):
        requested_names = " or ".join(repr(name) for name in requested)
        present = ", ".join(f"{name} ({count})" for name, count in sorted(split_counts.items()))
        raise UserError(
            f"{json_path}: no images in split {requested_names}; the splits present are {present or 'none'}. "
            "Request one of those splits"
        )

    if check_images:
        check_image_files(records, json_path, image_root)

    log.info("read %d images with %d captions from %s (splits: %s)", len(records),
             sum(len(record.captions) for record in records), json_path,
             "all" if requested is None else ", ".join(requested))
    return records


def read_image_entries(json_path: Path) -> list[Any]:
    """Return the "images" list of a Karpathy split file."""
    if not json_path.is_file():
        raise UserError(
            f"Karpathy split file {json_path} not found; download dataset_coco.json (Karpathy's "
            "caption_datasets.zip) and point the config at it"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{json_path} is not valid JSON ({error}); replace it with the original dataset_coco.json"
        ) from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(
            f"{json_path} has no \"images\" list at the top level, so it is not a Karpathy split file; "
            "use dataset_coco.json from Karpathy's caption_datasets.zip"
        )
    return data["images"]


def parse_image_entry(entry: Any, index: int, json_path: Path, image_root: Path,
                      folders: dict[str, Path]) -> CaptionedImage:
    """Validate one image entry and turn it into a CaptionedImage.

    `folders` caches image_root / filepath across entries, so each entry costs one Path join.
    """
    if not isinstance(entry, dict):
        raise UserError(f"{json_path}: images[{index}] is not a JSON object; fix or remove that entry")
    cocoid = entry.get("cocoid")
    where = f"{json_path}: image with cocoid {cocoid}" if "cocoid" in entry else f"{json_path}: images[{index}]"

    for key in REQUIRED_IMAGE_KEYS:
        if key not in entry:
            raise UserError(f"{where} is missing the required key {key!r}; add it or remove the entry")
    if not isinstance(cocoid, int) or isinstance(cocoid, bool):
        raise UserError(f"{where}: cocoid {cocoid!r} is invalid; it must be an integer image id")
    for key in ("filepath", "filename", "split"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise UserError(f"{where}: {key} {entry[key]!r} is invalid; it must be a non-empty string")

    sentences = entry["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise UserError(f"{where} has no sentences; every image needs at least one reference caption")
    captions = []
    for position, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise UserError(
                f"{where}: sentences[{position}] has no \"raw\" caption text; add the caption or remove the sentence"
            )
        captions.append(raw)

    folder = folders.get(entry["filepath"])
    if folder is None:
        folder = folders[entry["filepath"]] = image_root / entry["filepath"]
    return CaptionedImage(
        image_id=cocoid,
        split=entry["split"],
        path=folder / entry["filename"],
        captions=tuple(captions),
    )


def check_image_files(records: list[CaptionedImage], json_path: Path, image_root: Path) -> None:
    """Raise UserError naming the first image file that does not exist and how many are missing."""
    missing = [record for record in records if not record.path.is_file()]
    if not missing:
        return
    first = missing[0]
    others = f" ({len(missing) - 1} more of the {len(records)} images are missing too)" if len(missing) > 1 else ""
    raise UserError(
        f"{json_path}: image file {first.path} for cocoid {first.image_id} not found{others}; "
        f"check that the image root {image_root} contains the train2014 and val2014 folders"
    )
