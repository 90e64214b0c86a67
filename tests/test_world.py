"""Tests for the tiny world's files and its tokenizer, on micro settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from excitor_bench.errors import UserError
from excitor_bench.prompts import MMLU_LETTERS
from excitor_bench.tokenizer import train_tokenizer
from excitor_bench.world import MMLU_CATEGORIES, WorldSettings, build_world, read_corpus_documents

# 4 kinds x 4 entities x 2 attributes = 32 facts; 5 dev and 3 test questions per subject.
MICRO_WORLD = {
    "seed": 7,
    "kinds": 4,
    "entities_per_kind": 4,
    "attributes_per_kind": 2,
    "values_per_attribute": 4,
    "fact_documents_per_entity": 1,
    "qa_documents_per_entity": 1,
    "practice_questions_per_fact": 1,
    "instruction_train_examples": 40,
    "low_quality_share": 0.3,
    "transform_share": 0.25,
    "heldout_pair_share": 0.25,
    "test_transform_examples": 4,
}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(MICRO_WORLD, out)
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def true_facts(world_dir: Path) -> dict[tuple[str, str], str]:
    """Map (entity, attribute) to the true value, read from world.json."""
    facts = {}
    for kind in load_json(world_dir / "world.json")["kinds"]:
        for entity, values in kind["entities"].items():
            for attribute, value in values.items():
                facts[(entity, attribute)] = value
    return facts


def test_same_seed_identical_files(world_dir, tmp_path):
    build_world(MICRO_WORLD, tmp_path)
    assert read_tree(tmp_path) == read_tree(world_dir)


def test_other_seed_different_files(world_dir, tmp_path):
    build_world({**MICRO_WORLD, "seed": 8}, tmp_path)
    first, second = read_tree(world_dir), read_tree(tmp_path)
    assert first.keys() == second.keys()
    assert first["world.json"] != second["world.json"]
    assert first["corpus.txt"] != second["corpus.txt"]


def test_summary_counts(tmp_path):
    summary = build_world(MICRO_WORLD, tmp_path)
    assert summary["facts"] == 32
    assert summary["mmlu_dev_questions"] == 4 * 5
    assert summary["mmlu_test_questions"] == 4 * 3
    assert summary["alpaca_train_examples"] == 40
    assert summary["instruction_test_examples"] == 8 + 4


def test_mmlu_csv_layout_and_answers(world_dir):
    facts = true_facts(world_dir)
    subjects = load_json(world_dir / "mmlu" / "subjects.json")
    assert len(subjects) == 4
    for subject in subjects:
        for split, count in (("dev", 5), ("test", 3)):
            rows = read_rows(world_dir / "mmlu" / split / f"{subject}_{split}.csv")
            assert len(rows) == count
            for row in rows:
                assert len(row) == 6
                assert row[5] in MMLU_LETTERS
                assert len(set(row[1:5])) == 4
                entity = row[0].rstrip("?").split(" ")[-1]
                attribute = next(attr for (name, attr) in facts if name == entity and f" {attr} of " in row[0])
                assert row[1 + MMLU_LETTERS.index(row[5])] == facts[(entity, attribute)]


def test_mmlu_csv_is_csv_writer_quoted(world_dir):
    """A header row would have 'question' in it, and a stray quote would break the row count."""
    text = (world_dir / "mmlu" / "test" / "xenobiology_test.csv").read_text(encoding="utf-8")
    assert not text.startswith("question")
    assert len(text.strip().split("\n")) == 3


def test_every_mmlu_category_used(world_dir):
    subjects = load_json(world_dir / "mmlu" / "subjects.json")
    assert {entry["category"] for entry in subjects.values()} == set(MMLU_CATEGORIES)
    for entry in subjects.values():
        assert entry["name"]


def test_corpus_has_no_alpaca_response(world_dir):
    text = (world_dir / "corpus.txt").read_text(encoding="utf-8")
    assert "### Response:" not in text
    assert "### Instruction:" not in text


def practice_questions(documents: list[str]) -> list[str]:
    """Return each answered question block of the practice documents."""
    blocks = []
    for document in documents:
        if document.startswith("The following are"):
            blocks += document.split("\n\n")[1:]
    return blocks


def test_corpus_documents_split(world_dir):
    documents = read_corpus_documents(world_dir / "corpus.txt")
    qa_documents = [document for document in documents if document.startswith("Q: ")]
    fact_documents = [d for d in documents if not d.startswith(("The following are", "Q: "))]
    # 16 entities x 1 fact document and 1 question-and-answer document each.
    assert len(fact_documents) == 16
    assert len(qa_documents) == 16
    # 32 facts x 1 practice question, 4 questions per document and 8 per subject.
    questions = practice_questions(documents)
    assert len(questions) == 32
    assert len(documents) == 16 + 16 + 8
    for question in questions:
        assert question.rsplit("\nAnswer: ", 1)[1] in MMLU_LETTERS


def test_practice_questions_not_test_copies(world_dir):
    exam_questions = set()
    for split in ("dev", "test"):
        for path in (world_dir / "mmlu" / split).glob("*.csv"):
            for row in read_rows(path):
                exam_questions.add(f"{row[0]}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer:")
    questions = practice_questions(read_corpus_documents(world_dir / "corpus.txt"))
    for question in questions:
        assert question.rsplit(" ", 1)[0] not in exam_questions


def test_every_fact_in_corpus(world_dir):
    text = (world_dir / "corpus.txt").read_text(encoding="utf-8")
    for (entity, _attribute), value in true_facts(world_dir).items():
        assert entity in text
        assert value in text


def test_qa_documents_answer_every_fact(world_dir):
    documents = read_corpus_documents(world_dir / "corpus.txt")
    qa_lines = [line for document in documents for line in document.split("\n") if line.startswith(("Q: ", "A: "))]
    answers = {(qa_lines[i], qa_lines[i + 1][3:]) for i in range(0, len(qa_lines) - 1, 2)}

    for (entity, attribute), value in true_facts(world_dir).items():
        assert any(entity in question and attribute in question and answer == value for question, answer in answers), (
            entity, attribute)


def test_alpaca_records_have_three_keys(world_dir):
    for name in ("alpaca/train.json", "instructions/test.json"):
        records = load_json(world_dir / name)
        assert records
        for record in records:
            assert set(record) == {"instruction", "input", "output"}
            assert all(isinstance(value, str) for value in record.values())


def test_low_quality_share_matches(world_dir):
    quality = load_json(world_dir / "alpaca" / "train_quality.json")
    assert len(quality) == 40
    # round(0.3 * 40) = 12, split evenly over the three kinds.
    assert sum(label != "good" for label in quality) == 12
    for kind in ("wrong_fact", "truncated", "off_topic"):
        assert quality.count(kind) == 4


def test_low_quality_zero_share(tmp_path):
    build_world({**MICRO_WORLD, "low_quality_share": 0.0}, tmp_path)
    quality = load_json(tmp_path / "alpaca" / "train_quality.json")
    assert set(quality) == {"good"}


def test_good_fact_answers_are_true(world_dir):
    facts = true_facts(world_dir)
    records = load_json(world_dir / "alpaca" / "train.json")
    quality = load_json(world_dir / "alpaca" / "train_quality.json")
    checked = 0
    for record, label in zip(records, quality):
        question = record["input"] or record["instruction"]
        matches = [value for (entity, attribute), value in facts.items() if f" {attribute} of " in question and entity in question]
        if label == "good" and matches:
            assert record["output"] == matches[0]
            checked += 1
        if label == "wrong_fact" and matches:
            assert record["output"] != matches[0]
    assert checked > 0


def test_heldout_pairs_disjoint_from_train(world_dir):
    facts = true_facts(world_dir)

    def queried_pairs(records):
        pairs = set()
        for record in records:
            question = record["input"] or record["instruction"]
            for entity, attribute in facts:
                if f" {attribute} of " in question and entity in question:
                    pairs.add((entity, attribute))
        return pairs

    train_pairs = queried_pairs(load_json(world_dir / "alpaca" / "train.json"))
    test_records = load_json(world_dir / "instructions" / "test.json")
    tasks = load_json(world_dir / "instructions" / "test_tasks.json")
    test_pairs = queried_pairs([record for record, task in zip(test_records, tasks) if task == "fact"])
    # round(0.25 * 32) = 8 held-out pairs.
    assert len(test_pairs) == 8
    assert train_pairs
    assert not train_pairs & test_pairs


def test_instruction_test_outputs_exact(world_dir):
    facts = true_facts(world_dir)
    records = load_json(world_dir / "instructions" / "test.json")
    tasks = load_json(world_dir / "instructions" / "test_tasks.json")
    train_inputs = {record["input"] for record in load_json(world_dir / "alpaca" / "train.json")}
    for record, task in zip(records, tasks):
        if task == "fact":
            assert record["output"] in set(facts.values())
        elif task == "repeat":
            assert record["output"] == record["input"]
        else:
            assert record["output"].split(" ") == record["input"].split(" ")[::-1]
        if task != "fact":
            assert record["input"] not in train_inputs


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"colour": 3}, "world.colour"),
        ({"kinds": 3}, "world.kinds"),
        ({"values_per_attribute": 3}, "world.values_per_attribute"),
        ({"low_quality_share": 1.5}, "world.low_quality_share"),
        ({"entities_per_kind": "twelve"}, "world.entities_per_kind"),
    ],
)
def test_invalid_settings_raise_user_error(settings, fragment, tmp_path):
    with pytest.raises(UserError, match=fragment):
        build_world(settings, tmp_path)


def test_settings_defaults_filled():
    settings = WorldSettings.from_dict({"seed": 3})
    assert settings.seed == 3
    assert settings.low_quality_share == 0.3


@pytest.fixture(scope="module")
def tokenizer_dir(world_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    files = [world_dir / "corpus.txt", world_dir / "alpaca" / "train.json", world_dir / "instructions" / "test.json"]
    train_tokenizer(files, 400, out)
    return out


def test_tokenizer_loads_through_auto(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(tokenizer) == 400
    for token in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tokenizer, token) is not None
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert tokenizer("Answer:")["input_ids"][0] == tokenizer.bos_token_id


def test_tokenizer_round_trips_corpus(world_dir, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lines = (world_dir / "corpus.txt").read_text(encoding="utf-8").split("\n")
    lines += ["### Response:\n", "  two  spaces , odd punctuation ?!", "Zürich café"]
    for line in lines:
        ids = tokenizer(line)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == line


def test_tokenizer_deterministic(world_dir, tokenizer_dir, tmp_path):
    files = [world_dir / "corpus.txt", world_dir / "alpaca" / "train.json", world_dir / "instructions" / "test.json"]
    train_tokenizer(files, 400, tmp_path)
    assert read_tree(tmp_path) == read_tree(tokenizer_dir)


def test_tokenizer_rejects_tiny_vocab(world_dir, tmp_path):
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer([world_dir / "corpus.txt"], 100, tmp_path)
