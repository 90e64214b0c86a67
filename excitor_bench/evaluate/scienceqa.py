"""ScienceQA prompts, answer parsing and accuracy by question group.

The question text follows the "CQM" input format of the ScienceQA release
(lupantech/ScienceQA, models/base_prompt.py). Training and evaluation both use it.
`build_prompt` returns exactly this text, with no answer:

    Context: {hint, or N/A when the problem has none}
    Question: {question}
    Options: (A) {choice 0} (B) {choice 1} ...

The hint and the question keep their own line breaks, with white space at both ends removed.
Choices are lettered A, B, C, ... in file order and joined by single spaces. The image, when
there is one, reaches the model through the vision tower, not through the text. The release's
format appends "Answer:" to this text, but here the trainer's template decides what comes
between the prompt and the response. `build_target` gives the response, "The answer is B.",
as in the release's "A" output format.

`score_scienceqa` reports accuracy overall and for the groups of the release's evaluation
(tools/evaluate_acc.py), as `excitor_bench.vision.scienceqa.problem_groups` assigns them: NAT,
SOC and LAN by subject (natural, social and language science), TXT for problems with a text
context (a non-empty hint), IMG for problems with an image, NO for problems with neither, and
G1-6 and G7-12 by grade. TXT and IMG overlap.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from typing import Any

from excitor_bench.errors import UserError
from excitor_bench.vision.scienceqa import Problem

log = logging.getLogger(__name__)

CHOICE_LETTERS = string.ascii_uppercase

# "The answer is B" or "The answer is (B)". The phrase may be in any case, but the letter must
# be upper case, so that "the answer is a dog" is not read as choice A.
_ANSWER_IS = re.compile(r"(?i:the answer is)\s*\(?([A-Z])\)?(?![A-Za-z])")
# A choice letter at the start of the line: "(B)", a lone "B", or "B." or "B)" before a space or the
# end of the line. "A dog" and "A.M." are not read as choice A, nor is "A: ...", the answer prefix of
# question-and-answer text, which a model that ignores the choices writes.
_LEADING_LETTER = re.compile(r"\(([A-Z])\)|([A-Z])(?:[.)](?=\s|$)|$)")


def build_prompt(problem: Problem) -> str:
    """Write a problem as the Context / Question / Options text described in the module docstring."""
    _check_choices(problem)
    context = problem.hint.strip() or "N/A"
    options = " ".join(f"({CHOICE_LETTERS[index]}) {choice}" for index, choice in enumerate(problem.choices))
    return f"Context: {context}\nQuestion: {problem.question.strip()}\nOptions: {options}"


def build_target(problem: Problem) -> str:
    """Return the response that a tuned model should generate, such as "The answer is B."."""
    _check_choices(problem)
    return f"The answer is {CHOICE_LETTERS[problem.answer]}."


def parse_answer(text: str, n_choices: int) -> int | None:
    """Return the index of the choice that a generated text picks, or None.

    Only the first non-empty line counts. "The answer is B" anywhere in it wins. Otherwise a
    lone letter at its start counts ("B", "(B)", "B." or "B) ..."). A letter beyond the
    problem's `n_choices` gives None, and so does a line without a letter.
    """
    if n_choices < 1:
        raise ValueError(f"n_choices must be at least 1, got {n_choices}")
    first_line = text.strip().split("\n", 1)[0].strip()

    match = _ANSWER_IS.search(first_line) or _LEADING_LETTER.match(first_line)
    if match is None:
        return None
    letter = next(group for group in match.groups() if group is not None)
    index = CHOICE_LETTERS.index(letter)
    if index >= n_choices:
        return None
    return index


def score_scienceqa(problems: Sequence[Problem], outputs: Sequence[str]) -> dict[str, Any]:
    """Parse each generated output and return accuracy in percent, overall and per group.

    Returns {"accuracy": percent over all problems, "n_items": int, "groups": {group: percent,
    or None when no problem is in the group}, "counts": {group: number of problems},
    "unparsed": number of outputs without a valid choice, "chance_accuracy": the expected percent of
    a uniform random choice, "per_item": [{"pid", "groups", "predicted", "answer", "correct",
    "output"}]}. An unparsed output counts as wrong.
    Raises ValueError when the two sequences differ in length or are empty.
    """
    if len(problems) != len(outputs):
        raise ValueError(f"got {len(problems)} problems but {len(outputs)} outputs; they must pair up one to one")
    if not problems:
        raise ValueError("no ScienceQA problems to score")

    from excitor_bench.vision.scienceqa import problem_groups

    per_item = []
    for problem, output in zip(problems, outputs):
        _check_choices(problem)
        predicted = parse_answer(output, len(problem.choices))
        per_item.append({
            "pid": problem.pid,
            "groups": list(problem_groups(problem)),
            "predicted": predicted,
            "answer": problem.answer,
            "correct": int(predicted == problem.answer),
            "output": output,
        })
    result = summarise(problems, per_item)
    result["unparsed"] = sum(item["predicted"] is None for item in per_item)
    log.info("ScienceQA accuracy %.2f%% on %d problems (%d outputs without a valid choice; "
             "a random choice scores %.2f%%)", result["accuracy"], len(per_item), result["unparsed"],
             result["chance_accuracy"])
    return result


def score_random_choice(problems: Sequence[Problem]) -> dict[str, Any]:
    """Return the expected scores of a uniform random choice, in score_scienceqa's format.

    Each problem's "correct" is 1 / its number of choices, the probability of picking the right one,
    so the accuracy equals the chance accuracy: the floor a method must beat. "predicted" and
    "output" are None. Raises ValueError when there are no problems.
    """
    if not problems:
        raise ValueError("no ScienceQA problems to score")

    from excitor_bench.vision.scienceqa import problem_groups

    per_item = []
    for problem in problems:
        _check_choices(problem)
        per_item.append({"pid": problem.pid, "groups": list(problem_groups(problem)), "predicted": None,
                         "answer": problem.answer, "correct": 1 / len(problem.choices), "output": None})
    result = {**summarise(problems, per_item), "unparsed": 0}  # nothing was generated, so nothing to parse
    log.info("a uniform random choice scores %.2f%% on %d ScienceQA problems", result["accuracy"], len(per_item))
    return result


def summarise(problems: Sequence[Problem], per_item: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the accuracy overall and per group from each item's "correct" (0 to 1), with the counts.

    The result has every key of score_scienceqa's but "unparsed", which only generated answers have.
    """
    from excitor_bench.vision.scienceqa import SCIENCEQA_GROUPS

    correct_in = dict.fromkeys(SCIENCEQA_GROUPS, 0.0)
    counts = dict.fromkeys(SCIENCEQA_GROUPS, 0)
    for item in per_item:
        for group in item["groups"]:
            counts[group] += 1
            correct_in[group] += item["correct"]
    group_accuracy: dict[str, float | None] = {
        group: 100.0 * correct_in[group] / counts[group] if counts[group] else None for group in SCIENCEQA_GROUPS
    }
    return {
        "accuracy": 100.0 * sum(item["correct"] for item in per_item) / len(per_item),
        "n_items": len(per_item),
        "groups": group_accuracy,
        "counts": counts,
        "chance_accuracy": 100.0 * sum(1 / len(problem.choices) for problem in problems) / len(problems),
        "per_item": per_item,
    }


def _check_choices(problem: Problem) -> None:
    """Raise UserError unless the problem has 1 to 26 choices and its answer indexes one."""
    if not 1 <= len(problem.choices) <= len(CHOICE_LETTERS):
        raise UserError(
            f"ScienceQA problem {problem.pid} has {len(problem.choices)} choices; problems.json must give "
            f"1 to {len(CHOICE_LETTERS)} choices per problem"
        )
    if not 0 <= problem.answer < len(problem.choices):
        raise UserError(
            f"ScienceQA problem {problem.pid} has answer {problem.answer}, which is not an index into its "
            f"{len(problem.choices)} choices; fix the problem's 'answer' in problems.json"
        )
