"""Validation of the workflow config against workflow/schemas/config.schema.yaml, with one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from excitor_bench.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def describe(error: jsonschema.ValidationError) -> str:
    """Turn a schema violation into a sentence that names the key, the value and the fix."""
    where = ".".join(str(part) for part in error.absolute_path) or "the top level"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown key {unknown[0]!r} in {where}; known keys are {allowed} (check the spelling)"
    if error.validator == "required":
        return f"{where} is missing a required key: {error.message}; see config/README.md"
    if error.validator == "type":
        expected = error.validator_value
        return f"{where} is {error.instance!r}, which is not of type {expected}; give a value of that type"
    if error.validator == "enum":
        return f"{where} is {error.instance!r}; use one of {error.validator_value}"
    return f"{where}: {error.message}"


def validate_config(config: dict[str, Any], config_file: str = "the config") -> None:
    """Raise UserError for the first schema violation of `config`, naming the file it came from."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if errors:
        raise UserError(f"{config_file}: {describe(errors[0])}")


def check_data_paths(config: dict[str, Any], config_file: str = "the config") -> None:
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
                f"data.{key} in {config_file} is {value!r}, which does not exist; "
                "give an existing path, or null to use the tiny world's data"
            )
        if key == "mmlu":
            validate_mmlu_dir(Path(value), config["evaluation"]["mmlu"].get("num_fewshot", 0))
        else:
            load_alpaca(Path(value))


def reject_unknown_keys(cls: type, section: str, settings: dict[str, Any], source: str) -> None:
    """Raise UserError for the first key of `settings` that is not a field of the dataclass `cls`."""
    known = {field.name for field in dataclasses.fields(cls)}
    for key in settings:
        if key not in known:
            raise UserError(f"unknown key {section}.{key} in {source}; valid keys are: {', '.join(sorted(known))}")
