"""Expand the ablation grid declared in the config into runs: one per (method, setting, seed).

Each method has `defaults` (its hyper-parameters, learning rate included) and an `ablation` table of
axes, each a list of values. In "one_at_a_time" mode, as in papers' ablation tables, every axis is varied
alone around the defaults; in "factorial" mode every combination runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from baselines import METHODS
from excitor_bench.config import ConfigFiles, source
from excitor_bench.errors import UserError

GRID_MODES = ("one_at_a_time", "factorial")

# Short names used in setting identifiers (folder names); other axes use their own name.
AXIS_ABBREVIATIONS = {"rank": "r", "prompt_length": "k", "num_layers": "l", "learning_rate": "lr",
                      "visual_prompts": "vis-"}
VISUAL_SETTING_MODES = ("defaults", "grid")


@dataclass(frozen=True)
class Setting:
    method: str
    setting_id: str
    hyperparameters: dict[str, Any]


def format_value(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(item) for item in value)
    return str(value)


def setting_id(axes: list[str], hyperparameters: dict[str, Any]) -> str:
    """Name a setting by the values of its method's ablation axes, e.g. "r16_k30_l2"."""
    if not axes:
        return "default"
    return "_".join(f"{AXIS_ABBREVIATIONS.get(axis, axis)}{format_value(hyperparameters[axis])}" for axis in axes)


def method_settings(method: str, entry: dict[str, Any], mode: str, config_file: ConfigFiles | str) -> list[Setting]:
    """Return the settings of one method, validated against the method's own hyper-parameters."""
    if method not in METHODS:
        raise UserError(
            f"unknown method {method!r} under 'methods' in {source(config_file, 'methods', method)}; "
            f"use one of {sorted(METHODS)} or remove it"
        )
    defaults = dict(entry.get("defaults") or {})
    # An axis set to null is dropped, like a method set to null.
    ablation = {axis: values for axis, values in (entry.get("ablation") or {}).items() if values is not None}
    settings_class = METHODS[method].settings_class
    try:
        resolved = settings_class.from_dict(defaults, method=method).to_dict()
    except (TypeError, ValueError) as error:
        raise UserError(f"methods.{method}.defaults in {source(config_file, 'methods', method, 'defaults')}: "
                        f"{error}") from None
    for axis, values in ablation.items():
        if axis not in resolved:
            raise UserError(
                f"unknown ablation axis {axis!r} for method {method!r} in "
                f"{source(config_file, 'methods', method, 'ablation', axis)}; "
                f"use one of {sorted(resolved)}"
            )
        if not isinstance(values, list) or not values:
            raise UserError(
                f"methods.{method}.ablation.{axis} in {source(config_file, 'methods', method, 'ablation', axis)} "
                f"is {values!r}; give a non-empty list of values"
            )

    # The method's own field order, so a setting's name does not depend on how the config is ordered.
    axes = [name for name in resolved if name in ablation]
    if mode == "factorial":
        combinations = [dict(zip(axes, values)) for values in itertools.product(*(ablation[a] for a in axes))]
    else:
        combinations = [{}] + [{axis: value} for axis in axes for value in ablation[axis]]

    settings: dict[str, Setting] = {}
    for changes in combinations:
        hyperparameters = {**resolved, **changes}
        identifier = setting_id(axes, hyperparameters)
        settings.setdefault(identifier, Setting(method, identifier, hyperparameters))
    return list(settings.values())


def expand_grid(config: dict[str, Any], config_file: ConfigFiles | str = "the config") -> list[Setting]:
    """Return every (method, setting) of the config, in the order methods are declared."""
    mode = config.get("grid", "one_at_a_time")
    if mode not in GRID_MODES:
        raise UserError(f"grid is {mode!r} in {source(config_file, 'grid')}; use one of {list(GRID_MODES)}")
    # A method set to null is left out, so that a config merged over the default can drop one.
    methods = {name: entry for name, entry in (config.get("methods") or {}).items() if entry is not None}
    if not methods:
        raise UserError(f"the grid is empty: 'methods' in {source(config_file, 'methods')} enables no method; "
                        "add at least one")
    settings: list[Setting] = []
    for method, entry in methods.items():
        settings.extend(method_settings(method, entry, mode, config_file))
    return settings


def method_axes(method: str, config: dict[str, Any]) -> list[str]:
    """Return a method's ablation axes in its own field order, as setting identifiers list them."""
    ablation = (config["methods"][method] or {}).get("ablation") or {}
    fields = METHODS[method].settings_class().to_dict()
    return [name for name in fields if ablation.get(name) is not None]


def visual_variant(setting: Setting, config: dict[str, Any], config_file: ConfigFiles | str) -> Setting:
    """Apply `visual.defaults.<method>` to a text setting; a changed setting gets its own identifier.

    The identifier lists the method's axes with their new values, then every other changed
    hyper-parameter, e.g. "r16_k30_l4_lr0.02_init_scale0.5", so that it never names a text
    setting with other hyper-parameters.
    """
    overrides = ((config.get("visual") or {}).get("defaults") or {}).get(setting.method) or {}
    unknown = sorted(set(overrides) - set(setting.hyperparameters))
    if unknown:
        where = source(config_file, "visual", "defaults", setting.method, unknown[0])
        raise UserError(f"visual.defaults.{setting.method}.{unknown[0]} in {where} is not a hyper-parameter "
                        f"of {setting.method}; use one of {sorted(setting.hyperparameters)}")
    hyperparameters = {**setting.hyperparameters, **overrides}
    changed = [name for name in hyperparameters if hyperparameters[name] != setting.hyperparameters[name]]
    if not changed:
        return setting
    axes = method_axes(setting.method, config)
    identifier = setting_id(axes + [name for name in changed if name not in axes], hyperparameters)
    return Setting(setting.method, identifier, hyperparameters)


def expand_visual_grid(config: dict[str, Any], config_file: ConfigFiles | str = "the config") -> list[Setting]:
    """Return the (method, setting) pairs of the visual runs.

    `visual.settings` picks the text grid's settings to repeat with images: "defaults" (each method's
    default setting) or "grid" (all of them). `visual.defaults.<method>` changes hyper-parameters of
    every visual run of that method (see `visual_variant`). `visual.ablation` adds axes of the visual runs only, such
    as Excitor's visual_prompts, varied one at a time around each method's default setting. Such a
    setting is named after the default setting plus the changed axis, e.g. "r16_k30_l2_vis-rows".
    """
    visual = config.get("visual") or {}
    mode = visual.get("settings", "defaults")
    if mode not in VISUAL_SETTING_MODES:
        raise UserError(f"visual.settings is {mode!r} in {source(config_file, 'visual', 'settings')}; "
                        f"use one of {list(VISUAL_SETTING_MODES)}")
    text_settings = [visual_variant(setting, config, config_file) for setting in expand_grid(config, config_file)]
    defaults: dict[str, Setting] = {}
    for setting in text_settings:
        defaults.setdefault(setting.method, setting)  # each method's first setting is its defaults
    chosen = text_settings if mode == "grid" else list(defaults.values())

    extra: list[Setting] = []
    for method, axes in (visual.get("ablation") or {}).items():
        if axes is None:
            continue
        if method not in defaults:
            raise UserError(f"visual.ablation.{method} in {source(config_file, 'visual', 'ablation', method)} names "
                            f"a method that 'methods' does not enable; use one of {sorted(defaults)} or remove it")
        base = defaults[method]
        for axis, values in axes.items():
            if axis not in base.hyperparameters:
                raise UserError(f"unknown ablation axis {axis!r} for method {method!r} in visual.ablation in "
                                f"{source(config_file, 'visual', 'ablation', method, axis)}; "
                                f"use one of {sorted(base.hyperparameters)}")
            if not isinstance(values, list) or not values:
                raise UserError(f"visual.ablation.{method}.{axis} in "
                                f"{source(config_file, 'visual', 'ablation', method, axis)} is {values!r}; "
                                "give a non-empty list of values")
            for value in values:
                if value == base.hyperparameters[axis]:
                    continue
                identifier = f"{base.setting_id}_{setting_id([axis], {axis: value})}"
                extra.append(Setting(method, identifier, {**base.hyperparameters, axis: value}))
    return chosen + extra
