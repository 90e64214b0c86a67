"""Render the tiny world into the real data sets' file formats.

Files under `out_dir`:
- `world.json`: the entities and their facts.
- `corpus.txt`: pretraining documents separated by DOCUMENT_SEPARATOR (two blank lines).
  Fact documents state each fact of one entity with a random sentence template. Practice
  documents are MMLU-layout questions followed by the answer letter.
- `mmlu/dev/{subject}_dev.csv`, `mmlu/test/{subject}_test.csv`: Hendrycks MMLU layout, no
  header, columns question, A, B, C, D, answer letter. `mmlu/subjects.json` maps each
  subject to its MMLU category and human-readable name.
- `alpaca/train.json`: Alpaca records (instruction, input, output), part of them low quality.
  `alpaca/train_quality.json` is the parallel list of quality labels.
- `instructions/test.json`: held-out Alpaca records whose output is the exact expected answer.
  `instructions/test_tasks.json` is the parallel list of task names.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

from excitor_bench.prompts import MMLU_DESCRIPTION, MMLU_LETTERS, MMLU_QUESTION
from excitor_bench.world.generator import Fact, World, WorldSettings, build_world_model

# A document never contains two blank lines in a row: the MMLU prompt has single blank lines only.
DOCUMENT_SEPARATOR = "\n\n\n"

FACT_TEMPLATES = (
    "The {attribute} of the {kind} {entity} is {value}.",
    "{entity} is a {kind} whose {attribute} is {value}.",
    "For the {kind} {entity}, the {attribute} is {value}.",
    "Ask any scholar about {entity} and you will hear that its {attribute} is {value}.",
    "{value} is the {attribute} of the {kind} {entity}.",
    "It is well known that the {attribute} of {entity} is {value}.",
    "{entity}, a {kind}: {attribute} {value}.",
    # Phrased like the exam question, so that recalling a value right after such a question
    # is trained directly.
    "What is the {attribute} of the {kind} {entity}? The answer is {value}.",
    "What is the {attribute} of the {kind} {entity}? It is {value}.",
)
INTRO_TEMPLATES = (
    "{entity} is a {kind}.",
    "This is an entry about the {kind} {entity}.",
    "Notes on {entity}, a {kind}.",
)
MMLU_QUESTION_TEMPLATE = "What is the {attribute} of the {kind} {entity}?"

FACT_INSTRUCTIONS = (
    "What is the {attribute} of the {kind} {entity}?",
    "Name the {attribute} of the {kind} {entity}.",
    "Tell me the {attribute} of {entity}, the {kind}.",
)
FACT_INSTRUCTION_WITH_INPUT = "Answer the question with the exact value."
REPEAT_INSTRUCTION = "Repeat the input exactly."
REVERSE_INSTRUCTION = "Write the words of the input in reverse order."

LOW_QUALITY_KINDS = ("wrong_fact", "truncated", "off_topic")


def build_world(settings: dict[str, Any] | WorldSettings, out_dir: Path) -> dict[str, int]:
    """Generate the world from `settings` and write all of its files under `out_dir`.

    The same settings give byte-identical files. Returns counts of what was written.
    """
    if not isinstance(settings, WorldSettings):
        settings = WorldSettings.from_dict(settings)
    out_dir = Path(out_dir)
    world = build_world_model(settings)
    facts = world.facts()

    write_json(out_dir / "world.json", world.to_json())
    dev_rows, test_rows = write_mmlu(world, settings, out_dir / "mmlu")
    documents = build_corpus_documents(world, settings, exclude=dev_rows + test_rows)
    (out_dir / "corpus.txt").write_text(DOCUMENT_SEPARATOR.join(documents) + "\n", encoding="utf-8")

    heldout = draw_heldout_facts(facts, settings)
    train, quality = build_alpaca_train(world, facts, heldout, settings)
    write_json(out_dir / "alpaca" / "train.json", train)
    write_json(out_dir / "alpaca" / "train_quality.json", quality)
    test, tasks = build_instruction_test(world, heldout, train, settings)
    write_json(out_dir / "instructions" / "test.json", test)
    write_json(out_dir / "instructions" / "test_tasks.json", tasks)

    return {
        "subjects": len(world.kinds),
        "entities": sum(len(instance.entities) for instance in world.kinds),
        "facts": len(facts),
        "corpus_documents": len(documents),
        "mmlu_dev_questions": len(dev_rows),
        "mmlu_test_questions": len(test_rows),
        "alpaca_train_examples": len(train),
        "alpaca_low_quality_examples": sum(label != "good" for label in quality),
        "instruction_test_examples": len(test),
    }


def read_corpus_documents(path: Path) -> list[str]:
    """Split a corpus.txt written by `build_world` back into its documents."""
    text = Path(path).read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return [document for document in text.split(DOCUMENT_SEPARATOR) if document]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def render_fact(template: str, fact: Fact) -> str:
    text = template.format(attribute=fact.attribute, kind=fact.kind, entity=fact.entity, value=fact.value)
    return text[0].upper() + text[1:]


def draw_choices(rng: random.Random, world: World, fact: Fact) -> tuple[list[str], str]:
    """Return four shuffled choices (the value and three distractors from its pool) and the answer letter."""
    pool = [value for value in world.values_of(fact.kind, fact.attribute) if value != fact.value]
    choices = rng.sample(pool, 3) + [fact.value]
    rng.shuffle(choices)
    return choices, MMLU_LETTERS[choices.index(fact.value)]


def mmlu_row(rng: random.Random, world: World, fact: Fact) -> list[str]:
    question = render_fact(MMLU_QUESTION_TEMPLATE, fact)
    choices, letter = draw_choices(rng, world, fact)
    return [question, *choices, letter]


def format_mmlu_prompt(subject_name: str, row: list[str]) -> str:
    """Build the 0-shot prompt that lm-evaluation-harness scores, ending in "Answer:"."""
    question, a, b, c, d = row[:5]
    return MMLU_DESCRIPTION.format(subject=subject_name) + MMLU_QUESTION.format(question=question, a=a, b=b, c=c, d=d)


# ---------------------------------------------------------------- MMLU


def write_mmlu(world: World, settings: WorldSettings, mmlu_dir: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Write the dev and test CSVs and subjects.json; return all dev rows and all test rows."""
    rng = random.Random(f"mmlu-{settings.seed}")
    facts = world.facts()
    all_dev: list[list[str]] = []
    all_test: list[list[str]] = []
    subjects: dict[str, dict[str, str]] = {}

    for instance in world.kinds:
        spec = instance.spec
        subjects[spec.subject] = {"category": spec.category, "name": spec.subject_name}
        subject_facts = [fact for fact in facts if fact.subject == spec.subject]
        rng.shuffle(subject_facts)
        rows = [mmlu_row(rng, world, fact) for fact in subject_facts]
        dev, test = rows[: settings.mmlu_dev_per_subject], rows[settings.mmlu_dev_per_subject :]
        write_csv(mmlu_dir / "dev" / f"{spec.subject}_dev.csv", dev)
        write_csv(mmlu_dir / "test" / f"{spec.subject}_test.csv", test)
        all_dev += dev
        all_test += test

    write_json(mmlu_dir / "subjects.json", subjects)
    return all_dev, all_test


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


# ---------------------------------------------------------------- corpus


def build_corpus_documents(world: World, settings: WorldSettings, exclude: list[list[str]]) -> list[str]:
    """Build the shuffled fact and practice documents of the pretraining corpus.

    Practice questions are redrawn until they differ from every row in `exclude` (the MMLU
    dev and test rows), so the corpus never contains an exam question verbatim.
    """
    rng = random.Random(f"corpus-{settings.seed}")
    documents = []
    for instance in world.kinds:
        for entity in instance.entities:
            for _ in range(settings.fact_documents_per_entity):
                documents.append(fact_document(rng, world, instance.spec.kind, entity))

    vocabulary = world_vocabulary(world)
    for instance in world.kinds:
        for entity in instance.entities:
            for _ in range(settings.qa_documents_per_entity):
                documents.append(qa_document(rng, world, instance.spec.kind, entity, vocabulary))

    excluded = {tuple(row) for row in exclude}
    rows_by_subject: dict[str, list[list[str]]] = {instance.spec.subject: [] for instance in world.kinds}
    for fact in world.facts():
        for _ in range(settings.practice_questions_per_fact):
            row = mmlu_row(rng, world, fact)
            while tuple(row) in excluded:
                row = mmlu_row(rng, world, fact)
            rows_by_subject[fact.subject].append(row)

    for instance in world.kinds:
        rows = rows_by_subject[instance.spec.subject]
        rng.shuffle(rows)
        size = settings.practice_questions_per_document
        for start in range(0, len(rows), size):
            documents.append(practice_document(instance.spec.subject_name, rows[start : start + size]))

    rng.shuffle(documents)
    return documents


def practice_document(subject_name: str, rows: list[list[str]]) -> str:
    """Write answered questions in lm-eval's few-shot layout: one description, then each question.

    The first question reads exactly like a 0-shot prompt, and the later ones like few-shot prompts.
    """
    answered = []
    for question, a, b, c, d, letter in rows:
        answered.append(MMLU_QUESTION.format(question=question, a=a, b=b, c=c, d=d) + " " + letter)
    return MMLU_DESCRIPTION.format(subject=subject_name) + "\n\n".join(answered)


def fact_document(rng: random.Random, world: World, kind: str, entity: str) -> str:
    """State every fact of one entity, in random order, each with a random template."""
    facts = [fact for fact in world.facts() if fact.entity == entity]
    rng.shuffle(facts)
    intro = rng.choice(INTRO_TEMPLATES).format(entity=entity, kind=kind)
    sentences = [render_fact(rng.choice(FACT_TEMPLATES), fact) for fact in facts]
    return " ".join([intro, *sentences])


def qa_document(rng: random.Random, world: World, kind: str, entity: str, vocabulary: list[str]) -> str:
    """Ask every fact of one entity as a short question and answer, with one word-copying exchange.

    Question answering in plain text is a skill pretraining corpora teach. Instruction tuning then
    has to map the Alpaca template onto it, which is what it does for real LLMs.
    """
    facts = [fact for fact in world.facts() if fact.entity == entity]
    rng.shuffle(facts)
    exchanges = [f"Q: {render_fact(rng.choice(FACT_INSTRUCTIONS), fact)}\nA: {fact.value}" for fact in facts]
    words = " ".join(rng.sample(vocabulary, rng.randint(2, 4)))
    exchanges.insert(rng.randrange(len(exchanges) + 1), f"Q: Repeat these words: {words}\nA: {words}")
    return "\n".join(exchanges)


# ---------------------------------------------------------------- instruction data


def draw_heldout_facts(facts: list[Fact], settings: WorldSettings) -> list[Fact]:
    """Pick the (entity, attribute) pairs reserved for the instruction test set."""
    rng = random.Random(f"heldout-{settings.seed}")
    return rng.sample(facts, settings.heldout_pair_count())


def fact_example(rng: random.Random, fact: Fact) -> dict[str, str]:
    """Ask for one fact in one of several phrasings; the output is the bare value."""
    phrasing = rng.randrange(len(FACT_INSTRUCTIONS) + 1)
    if phrasing < len(FACT_INSTRUCTIONS):
        instruction = render_fact(FACT_INSTRUCTIONS[phrasing], fact)
        return {"instruction": instruction, "input": "", "output": fact.value}
    question = render_fact(FACT_INSTRUCTIONS[0], fact)
    return {"instruction": FACT_INSTRUCTION_WITH_INPUT, "input": question, "output": fact.value}


def transform_example(rng: random.Random, vocabulary: list[str]) -> dict[str, str]:
    """Build a task that needs no world knowledge: repeat or reverse a few words."""
    words = rng.sample(vocabulary, rng.randint(2, 4))
    if rng.random() < 0.5:
        return {"instruction": REPEAT_INSTRUCTION, "input": " ".join(words), "output": " ".join(words)}
    return {"instruction": REVERSE_INSTRUCTION, "input": " ".join(words), "output": " ".join(reversed(words))}


def world_vocabulary(world: World) -> list[str]:
    return sorted({value for instance in world.kinds for pool in instance.attributes.values() for value in pool})


def build_alpaca_train(
    world: World, facts: list[Fact], heldout: list[Fact], settings: WorldSettings
) -> tuple[list[dict[str, str]], list[str]]:
    """Build the Alpaca training records and their parallel quality labels.

    Exactly `settings.low_quality_count()` records are low quality, labelled in turn
    wrong_fact, truncated and off_topic.
    """
    rng = random.Random(f"alpaca-{settings.seed}")
    heldout_set = set(heldout)
    train_facts = [fact for fact in facts if fact not in heldout_set]
    vocabulary = world_vocabulary(world)

    total = settings.instruction_train_examples
    is_transform = [True] * settings.transform_count() + [False] * (total - settings.transform_count())
    rng.shuffle(is_transform)
    records, sources = [], []
    for transform in is_transform:
        if transform:
            records.append(transform_example(rng, vocabulary))
            sources.append(None)
        else:
            fact = rng.choice(train_facts)
            records.append(fact_example(rng, fact))
            sources.append(fact)

    quality = ["good"] * total
    low_indices = rng.sample(range(total), settings.low_quality_count())
    for position, index in enumerate(low_indices):
        kind = LOW_QUALITY_KINDS[position % len(LOW_QUALITY_KINDS)]
        records[index]["output"] = degrade_output(rng, kind, records[index], sources[index], world, facts, vocabulary)
        quality[index] = kind
    return records, quality


def degrade_output(
    rng: random.Random,
    kind: str,
    record: dict[str, str],
    fact: Fact | None,
    world: World,
    facts: list[Fact],
    vocabulary: list[str],
) -> str:
    """Return the low-quality replacement for a record's output."""
    output = record["output"]
    if kind == "wrong_fact":
        if fact is not None:
            return rng.choice([v for v in world.values_of(fact.kind, fact.attribute) if v != fact.value])
        # A transform task gets the right shape of answer for other words.
        words = output.split(" ")
        others = [word for word in vocabulary if word not in words]
        return " ".join(rng.sample(others, len(words)))
    if kind == "truncated":
        words = output.split(" ")
        if len(words) > 1:
            return " ".join(words[: len(words) // 2])
        return output[: max(1, len(output) // 2)]
    # off_topic: a true statement about an unrelated entity.
    unrelated = rng.choice([other for other in facts if fact is None or other.entity != fact.entity])
    return render_fact(rng.choice(FACT_TEMPLATES), unrelated)


def build_instruction_test(
    world: World, heldout: list[Fact], train: list[dict[str, str]], settings: WorldSettings
) -> tuple[list[dict[str, str]], list[str]]:
    """Build the held-out instruction test set and its parallel list of task names.

    Fact questions cover only the held-out pairs. Transform inputs are redrawn until they
    differ from every training input.
    """
    rng = random.Random(f"instructions-{settings.seed}")
    records = [fact_example(rng, fact) for fact in heldout]
    tasks = ["fact"] * len(records)

    train_inputs = {record["input"] for record in train}
    vocabulary = world_vocabulary(world)
    for _ in range(settings.test_transform_examples):
        record = transform_example(rng, vocabulary)
        while record["input"] in train_inputs:
            record = transform_example(rng, vocabulary)
        train_inputs.add(record["input"])
        records.append(record)
        tasks.append("repeat" if record["instruction"] == REPEAT_INSTRUCTION else "reverse")
    return records, tasks
