"""Speed of Excitor against LoRA and the frozen base model, measured in one process as ratios.

Timings on a shared machine are noisy, so the methods are measured in interleaved rounds and each
figure is the median over rounds. The ratios compare numbers taken side by side.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from baselines import get_method

log = logging.getLogger(__name__)

# The comparison the targets are stated for: Excitor's defaults against LoRA r16 on q_proj and v_proj.
TRAINING_METHODS = {
    "excitor": {"rank": 16, "prompt_length": 30},
    "lora": {"rank": 16, "target_modules": ["q_proj", "v_proj"]},
}


def load_or_build_model(model_path: str | None, model_settings: dict[str, Any]) -> torch.nn.Module:
    if model_path and Path(model_path, "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    torch.manual_seed(0)
    sizes = {k: v for k, v in model_settings.items() if k != "path"}
    return LlamaForCausalLM(LlamaConfig(vocab_size=sizes.pop("vocab_size", 1024), **sizes))


def random_batch(vocab_size: int, batch_size: int, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch_size, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}


def time_training_steps(model, batch, steps: int) -> float:
    """Return seconds per step of forward, backward and AdamW step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def time_generation(model, batch, new_tokens: int) -> float:
    """Return generated tokens per second, greedy with the KV cache."""
    start = time.perf_counter()
    model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    return batch["input_ids"].shape[0] * new_tokens / (time.perf_counter() - start)


def with_open_gates(model):
    """Give every Excitor gate a non-zero value, as after training (speed does not depend on it)."""
    for name, parameter in model.named_parameters():
        if "excitor_gate" in name:
            parameter.data.fill_(0.1)
    return model


def run_benchmark(model_path: str | None, model_settings: dict[str, Any], *, rounds: int = 21,
                  steps_per_round: int = 5, batch_size: int = 16, length: int = 128,
                  new_tokens: int = 64) -> dict[str, Any]:
    base = load_or_build_model(model_path, model_settings)
    vocab = base.config.vocab_size
    train_batch = random_batch(vocab, batch_size, length)
    prompt_batch = random_batch(vocab, 4, 32)

    tuned = {name: get_method(name, **settings).build(copy.deepcopy(base)).train()
             for name, settings in TRAINING_METHODS.items()}
    generators = {"base": base.eval(), "excitor": with_open_gates(copy.deepcopy(tuned["excitor"])).eval()}

    step_times: dict[str, list[float]] = {name: [] for name in tuned}
    speeds: dict[str, list[float]] = {name: [] for name in generators}
    for name, model in tuned.items():  # warm-up, untimed
        time_training_steps(model, train_batch, 1)
    for model in generators.values():
        time_generation(model, prompt_batch, 4)
    for round_index in range(rounds):
        for name, model in tuned.items():
            step_times[name].append(time_training_steps(model, train_batch, steps_per_round))
        for name, model in generators.items():
            speeds[name].append(time_generation(model, prompt_batch, new_tokens))
        log.info("round %d/%d done", round_index + 1, rounds)

    step = {name: statistics.median(values) for name, values in step_times.items()}
    tokens_per_second = {name: statistics.median(values) for name, values in speeds.items()}
    return {
        "model": {"path": model_path, "parameters": sum(p.numel() for p in base.parameters()),
                  "layers": base.config.num_hidden_layers, "hidden_size": base.config.hidden_size},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "setup": {"rounds": rounds, "steps_per_round": steps_per_round, "batch_size": batch_size,
                  "sequence_length": length, "generation_batch": 4, "new_tokens": new_tokens,
                  "methods": TRAINING_METHODS},
        "training_step_seconds": step,
        "excitor_to_lora_step_ratio": step["excitor"] / step["lora"],
        "generation_tokens_per_second": tokens_per_second,
        "excitor_to_base_generation_ratio": tokens_per_second["excitor"] / tokens_per_second["base"],
    }


def write_benchmark(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("training step: Excitor %.4f s, LoRA %.4f s, ratio %.3f (target <= 1.0)",
             result["training_step_seconds"]["excitor"], result["training_step_seconds"]["lora"],
             result["excitor_to_lora_step_ratio"])
    log.info("generation: Excitor %.0f tokens/s, base %.0f tokens/s, ratio %.3f (target >= 0.95)",
             result["generation_tokens_per_second"]["excitor"], result["generation_tokens_per_second"]["base"],
             result["excitor_to_base_generation_ratio"])
