from pathlib import Path

import pytest
import yaml

from excitor_bench.config import load_config, validate_config
from excitor_bench.errors import UserError
from excitor_bench.grid import expand_grid

REPOSITORY = Path(__file__).resolve().parent.parent


def default_config():
    return yaml.safe_load((REPOSITORY / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    config = default_config()

    validate_config(config, "config/config.yaml")
    # Excitor's defaults plus one setting per other value of rank (1), prompt length (1) and layers (2).
    assert len([s for s in expand_grid(config) if s.method == "excitor"]) == 5


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("training", "steps", "many", "training.steps is 'many', which is not of type integer"),
        ("training", "stpes", 10, "unknown key 'stpes' in training"),
        ("world", "kinds", 2.5, "world.kinds is 2.5"),
        ("inference", "dtype", "float8", "inference.dtype is 'float8'; use one of"),
        ("methods", "bitfit", {}, "unknown method 'bitfit' in methods"),
    ],
)
def test_bad_value_names_key_and_file(section, key, value, fragment):
    config = default_config()
    config[section][key] = value

    with pytest.raises(UserError) as error:
        validate_config(config, "my.yaml")

    assert fragment in str(error.value)
    assert str(error.value).startswith("my.yaml: ")


def test_load_config_merges_over_default(tmp_path):
    override = tmp_path / "small.yaml"
    override.write_text("seeds: [0, 1]\nmethods:\n  excitor: null\n  lora:\n    ablation: {rank: [2]}\n")

    config = load_config(override)

    assert config["seeds"] == [0, 1]
    assert config["methods"]["excitor"] is None
    assert config["methods"]["lora"]["ablation"] == {"rank": [2]}
    # Keys the file leaves out keep the default's values.
    assert config["methods"]["lora"]["defaults"]["rank"] == default_config()["methods"]["lora"]["defaults"]["rank"]


def test_load_config_reports_typo(tmp_path):
    override = tmp_path / "typo.yaml"
    override.write_text("training:\n  stesp: 5\n")

    with pytest.raises(UserError, match="unknown key 'stesp' in training"):
        load_config(override)
