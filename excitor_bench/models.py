"""Loading base models and tuned runs, on the CPU in float32 or on CUDA in bfloat16."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from baselines import get_method
from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to torch; "auto" is bfloat16 on CUDA and float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; use one of {sorted(DTYPES) + ['auto']}")
    return DTYPES[name]


def load_base_model(path: str | Path, *, device: torch.device, dtype: torch.dtype):
    """Load a causal LM and its tokenizer from a folder or a hub id, as any LLaMA would be loaded."""
    path = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise UserError(
            f"could not load the base model from {path!r} ({error}); "
            "set base_model.path to a local folder written by save_pretrained or to a hub id"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


def load_tuned_model(run_dir: Path, base_path: str | Path, *, device: torch.device, dtype: torch.dtype):
    """Rebuild a tuned run's model from its saved adapter onto a freshly loaded base model."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file():
        raise UserError(f"{spec_path} not found; train the run first (excitor-bench train ... --out {run_dir})")
    spec = json.loads(spec_path.read_text())

    base_model, tokenizer = load_base_model(base_path, device=device, dtype=dtype)
    method = get_method(spec["method"], **spec["hyperparameters"])
    model = method.load(base_model, run_dir / "adapter")
    model.to(device)
    model.eval()
    return model, tokenizer
