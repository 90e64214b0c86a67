"""Provenance of a benchmark result: input digests, package versions, git commit and platform.

A provenance record is a JSON-ready dict:

    {
        "inputs":   {name: {"path": str, "sha256": "sha256:<hex>"}},
        "packages": {distribution: version or None, "python": "3.11.7"},
        "git":      {"commit": sha or None, "dirty": bool or None},
        "platform": {"system", "release", "machine", "python_implementation"},
        "created":  ISO 8601 time in UTC,
        ...the caller's extra keys, such as the resolved config and the seed
    }

`write_provenance` dumps it with sorted keys. "created", the package versions and the git
state describe the run rather than its settings, so two runs with the same settings get
the same file only on the same installation and with SOURCE_DATE_EPOCH set (see
`created_time`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

# Distribution names as pip installs them. "python" is the interpreter, not a distribution.
DEFAULT_PACKAGES = (
    "python",
    "torch",
    "transformers",
    "peft",
    "lm-eval",
    "snakemake",
    "tokenizers",
    "pycocoevalcap",
    "numpy",
    "pandas",
    "pillow",
)
GIT_TIMEOUT_SECONDS = 10.0
CHUNK_BYTES = 1 << 20
RECORD_KEYS = ("inputs", "packages", "git", "platform", "created")
# Variables that would point git at another repository than the one around `path`.
GIT_LOCATION_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


def package_versions(names: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each distribution, or None where it is not installed.

    The name "python" gives the interpreter version from platform.python_version().
    """
    versions: dict[str, str | None] = {}
    for name in names:
        if name == "python":
            versions[name] = platform.python_version()
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path) -> dict[str, Any]:
    """Return the HEAD commit of the git repository that contains `path` and whether it is dirty.

    "dirty" is True when `git status --porcelain` lists anything, untracked files included
    (ignored files are not listed). Both values are None when git is not installed, when
    `path` (a folder) or its folder (a file) is missing or outside any repository, or
    when git fails or times out. In a
    repository without commits, "commit" is None and "dirty" is still reported.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if not directory.is_dir():
        log.warning("cannot read the git state of %s: folder not found", path)
        return {"commit": None, "dirty": None}

    status = _run_git(["--no-optional-locks", "status", "--porcelain"], directory)
    if status is None:
        return {"commit": None, "dirty": None}
    # `git status` succeeded, so `path` is in a repository, and `rev-parse` normally fails
    # only because HEAD has no commit yet.
    head = _run_git(["rev-parse", "--verify", "--quiet", "HEAD"], directory)
    commit = head.strip() if head else None
    return {"commit": commit, "dirty": bool(status.strip())}


def _run_git(arguments: list[str], directory: Path) -> str | None:
    """Run git in `directory` and return its standard output, or None when it fails."""
    environment = {key: value for key, value in os.environ.items() if key not in GIT_LOCATION_VARIABLES}
    try:
        completed = subprocess.run(
            ["git", *arguments],
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        log.warning("git is not installed; the provenance record has no commit")
        return None
    except subprocess.TimeoutExpired:
        log.warning("git %s timed out after %.0f s in %s", " ".join(arguments), GIT_TIMEOUT_SECONDS, directory)
        return None

    if completed.returncode != 0:
        log.info("git %s failed in %s (exit status %d): %s", " ".join(arguments), directory,
                  completed.returncode, completed.stderr.strip())
        return None
    return completed.stdout


def file_digest(path: Path) -> str:
    """Return "sha256:<hex>" of a file's content, or of every file under a folder.

    A folder's digest is the SHA-256 of, for each regular file under it in sorted order of
    the relative POSIX path: the UTF-8 relative path, a NUL byte and the 32-byte SHA-256 of
    the file's content. Renaming, adding, removing or editing a file changes the digest,
    while modification times, permissions and empty folders do not. Symbolic links to
    files count with their target's content. Links to folders and broken links are skipped.
    Raises UserError when `path` does not exist or is neither a file nor a folder.
    """
    path = Path(path)
    if path.is_file():
        return "sha256:" + _file_sha256(path).hex()
    if path.is_dir():
        return "sha256:" + _folder_sha256(path).hex()
    if path.exists() or path.is_symlink():
        raise UserError(f"{path}: not a regular file or folder, so it has no digest; pass a file or a folder")
    raise UserError(f"{path}: input not found; check the path or rerun the step that creates it")


def _file_sha256(path: Path) -> bytes:
    # Read in CHUNK_BYTES pieces, so a large checkpoint is never held in memory whole.
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.digest()


def _folder_sha256(root: Path) -> bytes:
    files = []
    for directory, _, file_names in os.walk(root):
        for name in file_names:
            file = Path(directory) / name
            if file.is_file():
                files.append((file.relative_to(root).as_posix(), file))

    digest = hashlib.sha256()
    for relative, file in sorted(files):
        digest.update(relative.encode("utf-8"))
        digest.update(b"\0")
        digest.update(_file_sha256(file))
    return digest.digest()


def platform_details() -> dict[str, str]:
    """Return the operating system, its release, the machine type and the Python implementation."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python_implementation": platform.python_implementation(),
    }


def created_time() -> str:
    """Return the current UTC time in ISO 8601, or SOURCE_DATE_EPOCH's time when that is set.

    SOURCE_DATE_EPOCH (seconds since 1970, the reproducible-builds convention) makes the
    record reproducible byte for byte.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        moment = datetime.now(timezone.utc)
    else:
        try:
            moment = datetime.fromtimestamp(int(epoch), timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise UserError(
                f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since 1970; fix or unset it"
            ) from None
    return moment.isoformat(timespec="seconds")


def provenance_record(inputs: Mapping[str, Path], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the provenance record of a result computed from the files or folders in `inputs`.

    `inputs` maps a name to a file or folder, and `extra` adds keys such as the resolved
    config and the seed. "git" describes the repository that contains this package's
    source, so it is None-valued for a non-editable install. Raises UserError for a
    missing input, and ValueError when `extra` repeats a key of the record.
    """
    record: dict[str, Any] = {
        "inputs": {
            name: {"path": str(path), "sha256": file_digest(Path(path))}
            for name, path in inputs.items()
        },
        "packages": package_versions(),
        "git": git_commit(Path(__file__).resolve().parent),
        "platform": platform_details(),
        "created": created_time(),
    }

    for key, value in (extra or {}).items():
        if key in RECORD_KEYS:
            raise ValueError(f"extra key {key!r} would replace the record's own {key!r}; rename it")
        record[key] = value
    return record


def write_provenance(path: Path, record: Mapping[str, Any]) -> None:
    """Write `record` as JSON with sorted keys, two-space indentation and a final newline.

    Path values in the record are written as strings. Other values must be JSON types.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
    path.write_text(text + "\n", encoding="utf-8")


def _json_default(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} value {value!r} in the provenance record is not JSON serializable")
