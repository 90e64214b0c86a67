"""One trainer for every tuning method: same data order, optimiser, schedule and step budget.

Read top to bottom: set up, then the loop, then what a run records. The only thing that depends on
the method is which parameters train (the method decides) and the learning rate (its own setting).
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import get_length_grouped_indices

from baselines import get_method
from excitor_bench.config import reject_unknown_keys
from excitor_bench.data import IGNORE_INDEX, collate, load_alpaca, tokenize_example
from excitor_bench.errors import UserError
from excitor_bench.models import load_base_model, resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class TrainingSettings:
    """The budget and schedule that every method shares."""

    steps: int = 150
    batch_size: int = 16
    max_length: int = 128
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    group_by_length: bool = False
    log_every: int = 25
    device: str = "auto"
    dtype: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "the run spec") -> "TrainingSettings":
        reject_unknown_keys(cls, "training", values, source)
        return cls(**values)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated CUDA memory on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def directory_size_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def batch_order(num_examples: int, steps: int, batch_size: int, seed: int,
                lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Return the example indices of every step, the same for every method: epochs of seeded permutations.

    With `lengths` (one per example), each epoch is grouped into batches of similar length by
    transformers' get_length_grouped_indices, which sorts each mega-batch of 50 batches by length, so
    that little compute goes to padding. The epoch's batches are then shuffled, because a batch's length
    would otherwise follow its place in the mega-batch. The epoch's shorter last batch is shuffled too.
    """
    generator = torch.Generator().manual_seed(seed)
    if lengths is None:
        indices: list[int] = []
        while len(indices) < steps * batch_size:
            indices.extend(torch.randperm(num_examples, generator=generator).tolist())
        return [indices[step * batch_size : (step + 1) * batch_size] for step in range(steps)]
    if len(lengths) != num_examples:
        raise ValueError(f"batch_order got {len(lengths)} lengths for {num_examples} examples")
    batches: list[list[int]] = []
    while len(batches) < steps:
        grouped = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
        epoch = [grouped[start : start + batch_size] for start in range(0, num_examples, batch_size)]
        batches.extend(epoch[i] for i in torch.randperm(len(epoch), generator=generator).tolist())
    return batches[:steps]


def encode_examples(examples, tokenizer, max_length: int, source: str) -> list[tuple[list[int], list[int]]]:
    """Tokenize the examples, dropping those whose response would be cut away entirely by max_length."""
    encoded = [tokenize_example(example, tokenizer, max_length) for example in examples]
    trainable = [pair for pair in encoded if any(label != IGNORE_INDEX for label in pair[1])]
    if not trainable:
        raise UserError(f"no example of {source} fits training.max_length = {max_length} with any of its response; "
                        "raise training.max_length")
    if len(trainable) < len(encoded):
        log.warning("dropped %d of %d examples whose prompt alone exceeds max_length %d",
                    len(encoded) - len(trainable), len(encoded), max_length)
    return trainable


def build_method(spec: dict[str, Any]):
    """Return the tuning method of a run spec, with a one-line error for a bad method or setting."""
    try:
        return get_method(spec["method"], **spec["hyperparameters"])
    except (KeyError, ValueError) as error:
        raise UserError(f"invalid run {spec['method']}: {error}") from None


def build_failed(spec: dict[str, Any], error: Exception) -> UserError:
    return UserError(f"cannot build {spec['method']} with {spec['hyperparameters']} on {spec['base_model']}: "
                     f"{error}; change methods.{spec['method']} in the config")


def train(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train one run described by `spec` and write its adapter, spec and figures under `out_dir`.

    `spec` contains `method`, `hyperparameters` (including `learning_rate`), `seed`, `training` (see
    TrainingSettings), `base_model` (a folder or hub id) and `train_data` (an Alpaca JSON file).
    """
    out_dir = Path(out_dir)
    settings = TrainingSettings.from_dict(spec.get("training", {}))
    seed = int(spec["seed"])
    torch.manual_seed(seed)

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    examples = load_alpaca(Path(spec["train_data"]))
    base_model, tokenizer = load_base_model(spec["base_model"], device=device, dtype=dtype)
    method = build_method(spec)
    try:
        model = method.build(base_model)
    except ValueError as error:
        raise build_failed(spec, error) from None

    encoded = encode_examples(examples, tokenizer, settings.max_length, spec["train_data"])

    def make_batch(indices: list[int]) -> dict[str, torch.Tensor]:
        return collate([encoded[i] for i in indices], tokenizer.pad_token_id)

    figures = optimise(model, method, make_batch, [len(ids) for ids, _ in encoded], settings, seed, device)
    figures["dtype"] = str(dtype).removeprefix("torch.")
    adapter_dir = out_dir / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    method.save(model, adapter_dir)
    write_run_provenance(spec, out_dir, {"base_model": spec["base_model"], "train_data": spec["train_data"]})
    return write_figures(figures, adapter_dir, out_dir)


def optimise(model, method, make_batch, lengths: Sequence[int], settings: TrainingSettings, seed: int,
             device: torch.device) -> dict[str, Any]:
    """Run the shared loop: seeded batch order, AdamW at the method's learning rate, cosine schedule.

    `make_batch(indices)` returns the model's keyword arguments for those examples (labels included);
    `lengths` holds each example's token count, for batches of similar length. Returns the losses and
    the figures of the run.
    """
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    log.info("%s: %s trainable of %s parameters (%.3f %%)", method.name, f"{n_trainable:,}", f"{n_total:,}",
             100 * n_trainable / n_total)

    optimizer = torch.optim.AdamW(trainable, lr=method.settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    steps = batch_order(len(lengths), settings.steps, settings.batch_size, seed,
                        lengths=lengths if settings.group_by_length else None)

    losses: list[float] = []
    tokens_seen = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    progress = tqdm(steps, desc=f"train {method.name}", unit="step", mininterval=2.0)
    for step, indices in enumerate(progress, start=1):
        batch = {key: value.to(device) for key, value in make_batch(indices).items()}
        loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            raise UserError(f"the loss of {method.name} became {loss.item()} at step {step}; "
                            f"lower methods.{method.name}.defaults.learning_rate in the config")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        losses.append(loss.item())
        tokens_seen += int(batch["attention_mask"].sum())
        if step % settings.log_every == 0 or step == settings.steps:
            elapsed = time.perf_counter() - start
            log.info("step %d/%d  loss %.4f  %.0f tokens/s  peak memory %.0f MiB", step, settings.steps,
                     loss.item(), tokens_seen / elapsed, peak_memory_mb(device))
            progress.set_postfix(loss=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - start

    # The final loss averages the last tenth of the steps, because one batch is noisy.
    tail = losses[-max(1, len(losses) // 10):]
    return {
        "losses": losses,
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "train_seconds": round(train_seconds, 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "tokens_per_second": round(tokens_seen / train_seconds, 1),
        "final_loss": round(sum(tail) / len(tail), 6),
        "device": device.type,
    }


PROVENANCE_FILE = "provenance.json"


def write_run_provenance(spec: dict[str, Any], out_dir: Path, inputs: dict[str, str | None]) -> None:
    """Write provenance.json: the spec, package versions, git commit and the digest of every local input.

    An input that is not a local path (a hub id) is recorded by name in the spec only. Folders are
    hashed file by file, so a large model folder adds hashing time to the run.
    """
    from excitor_bench.provenance import provenance_record, write_provenance

    local = {name: Path(path) for name, path in inputs.items() if path and Path(path).exists()}
    record = provenance_record(local, extra={"spec": spec, "seed": int(spec["seed"])})
    write_provenance(Path(out_dir) / PROVENANCE_FILE, record)


def write_figures(figures: dict[str, Any], adapter_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Add the adapter's size to the figures, write train.json and return the figures without the losses."""
    figures = {**figures, "adapter_bytes": directory_size_bytes(adapter_dir)}
    (out_dir / "train.json").write_text(json.dumps(figures, indent=1) + "\n")
    figures.pop("losses")
    log.info("finished in %.1f s: final loss %.4f", figures["train_seconds"], figures["final_loss"])
    return figures


def write_spec(spec: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")



