"""Caption scores as the COCO caption evaluation computes them, through pycocoevalcap.

`score_captions` follows pycocoevalcap's `COCOEvalCap.evaluate` (pycocoevalcap 1.2, eval.py).
The Stanford PTB tokenizer lowercases both the references and the predictions and drops
punctuation. Then Bleu(4), Meteor, Rouge (ROUGE-L) and Cider (CIDEr-D) score the tokens.
Spice runs only when its Stanford CoreNLP models are installed. Values are scaled by 100, the
scale that papers report (a CIDEr of 1.575 becomes 157.5).

Corpus and per-image values relate differently per metric. CIDEr and ROUGE-L of the corpus are
the means of the per-image values. BLEU and METEOR of the corpus pool n-gram and alignment
statistics over all images, so they are not the means of the per-image values. CIDEr-D weights
n-grams by their document frequency over the scored images' references, so a single image
always scores 0 and small sets give unstable values.

pycocoevalcap runs Java: the PTB tokenizer and METEOR need a JRE 8 or newer. SPICE 1.0 is
reported to fail on Java 9 and newer, so it may need Java 8. pycocoevalcap also writes
temporary files inside its own package folder. When that folder is not writable, the package
is copied once to `${XDG_CACHE_HOME:-~/.cache}/excitor-bench/pycocoevalcap-<version>` and the
scorers are loaded from the copy.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")

# The two jars that pycocoevalcap's spice/get_stanford_models.py extracts into spice/lib.
# Spice() downloads them when the first one is missing, so it is constructed only when both exist.
SPICE_MODEL_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")

JAVA_INSTALL_HINT = (
    "METEOR and the PTB tokenizer of pycocoevalcap need Java (a JRE 8 or newer); install it with "
    "`apt install default-jre`, `conda install -c conda-forge openjdk` or `brew install openjdk`"
)

# Sentence-ending punctuation that most_common_caption ignores at the end of a caption.
_END_PUNCTUATION = ".,;:!?\u2026"
_JAVA_VERSION_PATTERN = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class _Scorers:
    """The pycocoevalcap classes that score_captions uses, loaded from one package folder."""

    tokenizer: type
    bleu: type
    meteor: type
    rouge: type
    cider: type
    spice: type


def check_java() -> None:
    """Raise UserError unless `java` is on PATH, runs, and is Java 8 or newer."""
    java = shutil.which("java")
    if java is None:
        raise UserError(f"`java` was not found on PATH; {JAVA_INSTALL_HINT}")
    major = _java_major_version(java)
    if major is not None and major < 8:
        raise UserError(f"{java} is Java {major}, which is too old; {JAVA_INSTALL_HINT}")


def _java_major_version(java: str) -> int | None:
    """Run `java -version` and return the major version, or None when the output has none."""
    try:
        completed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"`{java} -version` failed to run ({error}); {JAVA_INSTALL_HINT}") from None
    if completed.returncode != 0:
        message = " ".join(completed.stderr.split())[:200]
        raise UserError(
            f"`{java} -version` failed with exit status {completed.returncode} ({message}); {JAVA_INSTALL_HINT}"
        )

    # Java 8 and older print 'version "1.8.0_292"', newer releases 'version "17.0.15"'.
    match = _JAVA_VERSION_PATTERN.search(completed.stderr + completed.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    return major


def most_common_caption(captions: Iterable[str]) -> str:
    """Return the caption that occurs most often, as first written, with outer white space removed.

    Captions count as equal after lowercasing, collapsing white space and removing white space
    and sentence-ending punctuation at the end. Ties go to the caption seen first. Captions that
    are empty after this normalization are skipped. Predicting this caption for every image is
    the floor that a captioner must beat. Raises ValueError when no caption is left.
    """
    counts: Counter[str] = Counter()
    first_seen: dict[str, str] = {}
    for caption in captions:
        key = " ".join(caption.lower().split()).rstrip(_END_PUNCTUATION + " ")
        if not key:
            continue
        counts[key] += 1
        first_seen.setdefault(key, caption.strip())
    if not counts:
        raise ValueError("most_common_caption needs at least one non-empty caption")

    # Counter.most_common keeps insertion order among equal counts, so ties go to the first seen.
    key, _ = counts.most_common(1)[0]
    return first_seen[key]


def score_captions(references: Mapping[int, Sequence[str]], predictions: Mapping[int, str]) -> dict[str, Any]:
    """Score one predicted caption per image against its references with pycocoevalcap.

    Returns {"metrics": {name: corpus value x 100, or None for SPICE when it did not run},
    "spice": "scored" or "not scored: <reason>", "per_item": {image_id: {name: value x 100}},
    "n_images": int}. Per-image SPICE values are present only when SPICE ran. A value that
    pycocoevalcap returns as NaN (SPICE does for captions it cannot parse) becomes None.

    Raises UserError when Java is missing, fails to run or is older than Java 8, when the
    image ids of `references` and `predictions` differ, or when an image has no reference or
    an empty one. An empty prediction is scored (0 on every metric). SPICE failures are logged
    and reported in "spice" instead of raised, because SPICE 1.0 is reported to fail on Java 9
    or newer.
    """
    check_java()
    image_ids = _check_image_ids(references, predictions)

    package_dir = writable_pycocoevalcap_dir()
    scorers = _load_scorers(package_dir)
    log.info("scoring captions of %d images with pycocoevalcap from %s", len(image_ids), package_dir)

    # Every scorer iterates the dict order and SPICE sorts the ids, so both dicts use sorted ids.
    tokenizer = scorers.tokenizer()
    gts = _tokenize(tokenizer, {i: [_single_line(c) for c in references[i]] for i in image_ids})
    res = _tokenize(tokenizer, {i: [_single_line(predictions[i])] for i in image_ids})

    metrics: dict[str, float | None] = {}
    per_item: dict[int, dict[str, float | None]] = {i: {} for i in image_ids}

    def record(name: str, corpus_value: float, image_values: Sequence[float]) -> None:
        metrics[name] = _percent(corpus_value)
        for image_id, value in zip(image_ids, image_values):
            per_item[image_id][name] = _percent(value)

    bleu_corpus, bleu_images = scorers.bleu(4).compute_score(gts, res, verbose=0)
    for order in range(4):
        record(f"BLEU-{order + 1}", bleu_corpus[order], bleu_images[order])
    record("METEOR", *_meteor_scores(scorers.meteor, gts, res))
    record("ROUGE-L", *scorers.rouge().compute_score(gts, res))
    record("CIDEr", *scorers.cider().compute_score(gts, res))

    spice = _spice_missing_reason(package_dir)
    if spice is None:
        spice, spice_scores = _run_spice(scorers.spice, gts, res)
    if spice == "scored":
        record("SPICE", *spice_scores)
    else:
        metrics["SPICE"] = None
        log.warning("SPICE %s", spice)

    summary = ", ".join(f"{name} {'n/a' if value is None else f'{value:.2f}'}" for name, value in metrics.items())
    log.info("caption scores on %d images: %s", len(image_ids), summary)
    return {"metrics": metrics, "spice": spice, "per_item": per_item, "n_images": len(image_ids)}


def _check_image_ids(references: Mapping[int, Sequence[str]], predictions: Mapping[int, str]) -> list[int]:
    """Return the sorted image ids after checking that both sides have the same ones."""
    without_references = sorted(set(predictions) - set(references))
    if without_references:
        raise UserError(
            f"the prediction for image {without_references[0]} has no reference captions "
            f"({len(without_references)} such predictions); predict only images of the split whose "
            f"references are scored, keyed by the same image ids (COCO cocoid)"
        )
    without_predictions = sorted(set(references) - set(predictions))
    if without_predictions:
        raise UserError(
            f"image {without_predictions[0]} has reference captions but no prediction "
            f"({len(without_predictions)} such images); generate a caption for every image of the split"
        )
    if not references:
        raise UserError("no images to score: the references and predictions are empty; check the split's image list")

    image_ids = sorted(references)
    for image_id in image_ids:
        captions = references[image_id]
        if isinstance(captions, str):
            raise TypeError(f"references of image {image_id} must be a sequence of captions, not one string")
        if not isinstance(predictions[image_id], str):
            raise TypeError(f"the prediction for image {image_id} must be a string, got {type(predictions[image_id])}")
        if len(captions) == 0:
            raise UserError(f"image {image_id} has no reference captions; remove it from the scored split or add its captions")
        for index, caption in enumerate(captions):
            if not caption.strip():
                raise UserError(
                    f"reference caption {index} of image {image_id} is empty; fix or remove it in the caption file"
                )
    return image_ids


def _single_line(caption: str) -> str:
    """Collapse all white space to single spaces.

    The PTB tokenizer reads one caption per line, and Java also ends a line at a carriage
    return, so a caption with one would shift every later caption to the wrong image.
    """
    return " ".join(caption.split())


def _tokenize(tokenizer: Any, captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """Run the PTB tokenizer and check that every caption came back under its image id."""
    tokenized = tokenizer.tokenize({i: [{"caption": c} for c in texts] for i, texts in captions.items()})
    for image_id, texts in captions.items():
        returned = tokenized.get(image_id, [])
        if len(returned) != len(texts):
            raise RuntimeError(
                f"the PTB tokenizer returned {len(returned)} captions for image {image_id}, expected {len(texts)}"
            )
    return {image_id: tokenized[image_id] for image_id in captions}


def _meteor_scores(meteor_class: type, gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    """Score with METEOR and stop its Java process, also when scoring fails."""
    meteor = meteor_class()
    try:
        return meteor.compute_score(gts, res)
    finally:
        # Meteor.compute_score keeps its lock when it raises, and Meteor.__del__ waits for that
        # lock before it stops the process, so a failed run would hang at garbage collection.
        if meteor.lock.locked():
            meteor.lock.release()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


def _spice_missing_reason(package_dir: Path) -> str | None:
    """Return why SPICE cannot run from `package_dir`, or None when its models are installed."""
    lib_dir = _spice_lib_dir(package_dir)
    missing = [name for name in SPICE_MODEL_JARS if not (lib_dir / name).is_file()]
    if not missing:
        return None
    if package_dir == pycocoevalcap_dir():
        command = "python -m pycocoevalcap.spice.get_stanford_models"
    else:
        command = f"python {package_dir / 'spice' / 'get_stanford_models.py'}"
    return (
        f"not scored: the Stanford CoreNLP models are missing from {lib_dir} ({', '.join(missing)}); "
        f"run `{command}` where there is internet"
    )


def _spice_lib_dir(package_dir: Path) -> Path:
    return package_dir / "spice" / "lib"


def _run_spice(spice_class: type, gts: dict[int, list[str]],
               res: dict[int, list[str]]) -> tuple[str, tuple[float, list[float]] | None]:
    """Score with SPICE and return ("scored", (corpus value, per-image values)).

    When SPICE's Java run fails, the error is logged and ("not scored: <reason>", None) is returned.
    """
    try:
        corpus_value, image_scores = spice_class().compute_score(gts, res)
    except subprocess.CalledProcessError as error:
        log.error("SPICE failed: %s", error)
        reason = f"not scored: SPICE failed (java exited with status {error.returncode}, see the log)"
        major = _java_major_version(shutil.which("java") or "java")
        if major is not None and major > 8:
            reason += f"; SPICE 1.0 is reported to fail on Java 9 or newer, and this is Java {major}: run it with Java 8"
        return reason, None

    # Spice returns {category: {"pr", "re", "f"}} per image in sorted id order. The "All" F-score is SPICE.
    return "scored", (corpus_value, [scores["All"]["f"] for scores in image_scores])


def _percent(value: Any) -> float | None:
    value = float(value)
    if math.isnan(value):
        return None
    return value * 100.0


def pycocoevalcap_dir() -> Path:
    """Return the folder of the installed pycocoevalcap package."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap.tokenizer.ptbtokenizer")
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        raise UserError("pycocoevalcap is not installed; install it with `pip install pycocoevalcap`")
    return Path(spec.origin).resolve().parents[1]


def writable_pycocoevalcap_dir() -> Path:
    """Return a pycocoevalcap folder that the scorers can write their temporary files in.

    The PTB tokenizer writes its input file into tokenizer/ and SPICE writes spice/tmp and
    spice/cache. When the installed folder does not allow that (a read-only or shared
    environment), the package is copied once to a cache folder, which is returned instead.
    """
    package_dir = pycocoevalcap_dir()
    if _is_writable(package_dir / "tokenizer") and _is_writable(package_dir / "spice"):
        return package_dir

    copy_dir = _cache_root() / f"pycocoevalcap-{_pycocoevalcap_version()}"
    if not copy_dir.is_dir():
        log.info("pycocoevalcap folder %s is not writable; copying it to %s", package_dir, copy_dir)
        _copy_package(package_dir, copy_dir)
    return copy_dir


def _is_writable(folder: Path) -> bool:
    """Return whether a temporary file can be created in `folder`.

    Permission bits alone would mislead for root, who can write to a folder without write bits.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "excitor-bench"


def _pycocoevalcap_version() -> str:
    try:
        return importlib.metadata.version("pycocoevalcap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _copy_package(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically, with every folder writable by its owner.

    The copy is made under a temporary name and then renamed, so an interrupted copy is never
    taken for a complete one. File modes are not copied, and folder modes get the owner's write
    bit, because a copy of a read-only package would otherwise be read-only as well.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        shutil.copytree(source, partial / "package", copy_function=shutil.copyfile,
                        ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        for folder, _, _ in os.walk(partial):
            mode = os.stat(folder).st_mode
            os.chmod(folder, mode | stat.S_IRWXU)
        try:
            os.rename(partial / "package", target)
        except OSError:
            # Another process finished its copy first, and that copy is just as complete.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _load_scorers(package_dir: Path) -> _Scorers:
    """Import the scorer classes from `package_dir`, which may be a copy of the installed package."""
    if package_dir == pycocoevalcap_dir():
        prefix = "pycocoevalcap"
    else:
        # The copy is imported under its own package name so that each scorer module's __file__,
        # which decides where it runs Java and writes files, points into the copy.
        prefix = "_pycocoevalcap_copy_" + hashlib.sha256(str(package_dir).encode()).hexdigest()[:16]
        if prefix not in sys.modules:
            spec = importlib.machinery.ModuleSpec(prefix, None, is_package=True)
            spec.submodule_search_locations = [str(package_dir)]
            sys.modules[prefix] = importlib.util.module_from_spec(spec)

    def load(module: str, name: str) -> type:
        return getattr(importlib.import_module(f"{prefix}.{module}"), name)

    return _Scorers(
        tokenizer=load("tokenizer.ptbtokenizer", "PTBTokenizer"),
        bleu=load("bleu.bleu", "Bleu"),
        meteor=load("meteor.meteor", "Meteor"),
        rouge=load("rouge.rouge", "Rouge"),
        cider=load("cider.cider", "Cider"),
        spice=load("spice.spice", "Spice"),
    )
