"""Tuning methods behind one interface: build on a base model, train, save, load.

    from baselines import get_method
    method = get_method("lora", rank=8, learning_rate=1e-3)
    model = method.build(base_model)        # only LoRA's parameters are trainable
    method.save(model, "out/adapter")
    tuned = method.load(fresh_base_model, "out/adapter")

Excitor is registered here too, so the suite treats every method alike.
"""

from __future__ import annotations

from typing import Any

from baselines.base import MethodSettings, TuningMethod
from baselines.excitor_method import Excitor
from baselines.full import FullFineTuning
from baselines.peft_methods import LlamaAdapter, LoRA, PrefixTuning

METHODS: dict[str, type[TuningMethod]] = {
    cls.name: cls for cls in (Excitor, LoRA, PrefixTuning, LlamaAdapter, FullFineTuning)
}


def get_method(name: str, **settings: Any) -> TuningMethod:
    """Return the method called `name`, configured with `settings` (unset ones keep their defaults)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known methods are {sorted(METHODS)}")
    return METHODS[name](**settings)


__all__ = ["METHODS", "MethodSettings", "TuningMethod", "get_method"]
