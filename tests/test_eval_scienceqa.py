"""Tests for ScienceQA prompts, answer parsing and grouped accuracy, on hand-made problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from excitor_bench.errors import UserError
from excitor_bench.evaluate.scienceqa import build_prompt, build_target, parse_answer, score_random_choice, score_scienceqa
from excitor_bench.vision.scienceqa import Problem

IMAGE = Path("images/test/1/image.png")


def make_problem(pid: str, *, subject: str = "natural science", hint: str = "", image: Path | None = None,
                 grade: str = "grade3", choices: tuple[str, ...] = ("yes", "no"), answer: int = 0) -> Problem:
    return Problem(pid=pid, question="Which is it?", choices=choices, answer=answer, hint=hint, image=image,
                   subject=subject, topic="topic", category="category", grade=grade, split="test")


def test_prompt_format_with_hint():
    problem = Problem(
        pid="7", question="  Which animal's feet are also adapted for swimming?\n", choices=("duck", "camel", "owl"),
        answer=0, hint="Ducks live near water.\nThey paddle.", image=IMAGE, subject="natural science",
        topic="biology", category="Adaptations", grade="grade4", split="train",
    )

    assert build_prompt(problem) == (
        "Context: Ducks live near water.\nThey paddle.\n"
        "Question: Which animal's feet are also adapted for swimming?\n"
        "Options: (A) duck (B) camel (C) owl"
    )


def test_prompt_without_hint_says_na():
    prompt = build_prompt(make_problem("1", hint="  "))

    assert prompt.splitlines()[0] == "Context: N/A"
    assert prompt.splitlines()[2] == "Options: (A) yes (B) no"
    assert "answer" not in prompt.lower()


def test_target_names_answer_letter():
    assert build_target(make_problem("1", choices=("a", "b", "c"), answer=1)) == "The answer is B."
    assert build_target(make_problem("2", choices=("a", "b", "c", "d", "e"), answer=4)) == "The answer is E."


def test_answer_outside_choices_is_rejected():
    problem = make_problem("42", choices=("a", "b"), answer=2)

    with pytest.raises(UserError, match="problem 42 has answer 2"):
        build_target(problem)
    with pytest.raises(UserError, match="problem 42"):
        score_scienceqa([problem], ["A"])


def test_problem_without_choices_is_rejected():
    with pytest.raises(UserError, match="problem 5 has 0 choices"):
        build_prompt(make_problem("5", choices=()))


@pytest.mark.parametrize(
    ("text", "n_choices", "expected"),
    [
        ("The answer is B.", 4, 1),
        ("the answer is (C)", 4, 2),
        ("THE ANSWER IS A", 2, 0),
        ("Looking at the map, the answer is D.", 4, 3),
        ("B", 4, 1),
        ("(B)", 4, 1),
        ("B.", 4, 1),
        ("B. Because ducks swim.", 4, 1),
        ("(C) owl", 4, 2),
        ("  \nA.\n", 2, 0),
        # "A:" starts an answer in question-and-answer text; it is not choice A.
        ("A: couplets five", 4, None),
        ("A:", 4, None),
        ("The answer is E.", 4, None),
        ("E", 4, None),
        ("C", 2, None),
        ("A dog", 4, None),
        ("A.M.", 4, None),
        ("The answer is a dog.", 4, None),
        ("The answer is Blue.", 4, None),
        ("b", 4, None),
        ("I am not sure.", 4, None),
        ("", 4, None),
        ("I am not sure.\nThe answer is B.", 4, None),
    ],
)
def test_parse_answer(text, n_choices, expected):
    assert parse_answer(text, n_choices) == expected


def test_parse_answer_needs_choices():
    with pytest.raises(ValueError):
        parse_answer("A", 0)


# Hand-made problems and outputs. Correct: p1 and p3, so 2 of 5 = 40 %.
#   pid subject   hint image grade   groups                  output                 verdict
#   p1  natural   yes  yes   grade2  NAT TXT IMG G1-6        "The answer is B."     correct
#   p2  natural   no   no    grade8  NAT NO G7-12            "B"                    wrong
#   p3  social    no   yes   grade5  SOC IMG G1-6            "(C) because ..."      correct
#   p4  language  yes  no    grade11 LAN TXT G7-12           "I do not know"        unparsed
#   p5  social    no   no    grade3  SOC NO G1-6             "The answer is E."     unparsed (2 choices)
GROUP_PROBLEMS = [
    make_problem("p1", hint="Read this.", image=IMAGE, grade="grade2", choices=("x", "y", "z"), answer=1),
    make_problem("p2", grade="grade8", answer=0),
    make_problem("p3", subject="social science", image=IMAGE, grade="grade5", choices=("a", "b", "c", "d"), answer=2),
    make_problem("p4", subject="language science", hint="A poem.", grade="grade11", answer=0),
    make_problem("p5", subject="social science", grade="grade3", answer=1),
]
GROUP_OUTPUTS = ["The answer is B.", "B", "(C) because maps show it", "I do not know", "The answer is E."]


def test_scores_by_group():
    result = score_scienceqa(GROUP_PROBLEMS, GROUP_OUTPUTS)

    assert result["accuracy"] == pytest.approx(40.0)
    assert result["n_items"] == 5
    assert result["unparsed"] == 2
    # Three choices for p1, four for p3 and two for the rest: (1/3 + 1/2 + 1/4 + 1/2 + 1/2) / 5.
    assert result["chance_accuracy"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 4 + 1 / 2 + 1 / 2) / 5)
    assert result["counts"] == {"NAT": 2, "SOC": 2, "LAN": 1, "TXT": 2, "IMG": 2, "NO": 2, "G1-6": 3, "G7-12": 2}
    assert result["groups"] == pytest.approx({
        "NAT": 50.0, "SOC": 50.0, "LAN": 0.0, "TXT": 50.0, "IMG": 100.0, "NO": 0.0, "G1-6": 200.0 / 3, "G7-12": 0.0,
    })


def test_random_choice_scores_one_over_choices():
    result = score_random_choice(GROUP_PROBLEMS)

    # p1 has three choices, p3 four and the rest two, so NAT (p1, p2) expects (1/3 + 1/2) / 2.
    assert result["accuracy"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 4 + 1 / 2 + 1 / 2) / 5)
    assert result["accuracy"] == pytest.approx(result["chance_accuracy"])
    assert result["groups"]["NAT"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    assert result["groups"]["IMG"] == pytest.approx(100 * (1 / 3 + 1 / 4) / 2)
    assert result["per_item"][2]["correct"] == pytest.approx(1 / 4)
    assert result["unparsed"] == 0


def test_per_item_records():
    per_item = score_scienceqa(GROUP_PROBLEMS, GROUP_OUTPUTS)["per_item"]

    assert per_item[0] == {
        "pid": "p1", "groups": ["NAT", "TXT", "IMG", "G1-6"], "predicted": 1, "answer": 1, "correct": 1,
        "output": "The answer is B.",
    }
    assert [item["predicted"] for item in per_item] == [1, 1, 2, None, None]
    assert [item["correct"] for item in per_item] == [1, 0, 1, 0, 0]
    assert per_item[1]["groups"] == ["NAT", "NO", "G7-12"]
    assert per_item[3]["groups"] == ["LAN", "TXT", "G7-12"]


def test_empty_group_is_none():
    result = score_scienceqa(GROUP_PROBLEMS[:1], GROUP_OUTPUTS[:1])

    assert result["accuracy"] == 100.0
    assert result["groups"]["SOC"] is None
    assert result["groups"]["NO"] is None
    assert result["groups"]["G7-12"] is None
    assert result["counts"]["SOC"] == 0


def test_length_mismatch_is_a_bug():
    with pytest.raises(ValueError, match="2 problems but 1 outputs"):
        score_scienceqa(GROUP_PROBLEMS[:2], GROUP_OUTPUTS[:1])
    with pytest.raises(ValueError, match="no ScienceQA problems"):
        score_scienceqa([], [])
