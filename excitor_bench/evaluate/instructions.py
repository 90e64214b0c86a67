"""Instruction following: exact-match accuracy of greedy answers on a held-out Alpaca-format set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from excitor_bench.data import Example, encode_prompt, load_alpaca

log = logging.getLogger(__name__)


def normalize_answer(text: str) -> str:
    """Keep the first line of a response, with white space collapsed, as the answer to compare."""
    first_line = text.strip().split("\n", 1)[0]
    return " ".join(first_line.split())


def left_padded(sequences: list[list[int]], pad_token_id: int, device) -> dict[str, torch.Tensor]:
    """Left-pad token ids so that every prompt ends where generation starts."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int) -> list[str]:
    """Decode greedily with the KV cache, in left-padded batches, and return only the new text."""
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", mininterval=2.0):
        batch = left_padded([encode_prompt(tokenizer, p) for p in prompts[start : start + batch_size]],
                            tokenizer.pad_token_id, device)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]  # (B, new)
        answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


def evaluate_instructions(model, tokenizer, test_file: Path, *, max_new_tokens: int = 16,
                          batch_size: int = 32, limit: int | None = None) -> dict[str, Any]:
    """Return exact-match accuracy and per-item results on an Alpaca-format test file."""
    examples: list[Example] = load_alpaca(Path(test_file))
    if limit is not None:
        examples = examples[:limit]
    answers = generate_answers(model, tokenizer, [e.prompt for e in examples],
                               max_new_tokens=max_new_tokens, batch_size=batch_size)

    per_item = []
    for index, (example, answer) in enumerate(zip(examples, answers)):
        correct = normalize_answer(answer) == normalize_answer(example.output)
        per_item.append({"index": index, "expected": example.output, "answer": answer, "correct": int(correct)})
    accuracy = sum(item["correct"] for item in per_item) / len(per_item)
    log.info("instruction exact match: %.4f on %d items", accuracy, len(per_item))
    return {"exact_match": accuracy, "n_items": len(per_item), "per_item": per_item}
