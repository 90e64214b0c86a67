"""Inject Excitor blocks into a LLaMA-style decoder, and the peft-like `ExcitorModel` wrapper."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ExcitorConfig
from .layer import EXCITOR_PARAMETER_PREFIX, ExcitorKeyProjection

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "excitor_config.json"


def is_excitor_parameter(name: str) -> bool:
    """Return whether a name from `named_parameters()` belongs to an Excitor block."""
    return name.rsplit(".", 1)[-1].startswith(EXCITOR_PARAMETER_PREFIX)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    # LlamaForCausalLM keeps its decoder at model.model.layers; a bare LlamaModel keeps it at model.layers.
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise NotImplementedError(
            f"{type(model).__name__} has no decoder layers at `model.model.layers` or `model.layers`: "
            "Excitor supports LLaMA-style decoders whose layers hold `self_attn.<target_module>`."
        )
    return layers


def _key_projection(layer: nn.Module, index: int, target_module: str) -> nn.Module:
    attention = getattr(layer, "self_attn", None)
    projection = getattr(attention, target_module, None) if attention is not None else None
    if projection is None:
        raise NotImplementedError(
            f"Decoder layer {index} ({type(layer).__name__}) has no `self_attn.{target_module}`: "
            "Excitor supports LLaMA-style layers with a separate key projection; set target_module if it has another name."
        )
    return projection


def _num_key_value_heads(model: nn.Module, attention: nn.Module, projection: nn.Linear) -> int:
    head_dim = getattr(attention, "head_dim", None)
    if head_dim:
        return projection.out_features // head_dim
    config = model.config
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def inject_excitor(model: nn.Module, config: ExcitorConfig) -> nn.Module:
    """Wrap the key projection of each selected decoder layer in an `ExcitorKeyProjection`, in place.

    Raises NotImplementedError for models without the LLaMA layout `model.model.layers[i].self_attn.<target_module>`
    and ValueError when the model already has Excitor blocks or the layer selection does not fit the model.
    """
    layers = _decoder_layers(model)
    if excitor_modules(model):
        raise ValueError(f"{type(model).__name__} already contains Excitor blocks: inject into a fresh base model.")

    selected = config.resolve_layers(len(layers))
    for index in selected:
        projection = _key_projection(layers[index], index, config.target_module)
        if type(projection) is not nn.Linear:
            raise NotImplementedError(
                f"Layer {index}'s `self_attn.{config.target_module}` is a {type(projection).__name__}, "
                "not torch.nn.Linear: Excitor needs a plain linear key projection (unquantised)."
            )
        attention = layers[index].self_attn
        num_kv_heads = _num_key_value_heads(model, attention, projection)
        setattr(attention, config.target_module, ExcitorKeyProjection(projection, config, num_kv_heads))

    logger.info("Injected Excitor blocks into %d of %d layers: %s", len(selected), len(layers), selected)
    return model


def remove_excitor(model: nn.Module) -> nn.Module:
    """Put the original key projections back in place of every Excitor block, discarding the blocks."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ExcitorKeyProjection):
                setattr(module, name, child.base_layer)
    return model


def excitor_modules(model: nn.Module) -> list[ExcitorKeyProjection]:
    """Return the Excitor blocks of a model in layer order, for example to set their `prompt_offset`."""
    return [module for module in model.modules() if isinstance(module, ExcitorKeyProjection)]


def mark_only_excitor_trainable(model: nn.Module) -> None:
    """Set requires_grad on the Excitor parameters and clear it on every other parameter."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_excitor_parameter(name))


def excitor_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the Excitor parameters of a model, keyed by their names in `model.named_parameters()`."""
    return {name: parameter.detach() for name, parameter in model.named_parameters() if is_excitor_parameter(name)}


def count_excitor_parameters(model: nn.Module) -> int:
    """Return the number of Excitor parameter entries in a model, trainable or not."""
    return sum(parameter.numel() for parameter in excitor_state_dict(model).values())


def expected_parameter_count(
    config: ExcitorConfig,
    hidden_size: int,
    num_layers: int,
    num_key_value_heads: int,
    head_dim: int,
) -> int:
    """Return the closed-form Excitor parameter count for a decoder of that shape.

    `num_layers` is the model's total number of decoder layers; the config selects which of them get a block.
    Per block: K*C (prompts) + C*r (W_down) + r*C (W_up) + gate (1, or one per KV head)
    + C * H_kv * d for the free key projection when key_source="free".
    """
    num_blocks = len(config.resolve_layers(num_layers))
    per_block = config.prompt_length * hidden_size + 2 * hidden_size * config.rank
    per_block += 1 if config.gate == "layer" else num_key_value_heads
    if config.key_source == "free":
        per_block += hidden_size * num_key_value_heads * head_dim
    return num_blocks * per_block


class ExcitorModel(nn.Module):
    """A frozen base model with Excitor blocks, used like peft's PeftModel.

    The constructor freezes the base model, injects the blocks and leaves only their parameters trainable.
    `forward` and `generate` call the base model, and unknown attributes are looked up on it.
    """

    def __init__(self, base_model: nn.Module, config: ExcitorConfig) -> None:
        super().__init__()
        self.base_model = base_model
        self.excitor_config = config
        base_model.requires_grad_(False)
        inject_excitor(base_model, config)
        mark_only_excitor_trainable(base_model)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model.generate(*args, **kwargs)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """Return (trainable parameter count, total parameter count), as peft does."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> str:
        """Log the trainable and total parameter counts at INFO level and return the line."""
        trainable, total = self.get_nb_trainable_parameters()
        share = 100 * trainable / total if total else 0.0
        line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}"
        logger.info(line)
        return line

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write `adapter_model.safetensors` (Excitor weights only) and `excitor_config.json`."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {name: tensor.contiguous().cpu() for name, tensor in excitor_state_dict(self.base_model).items()}
        save_file(weights, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(self.excitor_config.to_dict(), indent=2) + "\n")
        logger.info("Saved %d Excitor tensors to %s", len(weights), directory)

    @classmethod
    def from_pretrained(
        cls, base_model: nn.Module, model_id: str | Path, is_trainable: bool = False
    ) -> ExcitorModel:
        """Inject the Excitor blocks saved in `model_id` into a fresh base model and load their weights.

        Raises FileNotFoundError when the folder or one of its two files is missing, and ValueError
        when the saved config is invalid or the saved tensors do not fit the base model.
        With is_trainable=False the result is in eval mode and nothing requires grad.
        """
        directory = Path(model_id)
        config = read_config(directory)
        weights = read_weights(directory)
        model = cls(base_model, config)
        model.load_excitor_weights(weights, directory)
        if not is_trainable:
            model.requires_grad_(False)
            model.eval()
        return model

    def load_excitor_weights(self, weights: dict[str, torch.Tensor], directory: Path) -> None:
        """Copy saved Excitor tensors into the blocks, after checking that names and shapes match."""
        own = excitor_state_dict(self.base_model)
        missing = sorted(own.keys() - weights.keys())
        unexpected = sorted(weights.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(
                f"{directory / WEIGHTS_NAME} does not match the base model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]} ({len(missing)} missing, {len(unexpected)} unexpected); "
                "load it onto the base model it was trained on."
            )
        for name, tensor in weights.items():
            if tensor.shape != own[name].shape:
                raise ValueError(
                    f"{directory / WEIGHTS_NAME}: {name} has shape {tuple(tensor.shape)}, but the base model "
                    f"expects {tuple(own[name].shape)}; load it onto the base model it was trained on."
                )
        with torch.no_grad():
            for name, tensor in weights.items():
                own[name].copy_(tensor)


def read_config(directory: Path) -> ExcitorConfig:
    """Read `excitor_config.json` from a folder written by save_pretrained."""
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"Excitor folder {directory} not found: pass a folder written by save_pretrained.")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by ExcitorModel.save_pretrained.")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): write it again with save_pretrained.") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must contain a JSON object, got {type(values).__name__}.")
    return ExcitorConfig.from_dict(values)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Read `adapter_model.safetensors` from a folder written by save_pretrained."""
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by ExcitorModel.save_pretrained.")
    return load_file(str(path))


def get_excitor_model(model: nn.Module, config: ExcitorConfig) -> ExcitorModel:
    """Freeze `model`, inject Excitor blocks and return it wrapped so that only the blocks train."""
    return ExcitorModel(model, config)
