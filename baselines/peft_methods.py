"""LoRA, prefix tuning and LLaMA-Adapter, built through peft so that each is peft's own implementation."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from peft import AdaptionPromptConfig, LoraConfig, PeftConfig, PeftModel, PrefixTuningConfig, get_peft_model
from torch import nn

from baselines.base import MethodSettings, TuningMethod


class PeftMethod(TuningMethod):
    """A method whose adapter peft builds, saves and loads."""

    def peft_config(self, base_model: nn.Module) -> PeftConfig:
        raise NotImplementedError

    def build(self, base_model: nn.Module) -> nn.Module:
        return get_peft_model(base_model, self.peft_config(base_model))

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(str(directory))

    def load(self, base_model: nn.Module, directory: Path) -> nn.Module:
        return PeftModel.from_pretrained(base_model, str(directory))


@dataclass
class LoraSettings(MethodSettings):
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


class LoRA(PeftMethod):
    """LoRA (Hu et al., 2021): a low-rank update beside the chosen projections."""

    name = "lora"
    settings_class = LoraSettings

    def peft_config(self, base_model: nn.Module) -> PeftConfig:
        s = self.settings
        return LoraConfig(
            r=s.rank,
            lora_alpha=s.alpha,
            lora_dropout=s.dropout,
            target_modules=list(s.target_modules),
            task_type="CAUSAL_LM",
        )


@dataclass
class PrefixSettings(MethodSettings):
    prompt_length: int = 16
    projection: bool = False


def route_prefix_cache_for_generation(model: PeftModel) -> PeftModel:
    """Make peft's prefix tuning reach the KV cache during `generate` under transformers 5.

    transformers 5 hands the KV cache to `prepare_inputs_for_generation` and to the model as `cache`,
    while peft 0.21 reads and writes `past_key_values` there. Without this bridge, generation runs on an
    empty cache and silently ignores the learned prefix (training, which calls forward, is unaffected).
    The two wrappers rename the cache on the way into peft's logic and back out of it. With a
    transformers version whose models still take `past_key_values`, the model is returned unchanged.
    """
    forward_parameters = inspect.signature(model.get_base_model().forward).parameters
    if "cache" not in forward_parameters:
        return model
    base_prepare = model.base_model_prepare_inputs_for_generation
    peft_prepare = model.prepare_inputs_for_generation

    def prepare_for_peft(*args, **kwargs):
        inputs = base_prepare(*args, **kwargs)
        if inputs.get("cache") is not None:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    def prepare_for_model(*args, **kwargs):
        inputs = peft_prepare(*args, **kwargs)
        if "past_key_values" in inputs:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    model.base_model_prepare_inputs_for_generation = prepare_for_peft
    model.prepare_inputs_for_generation = prepare_for_model
    return model


class PrefixTuning(PeftMethod):
    """Prefix tuning (Li and Liang, 2021): learned keys and values prepended at every layer."""

    name = "prefix"
    settings_class = PrefixSettings

    def build(self, base_model: nn.Module) -> nn.Module:
        return route_prefix_cache_for_generation(super().build(base_model))

    def load(self, base_model: nn.Module, directory: Path) -> nn.Module:
        return route_prefix_cache_for_generation(super().load(base_model, directory))

    def peft_config(self, base_model: nn.Module) -> PeftConfig:
        return PrefixTuningConfig(
            num_virtual_tokens=self.settings.prompt_length,
            prefix_projection=self.settings.projection,
            task_type="CAUSAL_LM",
        )


@dataclass
class LlamaAdapterSettings(MethodSettings):
    prompt_length: int = 10
    num_layers: int | None = None


class LlamaAdapter(PeftMethod):
    """LLaMA-Adapter (Zhang et al., 2023): gated adaption prompts in the top layers (peft's adaption prompt)."""

    name = "llama_adapter"
    settings_class = LlamaAdapterSettings

    def peft_config(self, base_model: nn.Module) -> PeftConfig:
        num_layers = self.settings.num_layers
        if num_layers is None:
            num_layers = base_model.config.num_hidden_layers
        return AdaptionPromptConfig(
            adapter_len=self.settings.prompt_length,
            adapter_layers=num_layers,
            task_type="CAUSAL_LM",
        )
