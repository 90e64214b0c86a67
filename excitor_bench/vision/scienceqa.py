"""Read ScienceQA problems (problems.json, pid_splits.json and images/<split>/<pid>/).

Layout of the released data set, under one root folder:
- problems.json: {pid: {question, choices, answer, hint, image, task, grade, subject, topic,
  category, skill, lecture, solution, split}}, where `answer` indexes `choices`, `hint` is ""
  without text context and `image` is a file name such as "image.png" or null.
- pid_splits.json: {"train": [pid, ...], "val": [...], "test": [...], ...}, possibly with more
  named subsets such as "minival".
- images/<split>/<pid>/<image>, where <split> is the problem's own "split" field.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

SUBJECT_GROUPS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}

SCIENCEQA_GROUPS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
"""The reporting groups of the official evaluation, in the order of its results table."""

REQUIRED_KEYS = ("question", "choices", "answer", "hint", "image", "grade", "subject", "topic", "category", "split")
GRADE_PATTERN = re.compile(r"grade([1-9]|1[0-2])")


@dataclass(frozen=True)
class Problem:
    """One ScienceQA problem, with the fields of problems.json that the benchmark uses."""

    pid: str
    question: str
    choices: tuple[str, ...]
    answer: int
    """Index into `choices` of the correct choice."""
    hint: str
    """The text context; empty when the problem has none."""
    image: Path | None
    """The image file, or None for a problem without image context."""
    subject: str
    """natural science, social science or language science."""
    topic: str
    category: str
    grade: str
    """grade1 to grade12."""
    split: str
    lecture: str = ""
    solution: str = ""
    task: str = ""
    """The question format, e.g. "closed choice" or "yes or no"."""
    skill: str = ""


def problem_groups(problem: Problem) -> tuple[str, ...]:
    """Return the SCIENCEQA_GROUPS that `problem` counts in, in SCIENCEQA_GROUPS order.

    This follows tools/evaluate_acc.py of lupantech/ScienceQA: the subject gives NAT, SOC or LAN.
    A problem counts in TXT when its hint is a non-empty string (even white space only) and in IMG
    when it has an image, so it can count in both. It counts in NO when it has neither. Grades 1 to
    6 count in G1-6 and grades 7 to 12 in G7-12. A subject or grade outside those lists counts in
    no subject or grade group, as in the official script.
    """
    groups = []
    if problem.subject in SUBJECT_GROUPS:
        groups.append(SUBJECT_GROUPS[problem.subject])
    if problem.hint:
        groups.append("TXT")
    if problem.image is not None:
        groups.append("IMG")
    if not problem.hint and problem.image is None:
        groups.append("NO")
    if problem.grade in {f"grade{number}" for number in range(1, 7)}:
        groups.append("G1-6")
    elif problem.grade in {f"grade{number}" for number in range(7, 13)}:
        groups.append("G7-12")
    return tuple(groups)


def load_scienceqa(root: Path, split: str, check_images: bool = True) -> list[Problem]:
    """Read the problems of `split` (a key of pid_splits.json) in pid_splits order.

    With `check_images`, every image file must exist; it is not decoded here. Raises UserError
    for missing or invalid files, an unknown split, a listed pid without a problem, or an
    invalid problem.
    """
    root = Path(root)
    problems_path = root / "problems.json"
    splits_path = root / "pid_splits.json"
    problems = read_json_object(problems_path, "problems.json")
    pid_splits = read_json_object(splits_path, "pid_splits.json")

    if split not in pid_splits:
        present = ", ".join(sorted(pid_splits)) or "none"
        raise UserError(
            f"{splits_path}: split {split!r} not found; the splits present are {present}. Request one of those"
        )
    pids = pid_splits[split]
    if not isinstance(pids, list):
        raise UserError(f"{splits_path}: split {split!r} is not a list of pids; replace the file with the original")

    records = []
    for pid in pids:
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise UserError(
                f"{splits_path}: split {split!r} lists {pid!r}, which is not a pid; pids are strings such as \"12\""
            )
        pid = str(pid)
        if pid not in problems:
            raise UserError(
                f"{splits_path}: split {split!r} lists pid {pid}, but {problems_path} has no problem {pid}; "
                "use the problems.json and pid_splits.json of the same release"
            )
        records.append(parse_problem(pid, problems[pid], root, problems_path, check_images))

    log.info("read %d ScienceQA problems of split %s from %s (%d with images)", len(records), split, root,
             sum(record.image is not None for record in records))
    return records


def read_json_object(path: Path, name: str) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object."""
    if not path.is_file():
        raise UserError(f"ScienceQA file {path} not found; put {name} from the ScienceQA release in {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not valid JSON ({error}); replace it with {name} from the ScienceQA release"
        ) from error
    if not isinstance(data, dict):
        raise UserError(
            f"{path} must contain a JSON object at the top level; replace it with {name} from the ScienceQA release"
        )
    return data


def parse_problem(pid: str, entry: Any, root: Path, problems_path: Path, check_images: bool) -> Problem:
    """Validate one problems.json entry and turn it into a Problem."""
    where = f"{problems_path}: problem {pid}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not a JSON object; replace the file with the original problems.json")
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise UserError(f"{where} is missing the required key {key!r}; add it or use the original problems.json")

    choices = entry["choices"]
    if not isinstance(choices, list) or not all(isinstance(choice, str) for choice in choices):
        raise UserError(f"{where}: choices {choices!r} is invalid; it must be a list of strings")
    if len(choices) < 2:
        raise UserError(f"{where} has {len(choices)} choice(s); a multiple-choice problem needs at least 2")
    answer = entry["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise UserError(
            f"{where}: answer {answer!r} is not an integer; it must be the index of the right choice, "
            f"from 0 to {len(choices) - 1}"
        )
    if not 0 <= answer < len(choices):
        raise UserError(
            f"{where}: answer {answer!r} is out of range for {len(choices)} choices; "
            f"it must be an index from 0 to {len(choices) - 1}"
        )
    for key in ("question", "topic", "category", "split"):
        if not isinstance(entry[key], str):
            raise UserError(f"{where}: {key} {entry[key]!r} is invalid; it must be a string")
    hint = entry["hint"] if entry["hint"] is not None else ""
    if not isinstance(hint, str):
        raise UserError(f"{where}: hint {hint!r} is invalid; it must be a string, empty without text context")
    if entry["subject"] not in SUBJECT_GROUPS:
        raise UserError(f"{where}: subject {entry['subject']!r} is invalid; use one of {', '.join(SUBJECT_GROUPS)}")
    if not isinstance(entry["grade"], str) or not GRADE_PATTERN.fullmatch(entry["grade"]):
        raise UserError(f"{where}: grade {entry['grade']!r} is invalid; use one of grade1 to grade12")

    image = resolve_image(entry, pid, root, where, check_images)
    return Problem(
        pid=pid,
        question=entry["question"],
        choices=tuple(choices),
        answer=answer,
        hint=hint,
        image=image,
        subject=entry["subject"],
        topic=entry["topic"],
        category=entry["category"],
        grade=entry["grade"],
        split=entry["split"],
        lecture=optional_text(entry, "lecture", where),
        solution=optional_text(entry, "solution", where),
        task=optional_text(entry, "task", where),
        skill=optional_text(entry, "skill", where),
    )


def resolve_image(entry: dict[str, Any], pid: str, root: Path, where: str, check_images: bool) -> Path | None:
    """Return root/images/<split>/<pid>/<image>, or None when the problem has no image."""
    name = entry["image"]
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise UserError(f"{where}: image {name!r} is invalid; it must be a file name such as \"image.png\" or null")
    path = root / "images" / entry["split"] / pid / name
    if check_images and not path.is_file():
        raise UserError(
            f"{where}: image file {path} not found; unpack the ScienceQA images so that they lie at "
            f"{root / 'images'}/<split>/<pid>/"
        )
    return path


def optional_text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: {key} {value!r} is invalid; it must be a string")
    return value
