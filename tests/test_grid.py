import pytest

from excitor_bench.config import check_data_paths
from excitor_bench.errors import UserError
from excitor_bench.grid import expand_grid


def grid_config(mode="one_at_a_time"):
    return {
        "grid": mode,
        "methods": {
            "excitor": {
                "defaults": {"rank": 16, "prompt_length": 30, "num_layers": 2},
                "ablation": {"rank": [4, 16], "prompt_length": [10, 30], "num_layers": [1, 2, 4]},
            },
            "lora": {"defaults": {"rank": 8}, "ablation": {"rank": [4, 8, 16]}},
            "full": {},
        },
    }


def ids(settings, method):
    return [s.setting_id for s in settings if s.method == method]


def test_one_at_a_time_varies_one_axis():
    settings = expand_grid(grid_config())

    # The default plus each non-default value of each axis: 1 + 1 + 1 + 2.
    assert ids(settings, "excitor") == ["r16_k30_l2", "r4_k30_l2", "r16_k10_l2", "r16_k30_l1", "r16_k30_l4"]
    assert ids(settings, "lora") == ["r8", "r4", "r16"]
    assert ids(settings, "full") == ["default"]


def test_null_method_is_left_out():
    config = grid_config()
    config["methods"]["lora"] = None

    assert ids(expand_grid(config), "lora") == []


def test_factorial_runs_every_combination():
    settings = expand_grid(grid_config("factorial"))

    assert len(ids(settings, "excitor")) == 2 * 2 * 3
    assert len(set(ids(settings, "excitor"))) == 12


def test_settings_carry_resolved_hyperparameters():
    settings = expand_grid(grid_config())
    by_id = {s.setting_id: s.hyperparameters for s in settings if s.method == "excitor"}

    assert by_id["r4_k30_l2"]["rank"] == 4
    assert by_id["r4_k30_l2"]["prompt_length"] == 30
    # Keys the config leaves out keep the method's defaults.
    assert by_id["r4_k30_l2"]["gate"] == "layer"
    assert by_id["r4_k30_l2"]["gate_init"] == 0.0


@pytest.mark.parametrize(
    ("methods", "fragment"),
    [
        ({"lroa": {}}, "unknown method 'lroa'"),
        ({"lora": {"defaults": {"rnak": 4}}}, "'rnak'"),
        ({"lora": {"ablation": {"depth": [1]}}}, "unknown ablation axis 'depth'"),
        ({"lora": {"ablation": {"rank": []}}}, "non-empty list"),
        ({}, "the grid is empty"),
        ({"lora": None, "full": None}, "the grid is empty"),
    ],
)
def test_bad_grid_names_the_problem(methods, fragment):
    with pytest.raises(UserError) as error:
        expand_grid({"methods": methods}, "my.yaml")

    assert fragment in str(error.value)
    assert "my.yaml" in str(error.value)


def test_missing_data_path_names_key(tmp_path):
    config = {"data": {"alpaca": str(tmp_path / "missing.json"), "mmlu": None, "instructions_test": None},
              "evaluation": {"mmlu": {}}}

    with pytest.raises(UserError) as error:
        check_data_paths(config, "my.yaml")

    assert "data.alpaca" in str(error.value)
    assert "missing.json" in str(error.value)
    assert "my.yaml" in str(error.value)


def test_malformed_data_file_is_caught_early(tmp_path):
    alpaca = tmp_path / "train.json"
    alpaca.write_text('[{"instruction": "a", "input": ""}]')
    config = {"data": {"alpaca": str(alpaca), "mmlu": None, "instructions_test": None},
              "evaluation": {"mmlu": {}}}

    with pytest.raises(UserError) as error:
        check_data_paths(config, "my.yaml")

    assert "record 0" in str(error.value)
    assert "'output'" in str(error.value)
