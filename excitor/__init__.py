"""LLaMA-Excitor for Hugging Face LLaMA-style decoders, used like a peft method.

Example::

    from transformers import AutoModelForCausalLM
    from excitor import ExcitorConfig, ExcitorModel, get_excitor_model

    base = AutoModelForCausalLM.from_pretrained("path/to/llama", torch_dtype="bfloat16")
    model = get_excitor_model(base, ExcitorConfig(rank=16, prompt_length=30))
    model.print_trainable_parameters()      # logs the counts; only Excitor parameters train
    loss = model(input_ids=ids, labels=ids).loss; loss.backward()
    model.save_pretrained("out/excitor")    # adapter_model.safetensors + excitor_config.json
    tuned = ExcitorModel.from_pretrained(fresh_base, "out/excitor")
    tokens = tuned.generate(input_ids=ids, max_new_tokens=32)
"""

from .config import ExcitorConfig
from .layer import EXCITOR_PARAMETER_PREFIX, ExcitorKeyProjection
from .model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ExcitorModel,
    count_excitor_parameters,
    excitor_modules,
    excitor_state_dict,
    expected_parameter_count,
    get_excitor_model,
    inject_excitor,
    is_excitor_parameter,
    mark_only_excitor_trainable,
    remove_excitor,
)

__all__ = [
    "CONFIG_NAME",
    "EXCITOR_PARAMETER_PREFIX",
    "WEIGHTS_NAME",
    "ExcitorConfig",
    "ExcitorKeyProjection",
    "ExcitorModel",
    "count_excitor_parameters",
    "excitor_modules",
    "excitor_state_dict",
    "expected_parameter_count",
    "get_excitor_model",
    "inject_excitor",
    "is_excitor_parameter",
    "mark_only_excitor_trainable",
    "remove_excitor",
]
