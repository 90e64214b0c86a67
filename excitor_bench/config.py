"""Validation of the workflow config against workflow/schemas/config.schema.yaml, with one-line errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from excitor_bench.errors import UserError

REPOSITORY = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPOSITORY / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPOSITORY / "config" / "config.yaml"


class ConfigFiles:
    """The config files of one workflow invocation, in merge order, and the values set with --config.

    An error names the one source that sets the key it is about: the command line, else the last file
    that sets it, since later files override earlier ones.
    """

    def __init__(self, paths: Sequence[str | Path], command_line: Mapping[str, Any] | None = None):
        self.paths = [Path(path) for path in paths]
        self.command_line = command_line or {}
        self._contents: list[dict[str, Any]] | None = None

    def __str__(self) -> str:
        return ", ".join(str(path) for path in self.paths) or "the config"

    def setting(self, *keys: str | int) -> str:
        """Name the source that sets the nested key `keys`, or every file when none of them sets it."""
        if has_key(self.command_line, keys):
            return "the command line's --config"
        if self._contents is None:
            self._contents = [yaml.safe_load(path.read_text(encoding="utf-8")) or {} for path in self.paths]
        for path, content in zip(reversed(self.paths), reversed(self._contents)):
            if has_key(content, keys):
                return str(path)
        return str(self)


def has_key(content: Any, keys: Sequence[str | int]) -> bool:
    """Return whether the nested mappings and lists of `content` contain the key path `keys`."""
    for key in keys:
        if isinstance(content, list) and isinstance(key, int) and 0 <= key < len(content):
            content = content[key]
        elif isinstance(content, Mapping) and key in content:
            content = content[key]
        else:
            return False
    return True


def source(config_file: ConfigFiles | str, *keys: str | int) -> str:
    """Return the file (or command line) that sets `keys` for ConfigFiles, else `config_file` as it is."""
    return config_file.setting(*keys) if isinstance(config_file, ConfigFiles) else str(config_file)


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def describe(error: jsonschema.ValidationError) -> str:
    """Turn a schema violation into a sentence that names the key, the value and the fix."""
    where = ".".join(str(part) for part in error.absolute_path) or "the top level"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        if where == "methods":
            return f"unknown method {unknown[0]!r} in methods; known methods are {allowed} (check the spelling)"
        return f"unknown key {unknown[0]!r} in {where}; known keys are {allowed} (check the spelling)"
    if error.validator == "required":
        return f"{where} is missing a required key: {error.message}; see config/README.md"
    if error.validator == "type":
        expected = error.validator_value
        return f"{where} is {error.instance!r}, which is not of type {expected}; give a value of that type"
    if error.validator == "enum":
        return f"{where} is {error.instance!r}; use one of {error.validator_value}"
    return f"{where}: {error.message}"


def validate_config(config: dict[str, Any], config_file: ConfigFiles | str = "the config") -> None:
    """Raise UserError for the first schema violation of `config`, naming the file it came from."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        error = errors[0]
        keys = list(error.absolute_path)
        if error.validator == "additionalProperties":
            keys.append(sorted(set(error.instance) - set(error.schema.get("properties", {})))[0])
        raise UserError(f"{source(config_file, *keys)}: {describe(error)}")


def check_data_paths(config: dict[str, Any], config_file: ConfigFiles | str = "the config") -> None:
    """Raise UserError for a data path that the config names but that does not exist or is malformed.

    The files are read once here, before any job runs, so that a broken record stops the workflow
    with one line instead of failing every training or evaluation job that reads it.
    """
    from excitor_bench.data import load_alpaca
    from excitor_bench.evaluate.mmlu import validate_mmlu_dir

    for key, value in config["data"].items():
        if value is None:
            continue
        if not Path(value).exists():
            raise UserError(
                f"data.{key} in {source(config_file, 'data', key)} is {value!r}, which does not exist; "
                "give an existing path, or null to use the tiny world's data"
            )
        if key == "mmlu":
            validate_mmlu_dir(Path(value), config["evaluation"]["mmlu"].get("num_fewshot", 0))
        else:
            load_alpaca(Path(value))
    check_visual_data_paths(config, config_file)


def check_visual_data_paths(config: dict[str, Any], config_file: ConfigFiles | str = "the config") -> None:
    """Read the COCO and ScienceQA files that `visual.data` names, so that a broken item stops the workflow early.

    Image files are only checked for existence here. A job decodes each image when it first reads it,
    and reports a file that is not an image by name.
    """
    from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy
    from excitor_bench.vision.scienceqa import load_scienceqa

    visual = config.get("visual") or {}
    if not visual.get("enabled"):
        return
    data = visual.get("data") or {}
    for key, value in data.items():
        if value is not None and not Path(value).exists():
            raise UserError(
                f"visual.data.{key} in {source(config_file, 'visual', 'data', key)} is {value!r}, which does not "
                "exist; give an existing path, or null to use the tiny world's scenes"
            )
    if bool(data.get("coco")) != bool(data.get("coco_images")):
        raise UserError(f"visual.data in {source(config_file, 'visual', 'data')} sets only one of coco and "
                        "coco_images; give both (the Karpathy JSON and the folder of its image folders) or neither")
    evaluation = config.get("evaluation") or {}
    if data.get("coco"):
        images = load_karpathy(Path(data["coco"]), Path(data["coco_images"]))
        splits = {image.split for image in images}
        caption_split = (evaluation.get("captions") or {}).get("split", "test")
        if caption_split not in splits:
            where = source(config_file, "evaluation", "captions", "split")
            raise UserError(f"evaluation.captions.split in {where} is {caption_split!r}, but {data['coco']} "
                            f"has no image in that split; use one of {sorted(splits)}")
        if not splits & set(TRAIN_SPLITS):
            raise UserError(f"{data['coco']} has no image in the training splits {list(TRAIN_SPLITS)}, which the "
                            "visual runs tune on; use a Karpathy file with a train split")
    if data.get("scienceqa"):
        for split in ("train", (evaluation.get("scienceqa") or {}).get("split", "test")):
            load_scienceqa(Path(data["scienceqa"]), split)
    vision_model = visual.get("vision_model")
    # A path that cannot be a hub id ("/x", "./x", "~/x") must exist; a hub id is checked when a job loads it.
    if vision_model and str(vision_model).startswith(("/", ".", "~")):
        from excitor_bench.vision.clip import check_clip_folder

        folder = Path(vision_model).expanduser()
        if not folder.exists():
            raise UserError(f"visual.vision_model in {source(config_file, 'visual', 'vision_model')} is "
                            f"{vision_model!r}, which does not exist; give a CLIP folder, a hub id such as "
                            "openai/clip-vit-large-patch14, or null")
        check_clip_folder(folder)


def reject_unknown_keys(cls: type, section: str, settings: dict[str, Any], source: str) -> None:
    """Raise UserError for the first key of `settings` that is not a field of the dataclass `cls`."""
    known = {field.name for field in dataclasses.fields(cls)}
    for key in settings:
        if key not in known:
            raise UserError(f"unknown key {section}.{key} in {source}; valid keys are: {', '.join(sorted(known))}")


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` over `base` key by key, as snakemake merges a --configfile over the default."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Return the default config with the file at `path` merged over it, validated like the workflow's."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    files = [DEFAULT_CONFIG_PATH]
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG_PATH:
        try:
            override = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} not found; check the path") from None
        except yaml.YAMLError as error:
            raise UserError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
        config = merge_config(config, override)
        files.append(Path(path))
    validate_config(config, ConfigFiles(files))
    return config
