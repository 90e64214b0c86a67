"""The interface every tuning method shares, so the trainer and evaluators never branch on a name."""

from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

if TYPE_CHECKING:
    from excitor.multimodal import VisualConfig


@dataclass
class MethodSettings:
    """Hyper-parameters of a method. Subclasses add fields with their defaults.

    Field names are shared across methods where they mean the same thing (`rank`, `prompt_length`,
    `num_layers`), so one column of the results table contains one quantity.
    """

    learning_rate: float = 1e-3

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, method: str) -> "MethodSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter {unknown[0]!r} for method {method!r}; "
                f"known ones are {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class TuningMethod(abc.ABC):
    """A way of tuning a frozen causal LM: build, save and load its trainable part.

    `build` returns a model whose forward and `generate` behave like the base model's and whose
    only trainable parameters are the method's own.
    """

    name: ClassVar[str]
    settings_class: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(self, settings: MethodSettings | None = None, **values: Any):
        self.settings = settings if settings is not None else self.settings_class.from_dict(values, method=self.name)

    @abc.abstractmethod
    def build(self, base_model: nn.Module) -> nn.Module:
        """Wrap `base_model` with the method, leaving only the method's parameters trainable."""

    @abc.abstractmethod
    def save(self, model: nn.Module, directory: Path) -> None:
        """Write what `load` needs to rebuild the tuned model onto a fresh base model."""

    @abc.abstractmethod
    def load(self, base_model: nn.Module, directory: Path) -> nn.Module:
        """Rebuild the tuned model from `directory` onto `base_model`, ready for inference."""

    def build_visual(self, base_model: nn.Module, vision_tower: nn.Module, visual_config: VisualConfig) -> nn.Module:
        """Wrap `base_model` with the method and feed it images from the frozen `vision_tower`.

        The default feeds projected visual tokens as a prefix of the input embeddings (baselines.visual).
        A method with its own entry point for images, such as Excitor, overrides this and the two below.
        """
        from baselines.visual import VisualPrefixModel

        return VisualPrefixModel(self.build(base_model), vision_tower, visual_config)

    def save_visual(self, model: nn.Module, directory: Path) -> None:
        """Write the method's weights, the visual projection and the visual config into `directory`."""
        from excitor.multimodal import save_visual_parts

        self.save(model.language_model, directory)
        save_visual_parts(model.visual_encoder, model.visual_config, directory)

    def load_visual(self, base_model: nn.Module, vision_tower: nn.Module, directory: Path) -> nn.Module:
        """Rebuild a model saved by `save_visual` onto a fresh base model and the same vision tower."""
        from baselines.visual import load_visual_prefix_model

        return load_visual_prefix_model(self.load(base_model, directory), vision_tower, directory)

    @staticmethod
    def trainable_parameters(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

