"""Full fine-tuning: every weight trains. The reference point for what the parameter-efficient methods save."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoModelForCausalLM

from baselines.base import TuningMethod


class FullFineTuning(TuningMethod):
    name = "full"

    def build(self, base_model: nn.Module) -> nn.Module:
        base_model.requires_grad_(True)
        return base_model

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(str(directory))

    def load(self, base_model: nn.Module, directory: Path) -> nn.Module:
        # The saved folder is a whole model, so the fresh base model is not needed beyond its dtype.
        return AutoModelForCausalLM.from_pretrained(str(directory), dtype=base_model.dtype)
