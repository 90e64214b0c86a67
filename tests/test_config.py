from pathlib import Path

import pytest
import yaml

from excitor_bench.config import ConfigFiles, load_config, merge_config, validate_config
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


def test_load_config_typo_names_its_file(tmp_path):
    override = tmp_path / "typo.yaml"
    override.write_text("training:\n  stesp: 5\n")

    with pytest.raises(UserError, match="unknown key 'stesp' in training") as error:
        load_config(override)

    assert str(error.value).startswith(f"{override}: ")


def test_unknown_key_names_file_with_it(tmp_path):
    # The typo is in the first override; the second sets another key of the same section.
    typo = tmp_path / "typo.yaml"
    typo.write_text("training: {stesp: 5}\n")
    later = tmp_path / "later.yaml"
    later.write_text("training: {steps: 10}\n")
    config = merge_config(merge_config(default_config(), {"training": {"stesp": 5}}), {"training": {"steps": 10}})

    with pytest.raises(UserError) as error:
        validate_config(config, ConfigFiles([REPOSITORY / "config" / "config.yaml", typo, later]))

    assert str(error.value).startswith(f"{typo}: ")


def test_config_files_name_setting_source(tmp_path):
    default = tmp_path / "default.yaml"
    default.write_text("training: {steps: 10, batch_size: 4}\nseeds: [0]\n")
    override = tmp_path / "override.yaml"
    override.write_text("training: {steps: 20}\n")
    files = ConfigFiles([default, override], command_line={"seeds": [1]})

    assert files.setting("training", "steps") == str(override)
    assert files.setting("training", "batch_size") == str(default)
    assert files.setting("seeds", 0) == "the command line's --config"
    # A key that no source sets (a schema default) names every file.
    assert files.setting("training", "warmup_steps") == f"{default}, {override}"


FIXTURES = Path(__file__).parent / "fixtures"


def visual_config(**data):
    config = load_config(None)
    config["visual"]["data"].update(data)
    return config


def test_visual_data_is_read_at_start(tmp_path):
    from excitor_bench.config import check_visual_data_paths

    check_visual_data_paths(visual_config(coco=str(FIXTURES / "coco" / "dataset_coco.json"),
                                          coco_images=str(FIXTURES / "coco" / "images")), "my.yaml")
    missing = tmp_path / "nowhere.json"
    with pytest.raises(UserError, match="visual.data.coco in my.yaml"):
        check_visual_data_paths(visual_config(coco=str(missing), coco_images=str(tmp_path)), "my.yaml")
    with pytest.raises(UserError, match="only one of coco and coco_images"):
        check_visual_data_paths(visual_config(coco=str(FIXTURES / "coco" / "dataset_coco.json")), "my.yaml")


def test_visual_data_with_missing_image_names_item(tmp_path):
    from excitor_bench.config import check_visual_data_paths

    config = visual_config(coco=str(FIXTURES / "coco" / "dataset_coco.json"), coco_images=str(tmp_path))
    with pytest.raises(UserError, match="391895"):
        check_visual_data_paths(config, "my.yaml")


def test_visual_grid_adds_rows_setting_to_defaults():
    from excitor_bench.grid import expand_visual_grid

    settings = [(s.method, s.setting_id) for s in expand_visual_grid(load_config(None))]
    # visual.defaults changes Excitor's learning rate, layers and initialisation, so its name changes too.
    excitor = "r16_k30_l4_lr0.02_init_scale0.5"
    assert settings == [("excitor", excitor), ("lora", "r16"), ("prefix", "k16"), ("llama_adapter", "k10"),
                        ("full", "default"), ("excitor", f"{excitor}_vis-rows")]


def test_visual_defaults_reject_unknown_hyperparameter():
    from excitor_bench.grid import expand_visual_grid

    config = load_config(None)
    config["visual"]["defaults"] = {"lora": {"ranks": 8}}
    with pytest.raises(UserError, match="visual.defaults.lora.ranks in my.yaml"):
        expand_visual_grid(config, "my.yaml")


def test_visual_evaluation_split_is_checked_at_start():
    from excitor_bench.config import check_visual_data_paths

    config = visual_config(coco=str(FIXTURES / "coco" / "dataset_coco.json"),
                           coco_images=str(FIXTURES / "coco" / "images"))
    config["evaluation"]["captions"]["split"] = "tset"
    with pytest.raises(UserError, match="evaluation.captions.split in my.yaml is 'tset'"):
        check_visual_data_paths(config, "my.yaml")


def test_missing_vision_model_folder_is_reported_at_start(tmp_path):
    from excitor_bench.config import check_visual_data_paths

    config = load_config(None)
    config["visual"]["vision_model"] = str(tmp_path / "no-clip")
    with pytest.raises(UserError, match="visual.vision_model in my.yaml"):
        check_visual_data_paths(config, "my.yaml")
