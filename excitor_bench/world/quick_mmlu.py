"""A small MMLU scorer that mirrors lm-evaluation-harness's letter log-likelihood scoring.

The official numbers come from lm-eval, and this scorer checks pretraining without it. For each
test row it builds the 0-shot prompt (subject description, question, four choices, "Answer:").
It then picks the letter whose continuation " A" / " B" / " C" / " D" has the highest
log-likelihood. Like lm-eval, it encodes context + continuation together and scores the tokens
past the encoded context.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from excitor_bench.prompts import MMLU_LETTERS
from excitor_bench.world.writers import format_mmlu_prompt


def read_mmlu_split(mmlu_dir: Path, split: str) -> dict[str, list[list[str]]]:
    """Return {subject: rows} for one split ("dev" or "test") of a Hendrycks-layout folder."""
    mmlu_dir = Path(mmlu_dir)
    subjects = json.loads((mmlu_dir / "subjects.json").read_text(encoding="utf-8"))
    rows = {}
    for subject in sorted(subjects):
        with open(mmlu_dir / split / f"{subject}_{split}.csv", newline="", encoding="utf-8") as handle:
            rows[subject] = list(csv.reader(handle))
    return rows


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum the log-probabilities of the continuation's tokens after the context."""
    whole = tokenizer(context + continuation)["input_ids"]
    context_length = len(tokenizer(context)["input_ids"])
    input_ids = torch.tensor([whole], device=model.device)
    logits = model(input_ids=input_ids).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits[context_length - 1 : -1], dim=-1)
    targets = input_ids[0, context_length:]
    return logprobs.gather(1, targets[:, None]).sum().item()


@torch.no_grad()
def score_mmlu_letters(model, tokenizer, mmlu_dir: Path) -> float:
    """Return the 0-shot accuracy over every test question in `mmlu_dir` (micro average)."""
    subjects = json.loads((Path(mmlu_dir) / "subjects.json").read_text(encoding="utf-8"))
    was_training = model.training
    model.eval()
    correct = total = 0
    for subject, rows in read_mmlu_split(mmlu_dir, "test").items():
        for row in rows:
            context = format_mmlu_prompt(subjects[subject]["name"], row)
            scores = [continuation_logprob(model, tokenizer, context, " " + letter) for letter in MMLU_LETTERS]
            predicted = MMLU_LETTERS[max(range(len(scores)), key=scores.__getitem__)]
            correct += predicted == row[5]
            total += 1
    model.train(was_training)
    return correct / total
