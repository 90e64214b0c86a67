"""Tests for provenance records: digests, git state, package versions and the JSON file."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from excitor_bench import provenance
from excitor_bench.errors import UserError
from excitor_bench.provenance import (
    file_digest,
    git_commit,
    package_versions,
    provenance_record,
    write_provenance,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def expected_folder_digest(files: dict[str, bytes]) -> str:
    """Compute a folder digest from its definition: sorted (path, NUL, sha256 of content)."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(relative.encode("utf-8") + b"\0" + hashlib.sha256(files[relative]).digest())
    return "sha256:" + digest.hexdigest()


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def git(directory: Path, *arguments: str) -> str:
    """Run git in a test repository with a fixed identity and no commit signing."""
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid",
               "-c", "commit.gpgsign=false", *arguments]
    return subprocess.run(command, cwd=directory, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """A folder where git stops looking for a repository, even if a parent folder contains one."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return tmp_path


FILES = {
    "b.txt": b"second file\n",
    "a.json": b'{"x": 1}\n',
    "sub/c.bin": bytes(range(256)),
}


# ----------------------------------------------------------------------------- file_digest


def test_file_digest_equals_hashlib(tmp_path):
    content = b"The quick brown fox\x00\xff" * 1000
    path = tmp_path / "data.bin"
    path.write_bytes(content)

    assert file_digest(path) == "sha256:" + hashlib.sha256(content).hexdigest()


def test_file_digest_streams_chunks(tmp_path, monkeypatch):
    # A 7-byte chunk size splits the content into many reads, and the last read is partial.
    monkeypatch.setattr(provenance, "CHUNK_BYTES", 7)
    content = bytes(range(100))
    path = tmp_path / "data.bin"
    path.write_bytes(content)

    assert file_digest(path) == "sha256:" + hashlib.sha256(content).hexdigest()


def test_empty_file_digest(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    assert file_digest(path) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_folder_digest_matches_definition(tmp_path):
    root = make_folder(tmp_path / "data", FILES)

    assert file_digest(root) == expected_folder_digest(FILES)


def test_folder_digest_changes_with_one_byte(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    content = bytearray(FILES["sub/c.bin"])
    content[100] ^= 1
    (root / "sub" / "c.bin").write_bytes(bytes(content))

    assert file_digest(root) != before


def test_folder_digest_changes_with_file_name(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    (root / "b.txt").rename(root / "b2.txt")

    assert file_digest(root) != before


def test_folder_digest_changes_when_file_moves(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    (root / "sub" / "c.bin").rename(root / "c.bin")

    assert file_digest(root) != before


def test_folder_digest_changes_with_new_empty_file(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    (root / "extra.txt").write_bytes(b"")

    assert file_digest(root) != before


def test_folder_digest_ignores_mtime(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    for path in root.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))

    assert file_digest(root) == before


def test_folder_digest_ignores_empty_folders(tmp_path):
    root = make_folder(tmp_path / "data", FILES)
    before = file_digest(root)

    (root / "empty" / "nested").mkdir(parents=True)

    assert file_digest(root) == before


def test_folder_digest_independent_of_location(tmp_path):
    first = make_folder(tmp_path / "one", FILES)
    second = make_folder(tmp_path / "two" / "deeper", FILES)

    assert file_digest(first) == file_digest(second)


def test_boundary_between_path_and_content(tmp_path):
    # Without a separator, "ab" + content "c" and "a" + content "bc" would hash the same bytes.
    first = make_folder(tmp_path / "one", {"ab": b"c"})
    second = make_folder(tmp_path / "two", {"a": b"bc"})

    assert file_digest(first) != file_digest(second)


def test_digest_of_missing_path_raises(tmp_path):
    missing = tmp_path / "missing.json"

    with pytest.raises(UserError, match="missing.json: input not found"):
        file_digest(missing)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_digest_of_named_pipe_raises(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    with pytest.raises(UserError, match="not a regular file or folder"):
        file_digest(pipe)


# ----------------------------------------------------------------------------- git_commit


@needs_git
def test_git_commit_clean_then_dirty(isolated):
    repository = isolated / "repo"
    repository.mkdir()
    git(repository, "init", "--quiet")
    (repository / "data.txt").write_text("one\n", encoding="utf-8")
    git(repository, "add", "data.txt")
    git(repository, "commit", "--quiet", "-m", "Add data")
    head = git(repository, "rev-parse", "HEAD").strip()

    clean = git_commit(repository / "data.txt")

    assert clean == {"commit": head, "dirty": False}
    assert len(head) in (40, 64)  # SHA-1 or SHA-256 object names

    (repository / "data.txt").write_text("two\n", encoding="utf-8")
    assert git_commit(repository) == {"commit": head, "dirty": True}


@needs_git
def test_git_commit_untracked_file_is_dirty(isolated):
    repository = isolated / "repo"
    (repository / "sub").mkdir(parents=True)
    git(repository, "init", "--quiet")
    (repository / "sub" / "data.txt").write_text("one\n", encoding="utf-8")
    git(repository, "add", ".")
    git(repository, "commit", "--quiet", "-m", "Add data")

    (repository / "sub" / "new.txt").write_text("new\n", encoding="utf-8")

    assert git_commit(repository / "sub")["dirty"] is True


@needs_git
def test_git_commit_without_commits(isolated):
    repository = isolated / "repo"
    repository.mkdir()
    git(repository, "init", "--quiet")

    assert git_commit(repository) == {"commit": None, "dirty": False}


@needs_git
def test_git_commit_outside_repository(isolated):
    folder = isolated / "plain"
    folder.mkdir()
    (folder / "data.txt").write_text("one\n", encoding="utf-8")

    assert git_commit(folder / "data.txt") == {"commit": None, "dirty": None}


def test_git_commit_missing_path(isolated):
    assert git_commit(isolated / "missing" / "data.txt") == {"commit": None, "dirty": None}


def test_git_commit_without_git(isolated, monkeypatch):
    # An empty PATH hides the git executable, as on a machine without git.
    monkeypatch.setenv("PATH", "")

    assert git_commit(isolated) == {"commit": None, "dirty": None}


def test_git_commit_timeout(isolated, monkeypatch):
    def slow_git(*args, **kwargs):
        raise subprocess.TimeoutExpired(cmd=args[0], timeout=kwargs["timeout"])

    monkeypatch.setattr(provenance.subprocess, "run", slow_git)

    assert git_commit(isolated) == {"commit": None, "dirty": None}


# ----------------------------------------------------------------------------- package_versions


def test_package_versions_of_installed_and_missing():
    versions = package_versions(["numpy", "surely-not-an-installed-distribution", "python"])

    assert versions == {
        "numpy": metadata.version("numpy"),
        "surely-not-an-installed-distribution": None,
        "python": platform.python_version(),
    }


def test_default_packages_cover_the_benchmark():
    versions = package_versions()

    for name in ("torch", "transformers", "peft", "lm-eval", "snakemake", "tokenizers", "pycocoevalcap",
                 "numpy", "pandas", "pillow", "python"):
        assert name in versions
    assert versions["numpy"] == metadata.version("numpy")


# ----------------------------------------------------------------------------- provenance_record


def test_record_contents(tmp_path):
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello\n")
    folder = make_folder(tmp_path / "world", FILES)

    record = provenance_record({"data": data, "world": folder}, extra={"seed": 3, "config": {"rank": 8}})

    assert record["inputs"] == {
        "data": {"path": str(data), "sha256": "sha256:" + hashlib.sha256(b"hello\n").hexdigest()},
        "world": {"path": str(folder), "sha256": expected_folder_digest(FILES)},
    }
    assert record["packages"]["python"] == platform.python_version()
    assert set(record["git"]) == {"commit", "dirty"}
    assert record["platform"]["machine"] == platform.machine()
    assert record["seed"] == 3
    assert record["config"] == {"rank": 8}


def test_record_created_is_utc_now(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    record = provenance_record({})

    assert record["created"].endswith("+00:00")


def test_record_rejects_colliding_extra():
    with pytest.raises(ValueError, match="'git'"):
        provenance_record({}, extra={"git": "abc"})


def test_record_rejects_missing_input(tmp_path):
    with pytest.raises(UserError, match="input not found"):
        provenance_record({"data": tmp_path / "missing.csv"})


def test_written_record_is_reproducible(tmp_path, monkeypatch):
    # 1,700,000,000 s after 1970-01-01 is 2023-11-14 22:13:20 UTC.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    # Other processes may edit the checkout between the two records, so its git state is fixed.
    monkeypatch.setattr(provenance, "git_commit", lambda path: {"commit": "0" * 40, "dirty": False})
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello\n")
    extra = {"seed": 1, "output": tmp_path / "out", "config": {"b": 2, "a": 1}}

    write_provenance(tmp_path / "first" / "provenance.json", provenance_record({"data": data}, extra))
    write_provenance(tmp_path / "second" / "provenance.json", provenance_record({"data": data}, extra))
    first = (tmp_path / "first" / "provenance.json").read_bytes()

    assert first == (tmp_path / "second" / "provenance.json").read_bytes()
    assert first.endswith(b"}\n")
    loaded = json.loads(first)
    assert loaded["created"] == "2023-11-14T22:13:20+00:00"
    assert loaded["output"] == str(tmp_path / "out")
    assert list(loaded) == sorted(loaded)
    assert list(loaded["config"]) == ["a", "b"]


def test_invalid_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")

    with pytest.raises(UserError, match="SOURCE_DATE_EPOCH='yesterday'"):
        provenance_record({})


def test_write_rejects_unserializable_value(tmp_path):
    with pytest.raises(TypeError, match="set value"):
        write_provenance(tmp_path / "provenance.json", {"values": {1, 2}})
