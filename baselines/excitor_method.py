"""Excitor behind the same interface as the baselines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from baselines.base import MethodSettings, TuningMethod

if TYPE_CHECKING:
    from excitor import ExcitorConfig
    from excitor.multimodal import VisualConfig


@dataclass
class ExcitorSettings(MethodSettings):
    rank: int = 16
    prompt_length: int = 30
    num_layers: int | None = None
    gate: str = "layer"
    gate_init: float = 0.0
    init_scale: float = 0.02
    key_source: str = "frozen"
    visual_prompts: str = "add"
    """The way image features reach the prompts in the visual setting: "add" or "rows" (excitor.multimodal)."""

    def excitor_config(self) -> "ExcitorConfig":
        from excitor import ExcitorConfig

        values = self.to_dict()
        values.pop("learning_rate")
        values.pop("visual_prompts")
        return ExcitorConfig(**values)


class Excitor(TuningMethod):
    """LLaMA-Excitor (Zou et al., CVPR 2024): gated prompts reconstruct the keys of the top layers."""

    name = "excitor"
    settings_class = ExcitorSettings

    def build(self, base_model: nn.Module) -> nn.Module:
        from excitor import get_excitor_model

        return get_excitor_model(base_model, self.settings.excitor_config())

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)

    def load(self, base_model: nn.Module, directory: Path) -> nn.Module:
        from excitor import ExcitorModel

        return ExcitorModel.from_pretrained(base_model, directory)

    def build_visual(self, base_model: nn.Module, vision_tower: nn.Module, visual_config: VisualConfig) -> nn.Module:
        from excitor.multimodal import ExcitorVisualModel, VisualConfig

        visual_config = VisualConfig(prompt_mode=self.settings.visual_prompts, features=visual_config.features)
        return ExcitorVisualModel(base_model, vision_tower, self.settings.excitor_config(), visual_config)

    def save_visual(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)

    def load_visual(self, base_model: nn.Module, vision_tower: nn.Module, directory: Path) -> nn.Module:
        from excitor.multimodal import ExcitorVisualModel

        return ExcitorVisualModel.from_pretrained(base_model, vision_tower, directory)
