"""Loaders for the instruction data sets, with errors that name the file, the record and the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from excitor_bench.errors import UserError
from excitor_bench.prompts import format_alpaca_prompt

ALPACA_KEYS = ("instruction", "input", "output")

# Label value that the loss ignores (transformers' and torch's cross-entropy default).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str

    @property
    def prompt(self) -> str:
        return format_alpaca_prompt(self.instruction, self.input)


def load_alpaca(path: Path) -> list[Example]:
    """Read an Alpaca-format JSON list of {instruction, input, output} records."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"instruction data file {path} not found; check the data paths in the config")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); fix the file or regenerate it") from None
    if not isinstance(records, list) or not records:
        raise UserError(f"{path} must hold a non-empty JSON list of Alpaca records; found {type(records).__name__}")

    examples = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{path} record {index}: expected an object with {list(ALPACA_KEYS)}, found {record!r:.60}")
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                raise UserError(
                    f"{path} record {index}: missing or non-text {key!r}; "
                    f"every Alpaca record needs 'instruction' and 'output' strings ('input' may be empty)"
                )
        text_input = record.get("input", "")
        if not isinstance(text_input, str):
            raise UserError(f"{path} record {index}: 'input' must be a string, found {text_input!r:.60}")
        examples.append(Example(record["instruction"], text_input, record["output"]))
    return examples


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Return the ids of a prompt as training and generation both see it: BOS (if any), then the text."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def tokenize_example(example: Example, tokenizer, max_length: int) -> tuple[list[int], list[int]]:
    """Return input ids and labels for one example, with the loss on the response and EOS only."""
    prompt_ids = encode_prompt(tokenizer, example.prompt)
    response_ids = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return input_ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of (input ids, labels) pairs into tensors."""
    length = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, (ids, target) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
