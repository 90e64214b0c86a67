"""Speed and memory of every tuning method against LoRA and the frozen base model, measured in one process.

Timings on a shared machine are noisy, so the methods are measured in interleaved rounds and each
figure is the median over rounds. The ratios compare numbers taken side by side.

Per method the benchmark records the seconds of one training step (forward, backward, AdamW step),
greedy generation tokens per second with the KV cache, trainable parameters and memory. Memory is
the peak allocated CUDA memory of a training step on a GPU. The CPU has no such counter, so there
memory is the sum of two parts. The bytes of the parameters, their gradients and the two AdamW
moments are computed from their sizes. The activations that a training step's forward pass saves
for backward are measured.

`write_benchmark` writes the JSON record; `write_efficiency_csv` writes one row per method, plus a
`base` row for generation, with each method's ratio to LoRA's training step and to the base model's
generation speed.
"""

from __future__ import annotations

import copy
import csv
import gc
import json
import logging
import math
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from baselines import METHODS, get_method
from excitor_bench.config import reject_unknown_keys
from excitor_bench.errors import UserError
from excitor_bench.grid import Setting, expand_grid

log = logging.getLogger(__name__)

# The comparison the targets are stated for: Excitor's defaults against LoRA r16 on q_proj and v_proj.
# Measured when no config gives the methods.
TRAINING_METHODS = {
    "excitor": {"rank": 16, "prompt_length": 30},
    "lora": {"rank": 16, "target_modules": ["q_proj", "v_proj"]},
}
BASE = "base"
REFERENCE_METHOD = "lora"
EFFICIENCY_COLUMNS = (
    "method",
    "setting",
    "trainable_parameters",
    "train_step_seconds",
    "train_step_ratio_to_lora",
    "forward_seconds",
    "forward_ratio_to_base",
    "adapter_bytes",
    "generation_tokens_per_second",
    "generation_ratio_to_base",
    "train_state_mb_estimate",
    "train_activation_mb",
    "train_peak_memory_mb",
    "train_memory_ratio_to_lora",
)


@dataclass
class BenchmarkSettings:
    """Sizes and repetitions of the benchmark. The defaults are the setup of docs/benchmarks.md."""

    rounds: int = 21
    steps_per_round: int = 5
    batch_size: int = 16
    sequence_length: int = 128
    generation_batch: int = 4
    prompt_length: int = 32
    new_tokens: int = 64
    device: str = "auto"
    dtype: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the benchmark settings") -> BenchmarkSettings:
        """Build the settings from a config section, raising UserError for an unknown key or an invalid size."""
        reject_unknown_keys(cls, "efficiency", values, source)
        settings = cls(**values)
        for name, value in asdict(settings).items():
            if name in ("device", "dtype"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"efficiency.{name} in {source} is {value!r}; give a whole number of at least 1")
        return settings


def default_method_settings(config: dict[str, Any], source: str = "the config") -> list[Setting]:
    """Return each method's default setting (its first in the grid), in the order the config declares them."""
    defaults: dict[str, Setting] = {}
    for setting in expand_grid(config, source):
        defaults.setdefault(setting.method, setting)
    return list(defaults.values())


def load_or_build_model(model_path: str | None, model_settings: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    """Load the model at `model_path` (a folder or hub id), or build a random one of the config's sizes."""
    if model_path:
        try:
            return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        except OSError as error:
            raise UserError(f"could not load the model {model_path!r} ({error}); "
                            "give a folder written by save_pretrained or a hub id") from None
    torch.manual_seed(0)
    sizes = {k: v for k, v in model_settings.items() if k != "path"}
    return LlamaForCausalLM(LlamaConfig(vocab_size=sizes.pop("vocab_size", 1024), **sizes)).to(dtype)


def random_batch(vocab_size: int, batch_size: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch_size, length), generator=generator)  # (B, T)
    input_ids = input_ids.to(device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA kernels, so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(model: nn.Module, batch: dict[str, torch.Tensor], steps: int,
                        optimizer: torch.optim.Optimizer | None = None) -> float:
    """Return seconds per step of forward, backward and AdamW step."""
    if optimizer is None:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    device = batch["input_ids"].device
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def time_forward(model, batch, steps: int) -> float:
    """Return seconds per forward pass without gradients (the cost of scoring, as in MMLU)."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    start = time.perf_counter()
    for _ in range(steps):
        model(**inputs)
    return (time.perf_counter() - start) / steps


def saved_adapter_bytes(setting: Setting, model: nn.Module) -> int:
    """Return the bytes on disk of what the method saves (the whole model for full fine-tuning)."""
    with tempfile.TemporaryDirectory() as directory:
        get_method(setting.method, **setting.hyperparameters).save(model, Path(directory))
        return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


@torch.no_grad()
def time_generation(model: nn.Module, batch: dict[str, torch.Tensor], new_tokens: int) -> float:
    """Return generated tokens per second, greedy with the KV cache."""
    model.eval()
    device = batch["input_ids"].device
    synchronize(device)
    start = time.perf_counter()
    model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    synchronize(device)
    return batch["input_ids"].shape[0] * new_tokens / (time.perf_counter() - start)


def with_open_gates(model: nn.Module) -> nn.Module:
    """Give every Excitor gate a non-zero value, as after training (speed does not depend on it)."""
    for name, parameter in model.named_parameters():
        if "excitor_gate" in name:
            parameter.data.fill_(0.1)
    return model


def train_state_bytes_estimate(model: nn.Module) -> int:
    """Estimate the bytes of a model in training: its parameters, plus gradients and AdamW moments.

    Each trainable parameter has a gradient and two AdamW moments of its own dtype. Activations, the
    optimizer's step counters and allocator overhead are not counted.
    """
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return parameter_bytes + 3 * trainable_bytes


def saved_activation_bytes(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Return the bytes of the tensors that one training forward pass saves for backward.

    Each storage counts once, however many views of it are saved. Parameters are left out, because
    train_state_bytes_estimate counts them. Temporary tensors of the backward pass are not counted.
    """
    parameter_storages = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    saved: dict[int, int] = {}

    def record(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(record, lambda tensor: tensor):
        output = model(**batch)
    del output
    return sum(saved.values())


def build_tuned(base: nn.Module, setting: Setting) -> nn.Module:
    """Build `setting`'s method on a copy of `base`; Excitor's gates are opened as after training."""
    try:
        model = get_method(setting.method, **setting.hyperparameters).build(copy.deepcopy(base))
    except (TypeError, ValueError) as error:
        raise UserError(f"method {setting.method!r} with {setting.hyperparameters} cannot be built on this model "
                        f"({error}); change its defaults in the config") from None
    return with_open_gates(model)


def measure_peak_memory_mb(base: nn.Module, setting: Setting, batch: dict[str, torch.Tensor],
                           device: torch.device) -> float:
    """Return the peak allocated CUDA memory of two training steps of one method, alone on the device.

    The second step runs with AdamW's moments allocated, as every later step does.
    NOTE: this CUDA path has not been run yet; only the CPU path is covered by tests.
    """
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model = build_tuned(base, setting).to(device)
    time_training_steps(model, batch, 2)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def efficiency_rows(settings: dict[str, str], trainable_parameters: dict[str, int],
                    step_seconds: dict[str, float], tokens_per_second: dict[str, float],
                    state_mb_estimate: dict[str, float], peak_memory_mb: dict[str, float],
                    forward_seconds: dict[str, float] | None = None,
                    adapter_bytes: dict[str, int] | None = None,
                    activation_mb: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Build one row per method of `settings` (method -> setting id), then the `base` row.

    `train_step_ratio_to_lora` is a method's step seconds over LoRA's (below 1 is faster than LoRA).
    `generation_ratio_to_base` is a method's tokens per second over the base model's (1 is no slowdown).
    `forward_ratio_to_base` is a method's forward-only seconds (no gradient) over the base model's.
    `train_memory_ratio_to_lora` compares the peak CUDA memory where it was measured, else the state
    estimate plus the saved activations.
    A ratio is None when LoRA or the base model was not measured. The base row has generation figures
    and zero trainable parameters only.
    """
    reference_step = step_seconds.get(REFERENCE_METHOD)
    base_speed = tokens_per_second.get(BASE)
    forward_seconds = forward_seconds or {}
    adapter_bytes = adapter_bytes or {}
    base_forward = forward_seconds.get(BASE)
    activation_mb = activation_mb or {}

    def training_memory(method: str) -> float | None:
        if method in peak_memory_mb:
            return peak_memory_mb[method]
        if method in state_mb_estimate and method in activation_mb:
            return state_mb_estimate[method] + activation_mb[method]
        return None

    rows = []
    for method, setting_id in settings.items():
        rows.append({
            "method": method,
            "setting": setting_id,
            "trainable_parameters": trainable_parameters.get(method),
            "train_step_seconds": step_seconds.get(method),
            "train_step_ratio_to_lora": ratio(step_seconds.get(method), reference_step),
            "forward_seconds": forward_seconds.get(method),
            "forward_ratio_to_base": ratio(forward_seconds.get(method), base_forward),
            "adapter_bytes": adapter_bytes.get(method),
            "generation_tokens_per_second": tokens_per_second.get(method),
            "generation_ratio_to_base": ratio(tokens_per_second.get(method), base_speed),
            "train_state_mb_estimate": state_mb_estimate.get(method),
            "train_activation_mb": activation_mb.get(method),
            "train_peak_memory_mb": peak_memory_mb.get(method),
            "train_memory_ratio_to_lora": ratio(training_memory(method), training_memory(REFERENCE_METHOD)),
        })
    rows.append({
        "method": BASE,
        "setting": BASE,
        "trainable_parameters": 0,
        "train_step_seconds": None,
        "train_step_ratio_to_lora": None,
        "forward_seconds": base_forward,
        "forward_ratio_to_base": 1.0 if base_forward else None,
        "adapter_bytes": None,
        "generation_tokens_per_second": base_speed,
        "generation_ratio_to_base": 1.0 if base_speed else None,
        "train_state_mb_estimate": None,
        "train_activation_mb": None,
        "train_peak_memory_mb": None,
        "train_memory_ratio_to_lora": None,
    })
    return rows


def run_benchmark(model_path: str | None, model_settings: dict[str, Any], methods: list[Setting] | None = None,
                  settings: BenchmarkSettings | None = None) -> dict[str, Any]:
    """Measure every method of `methods` and the base model in interleaved rounds, and return the record.

    `methods` defaults to TRAINING_METHODS. Every method's model stays resident during the timing rounds.
    """
    settings = settings or BenchmarkSettings()
    if methods is None:
        methods = [Setting(name, "benchmark", values) for name, values in TRAINING_METHODS.items()]
    unknown = [setting.method for setting in methods if setting.method not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r} to benchmark; use one of {sorted(METHODS)}")

    from excitor_bench.models import resolve_device, resolve_dtype

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    base = load_or_build_model(model_path, model_settings, dtype)
    vocab = base.config.vocab_size
    train_batch = random_batch(vocab, settings.batch_size, settings.sequence_length, device)
    prompt_batch = random_batch(vocab, settings.generation_batch, settings.prompt_length, device)

    # Memory first, one method at a time, while nothing else is on the device.
    peak_memory: dict[str, float] = {}
    if device.type == "cuda":
        for setting in methods:
            peak_memory[setting.method] = measure_peak_memory_mb(base, setting, train_batch, device)
            log.info("%s: peak CUDA memory of a training step %.1f MB", setting.method, peak_memory[setting.method])

    base.to(device)
    tuned = {setting.method: build_tuned(base, setting) for setting in methods}
    optimizers = {name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
                  for name, model in tuned.items()}
    generators = {BASE: base, **tuned}
    trainable = {name: sum(p.numel() for p in model.parameters() if p.requires_grad) for name, model in tuned.items()}
    state_estimate = {name: train_state_bytes_estimate(model) / 2**20 for name, model in tuned.items()}
    activations = {name: saved_activation_bytes(model, train_batch) / 2**20 for name, model in tuned.items()}

    adapter_bytes = {setting.method: saved_adapter_bytes(setting, tuned[setting.method]) for setting in methods}
    step_times: dict[str, list[float]] = {name: [] for name in tuned}
    forward_times: dict[str, list[float]] = {name: [] for name in generators}
    speeds: dict[str, list[float]] = {name: [] for name in generators}
    # Warm-up, untimed: the first step allocates AdamW's moments and the first generation its caches.
    for name, model in tuned.items():
        time_training_steps(model, train_batch, 1, optimizers[name])
    for model in generators.values():
        time_generation(model, prompt_batch, 4)
    for round_index in range(settings.rounds):
        for name, model in tuned.items():
            step_times[name].append(time_training_steps(model, train_batch, settings.steps_per_round, optimizers[name]))
        for name, model in generators.items():
            forward_times[name].append(time_forward(model, train_batch, settings.steps_per_round))
            speeds[name].append(time_generation(model, prompt_batch, settings.new_tokens))
        log.info("round %d/%d done", round_index + 1, settings.rounds)

    step = {name: statistics.median(values) for name, values in step_times.items()}
    tokens_per_second = {name: statistics.median(values) for name, values in speeds.items()}
    forward = {name: statistics.median(values) for name, values in forward_times.items()}
    rows = efficiency_rows({s.method: s.setting_id for s in methods}, trainable, step, tokens_per_second,
                           state_estimate, peak_memory, forward_seconds=forward, adapter_bytes=adapter_bytes,
                           activation_mb=activations)
    return {
        "model": {"path": model_path, "parameters": sum(p.numel() for p in base.parameters()),
                  "layers": base.config.num_hidden_layers, "hidden_size": base.config.hidden_size},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                    "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "setup": {"rounds": settings.rounds, "steps_per_round": settings.steps_per_round,
                  "batch_size": settings.batch_size, "sequence_length": settings.sequence_length,
                  "generation_batch": settings.generation_batch, "prompt_length": settings.prompt_length,
                  "new_tokens": settings.new_tokens,
                  "methods": {s.method: s.hyperparameters for s in methods},
                  "settings": {s.method: s.setting_id for s in methods}},
        "training_step_seconds": step,
        "excitor_to_lora_step_ratio": ratio(step.get("excitor"), step.get(REFERENCE_METHOD)),
        "generation_tokens_per_second": tokens_per_second,
        "excitor_to_base_generation_ratio": ratio(tokens_per_second.get("excitor"), tokens_per_second.get(BASE)),
        "forward_seconds": forward,
        "adapter_bytes": adapter_bytes,
        "trainable_parameters": trainable,
        "train_state_mb_estimate": state_estimate,
        "train_activation_mb": activations,
        "train_peak_memory_mb": peak_memory or None,
        "efficiency": rows,
    }


def format_cell(value: Any) -> str:
    """Write a CSV cell: empty for a missing figure, six significant digits for a float."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def write_efficiency_csv(rows: list[dict[str, Any]], out: Path) -> None:
    """Write the rows of `efficiency_rows` with the EFFICIENCY_COLUMNS header."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EFFICIENCY_COLUMNS)
        for row in rows:
            writer.writerow([format_cell(row.get(column)) for column in EFFICIENCY_COLUMNS])
    log.info("wrote %d rows to %s", len(rows), out)


def write_benchmark(result: dict[str, Any], out: Path) -> None:
    """Write the benchmark record as JSON and log the two ratios the targets are stated for."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    step = result["training_step_seconds"]
    if result["excitor_to_lora_step_ratio"] is not None:
        log.info("training step: Excitor %.4f s, LoRA %.4f s, ratio %.3f (target <= 1.0)",
                 step["excitor"], step["lora"], result["excitor_to_lora_step_ratio"])
    speed = result["generation_tokens_per_second"]
    if result["excitor_to_base_generation_ratio"] is not None:
        log.info("generation: Excitor %.0f tokens/s, base %.0f tokens/s, ratio %.3f (target >= 0.95)",
                 speed["excitor"], speed["base"], result["excitor_to_base_generation_ratio"])
