"""Configuration of LLaMA-Excitor: which layers get a block, its sizes, gate and initialisation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

GATE_KINDS = ("layer", "head")
KEY_SOURCES = ("frozen", "free")


@dataclass
class ExcitorConfig:
    """Settings of the Excitor blocks that wrap the frozen key projections of a decoder."""

    rank: int = field(
        default=16,
        metadata={"help": "Rank r of the low-rank bottleneck LR(x) = x W_down W_up, with W_down (C x r) and W_up (r x C)."},
    )
    prompt_length: int = field(
        default=30,
        metadata={"help": "Number K of learnable prompt vectors per layer; the prompts P have shape (K, C)."},
    )
    num_layers: int | None = field(
        default=None,
        metadata={
            "help": "Number L of topmost decoder layers that get an Excitor block. "
            "None means N - 2 of a model with N layers, and at least 1. Mutually exclusive with `layers`."
        },
    )
    layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Explicit 0-based indices of the decoder layers that get an Excitor block. "
            "Mutually exclusive with `num_layers`."
        },
    )
    gate: str = field(
        default="layer",
        metadata={
            "help": "Gate granularity: 'layer' is one scalar per layer, 'head' is one scalar per key-value head. "
            "With grouped-query attention a key is shared by a group of query heads, "
            "so a per-head gate is a per-KV-head gate."
        },
    )
    gate_init: float = field(
        default=0.0,
        metadata={
            "help": "Initial value of the gate. 0.0 (cold start) makes the tuned model equal the base model "
            "before training."
        },
    )
    init_scale: float = field(
        default=0.02,
        metadata={"help": "Standard deviation of the normal initialisation of the prompts, W_down and W_up."},
    )
    key_source: str = field(
        default="frozen",
        metadata={
            "help": "How the prompt mixture becomes an extra key: 'frozen' sends it through the frozen key "
            "projection W_k; 'free' uses a separate trainable (C x kv_dim) projection initialised as a copy "
            "of W_k (an ablation with C * kv_dim extra parameters per layer)."
        },
    )
    target_module: str = field(
        default="k_proj",
        metadata={"help": "Attribute name of the key projection inside each layer's `self_attn` module."},
    )

    def __post_init__(self) -> None:
        self._validate_sizes()
        self._validate_layer_choice()
        self._validate_choices()
        self._validate_floats()

    def _validate_sizes(self) -> None:
        for name in ("rank", "prompt_length"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"ExcitorConfig.{name}={value!r} is invalid: expected an integer >= 1.")

    def _validate_layer_choice(self) -> None:
        if self.num_layers is not None and self.layers is not None:
            raise ValueError(
                f"ExcitorConfig.num_layers={self.num_layers!r} and layers={self.layers!r} are both set: "
                "set only one of them."
            )
        if self.num_layers is not None and (not _is_int(self.num_layers) or self.num_layers < 1):
            raise ValueError(
                f"ExcitorConfig.num_layers={self.num_layers!r} is invalid: expected None or an integer >= 1."
            )
        if self.layers is not None:
            self._validate_layer_indices()

    def _validate_layer_indices(self) -> None:
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, (list, tuple)):
            raise ValueError(f"ExcitorConfig.layers={self.layers!r} is invalid: expected None or a list of integers.")
        if len(self.layers) == 0:
            raise ValueError("ExcitorConfig.layers=[] is invalid: expected None or a non-empty list of integers >= 0.")
        for index in self.layers:
            if not _is_int(index) or index < 0:
                raise ValueError(
                    f"ExcitorConfig.layers contains {index!r}, which is invalid: expected integers >= 0."
                )
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"ExcitorConfig.layers={self.layers!r} contains duplicates: list each layer once.")
        self.layers = sorted(self.layers)

    def _validate_choices(self) -> None:
        if self.gate not in GATE_KINDS:
            raise ValueError(f"ExcitorConfig.gate={self.gate!r} is invalid: expected one of {GATE_KINDS}.")
        if self.key_source not in KEY_SOURCES:
            raise ValueError(f"ExcitorConfig.key_source={self.key_source!r} is invalid: expected one of {KEY_SOURCES}.")
        if not isinstance(self.target_module, str) or not self.target_module.isidentifier():
            raise ValueError(
                f"ExcitorConfig.target_module={self.target_module!r} is invalid: "
                "expected a Python attribute name such as 'k_proj'."
            )

    def _validate_floats(self) -> None:
        if not _is_real(self.gate_init) or not math.isfinite(self.gate_init):
            raise ValueError(f"ExcitorConfig.gate_init={self.gate_init!r} is invalid: expected a finite number.")
        if not _is_real(self.init_scale) or not math.isfinite(self.init_scale) or self.init_scale <= 0:
            raise ValueError(
                f"ExcitorConfig.init_scale={self.init_scale!r} is invalid: expected a finite number > 0."
            )
        self.gate_init = float(self.gate_init)
        self.init_scale = float(self.init_scale)

    def resolve_layers(self, num_hidden_layers: int) -> list[int]:
        """Return the sorted indices of the layers that get an Excitor block in a model with that many layers.

        Raises ValueError when `num_layers` exceeds the model's depth or an explicit index is out of range.
        """
        if self.layers is not None:
            out_of_range = [index for index in self.layers if index >= num_hidden_layers]
            if out_of_range:
                raise ValueError(
                    f"ExcitorConfig.layers contains {out_of_range}, out of range for a model with "
                    f"{num_hidden_layers} layers: use indices from 0 to {num_hidden_layers - 1}."
                )
            return list(self.layers)
        if self.num_layers is None:
            count = max(1, num_hidden_layers - 2)
        elif self.num_layers > num_hidden_layers:
            raise ValueError(
                f"ExcitorConfig.num_layers={self.num_layers} exceeds the model's {num_hidden_layers} layers: "
                f"use a value from 1 to {num_hidden_layers}."
            )
        else:
            count = self.num_layers
        return list(range(num_hidden_layers - count, num_hidden_layers))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExcitorConfig:
        """Build a config from a dict such as one written by `to_dict`, rejecting unknown keys."""
        known = {item.name for item in fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(
                    f"Unknown ExcitorConfig key {key!r}: expected only keys from {sorted(known)}."
                )
        return cls(**values)


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but `rank=True` is a mistake, not a rank of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
