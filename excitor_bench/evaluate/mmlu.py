"""MMLU-format multiple-choice evaluation of an in-memory model through lm-evaluation-harness.

The input is a directory in the layout of the original MMLU release (Hendrycks et al., 2021):

    mmlu_dir/
        subjects.json            {subject: {"category": ..., "name": ...}}
        dev/{subject}_dev.csv    few-shot examples
        test/{subject}_test.csv  scored questions

Each CSV has no header and six columns: question, A, B, C, D, answer letter.

Every file is validated before anything runs. Then one lm-eval task per subject is written to a
work directory in the format of lm-eval's own ``mmlu`` tasks (``lm_eval/tasks/mmlu/default`` in
lm-eval 0.4.13). They share its prompt, the letters A-D as choices, the first dev rows as
few-shot examples and accuracy as the metric. Groups per category and overall weight each
subject by its number of questions.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from excitor_bench.errors import UserError

logger = logging.getLogger(__name__)

CATEGORIES = ("stem", "humanities", "social_sciences", "other")
ANSWER_LETTERS = ("A", "B", "C", "D")
COLUMNS = ("question", "A", "B", "C", "D", "answer")
SUBJECTS_FILE = "subjects.json"

# lm-eval's mmlu/default/_default_template_yaml, copied so that scores are comparable with the
# built-in `mmlu` task. `choices` and the integer `answer` come from load_subject_dataset.
DOC_TO_TEXT = (
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
    "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
)
DESCRIPTION = "The following are multiple choice questions (with answers) about {name}.\n\n"
TOP_GROUP = "mmlu"

_SUBJECT_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
# Subject keys that would give a task the name of a category group or of its tag.
_RESERVED_SUBJECT_KEYS = frozenset(CATEGORIES) | {f"{c}_tasks" for c in CATEGORIES}


@dataclass(frozen=True)
class MmluRow:
    """One multiple-choice question: its text, the four choices A-D and the answer letter."""

    question: str
    choices: tuple[str, str, str, str]
    answer: str

    def __post_init__(self):
        if len(self.choices) != 4:
            raise ValueError(f"choices must have 4 entries (A-D), got {len(self.choices)}")
        if self.answer not in ANSWER_LETTERS:
            raise ValueError(f"answer must be one of A, B, C, D, got {self.answer!r}")

    @property
    def answer_index(self) -> int:
        return ANSWER_LETTERS.index(self.answer)


@dataclass(frozen=True)
class Subject:
    """An MMLU subject: its file stem, its category and the human-readable name used in prompts."""

    key: str
    category: str
    name: str


# ----------------------------------------------------------------------------- CSV files


def write_mmlu_csv(path: Path, rows: Iterable[MmluRow]) -> None:
    """Write rows as a header-less MMLU CSV (question, A, B, C, D, answer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for row in rows:
            writer.writerow([row.question, *row.choices, row.answer])


def read_mmlu_csv(path: Path) -> list[MmluRow]:
    """Read and validate a header-less MMLU CSV.

    Raises UserError naming the file, the 1-based row number and the fix for the first bad row.
    A row number counts CSV records, so it equals the line number unless a quoted field spans lines.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; create it in the MMLU layout (question, A, B, C, D, answer)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}); re-save the file as UTF-8"
        ) from err

    rows = []
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        for row_number, fields in enumerate(reader, start=1):
            # A blank line is skipped, as pandas.read_csv skips it, but it still counts as a row.
            if fields:
                rows.append(_parse_row(path, row_number, fields))
    except csv.Error as err:
        raise UserError(f"{path} row {reader.line_num}: invalid CSV ({err}); fix the quoting of that row") from err

    if not rows:
        raise UserError(f"{path}: file contains no rows; add questions or remove the subject")
    return rows


def _parse_row(path: Path, row_number: int, fields: list[str]) -> MmluRow:
    where = f"{path} row {row_number}"
    if len(fields) != len(COLUMNS):
        if len(fields) == len(COLUMNS) + 1:
            fix = "remove the extra choice"
        elif len(fields) > len(COLUMNS):
            fix = "remove the extra fields"
        else:
            fix = "add the missing fields"
        raise UserError(
            f"{where}: expected 6 columns (question, A, B, C, D, answer), found {len(fields)}; {fix}"
        )

    question, *choices, answer = fields
    if not question.strip():
        raise UserError(f"{where}: question is empty; write the question text or delete the row")
    answer = answer.strip()
    if answer not in ANSWER_LETTERS:
        raise UserError(f"{where}: answer {answer!r} is not one of A, B, C, D; write the letter of the correct choice")
    return MmluRow(question=question, choices=tuple(choices), answer=answer)


# ----------------------------------------------------------------------------- subjects


def load_subjects(mmlu_dir: Path) -> list[Subject]:
    """Read the subjects of `mmlu_dir` from subjects.json, else from lm-eval's built-in MMLU tasks.

    The fallback covers the original MMLU release, which ships no subjects.json: each subject's
    category and name then come from ``lm_eval/tasks/mmlu/default/mmlu_{subject}.yaml``.
    """
    mmlu_dir = Path(mmlu_dir)
    if not mmlu_dir.is_dir():
        raise UserError(f"{mmlu_dir}: MMLU directory not found; pass a directory with test/ and subjects.json")

    subjects_path = mmlu_dir / SUBJECTS_FILE
    if subjects_path.is_file():
        return _read_subjects_json(subjects_path)

    test_files = sorted((mmlu_dir / "test").glob("*_test.csv"))
    if not test_files:
        raise UserError(
            f"{mmlu_dir}: no {SUBJECTS_FILE} and no test/*_test.csv found; "
            "add test/{subject}_test.csv files and a subjects.json that lists each subject's category and name"
        )
    keys = [f.name.removesuffix("_test.csv") for f in test_files]
    return [_builtin_subject(mmlu_dir, key) for key in keys]


def _read_subjects_json(path: Path) -> list[Subject]:
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: invalid JSON ({err}); fix the file") from err
    if not isinstance(table, dict) or not table:
        raise UserError(
            f'{path}: expected a non-empty object {{subject: {{"category": ..., "name": ...}}}}; fix the file'
        )

    subjects = []
    for key, entry in table.items():
        where = f"{path} subject {key!r}"
        if not _SUBJECT_PATTERN.match(key):
            raise UserError(f"{where}: invalid subject key; use letters, digits and underscores only")
        if key in _RESERVED_SUBJECT_KEYS:
            raise UserError(f"{where}: subject key is reserved for a category group; rename the subject")
        if not isinstance(entry, dict):
            raise UserError(f'{where}: expected {{"category": ..., "name": ...}}, found {entry!r}; fix the entry')
        category = entry.get("category")
        if category not in CATEGORIES:
            raise UserError(f"{where}: invalid category {category!r}; use one of {', '.join(CATEGORIES)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f'{where}: "name" is missing or empty; add the human-readable subject name')
        subjects.append(Subject(key=key, category=category, name=name.strip()))
    return subjects


def _builtin_subject(mmlu_dir: Path, key: str) -> Subject:
    import lm_eval.tasks

    task_yaml = Path(lm_eval.tasks.__file__).parent / "mmlu" / "default" / f"mmlu_{key}.yaml"
    if not task_yaml.is_file():
        raise UserError(
            f"{mmlu_dir / 'test' / (key + '_test.csv')}: subject {key!r} is not an MMLU subject known to lm-eval "
            f"and {mmlu_dir / SUBJECTS_FILE} is missing; add {SUBJECTS_FILE} with its category and name"
        )
    # These files contain no `!function` tags, so yaml.safe_load can read them.
    config = yaml.safe_load(task_yaml.read_text(encoding="utf-8"))
    category = config["tag"].removeprefix("mmlu_").removesuffix("_tasks")
    return Subject(key=key, category=category, name=config["task_alias"].replace("_", " "))


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class SubjectFiles:
    """The validated CSV files of one subject and the number of test questions."""

    subject: Subject
    test_file: Path
    dev_file: Path | None
    n_test: int


def validate_mmlu_dir(mmlu_dir: Path, num_fewshot: int = 0) -> list[SubjectFiles]:
    """Validate every CSV of every subject and raise UserError on the first problem."""
    mmlu_dir = Path(mmlu_dir)
    subjects = load_subjects(mmlu_dir)
    _warn_unlisted_test_files(mmlu_dir, subjects)
    validated = []
    for subject in subjects:
        test_file = mmlu_dir / "test" / f"{subject.key}_test.csv"
        if not test_file.is_file():
            raise UserError(
                f"{test_file}: test file not found for subject {subject.key!r} listed in {mmlu_dir / SUBJECTS_FILE}; "
                "add the file or remove the subject"
            )
        n_test = len(read_mmlu_csv(test_file))
        dev_file = _validated_dev_file(mmlu_dir, subject, num_fewshot)
        validated.append(SubjectFiles(subject, test_file, dev_file, n_test))
    return validated


def _warn_unlisted_test_files(mmlu_dir: Path, subjects: Sequence[Subject]) -> None:
    listed = {f"{subject.key}_test.csv" for subject in subjects}
    for path in sorted((mmlu_dir / "test").glob("*_test.csv")):
        if path.name not in listed:
            logger.warning("Skipping %s: its subject is not listed in %s", path, mmlu_dir / SUBJECTS_FILE)


def _validated_dev_file(mmlu_dir: Path, subject: Subject, num_fewshot: int) -> Path | None:
    dev_file = mmlu_dir / "dev" / f"{subject.key}_dev.csv"
    if not dev_file.is_file():
        if num_fewshot > 0:
            raise UserError(
                f"{dev_file}: dev file not found, but num_fewshot={num_fewshot} needs few-shot examples; "
                "add the file or set num_fewshot to 0"
            )
        return None

    n_dev = len(read_mmlu_csv(dev_file))
    if n_dev < num_fewshot:
        raise UserError(
            f"{dev_file}: has {n_dev} rows but num_fewshot={num_fewshot}; add dev rows or lower num_fewshot"
        )
    return dev_file


# ----------------------------------------------------------------------------- lm-eval tasks


def load_subject_dataset(test_file: str, dev_file: str | None = None, **metadata: Any):
    """Build the DatasetDict of one subject from its CSVs. lm-eval calls this as `custom_dataset`.

    Reading the CSVs here, instead of through the `csv` builder of `datasets`, keeps every field a
    string (pandas would turn a column of "0.50" choices into floats) and writes no cache files.
    lm-eval passes the task's metadata as extra keyword arguments, which are ignored.
    """
    import datasets

    splits = {"test": Path(test_file)}
    if dev_file is not None:
        splits["dev"] = Path(dev_file)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(_docs(read_mmlu_csv(path))) for split, path in splits.items()}
    )


def _docs(rows: Sequence[MmluRow]) -> list[dict[str, Any]]:
    # The field names match the cais/mmlu data set that lm-eval's own template reads.
    return [{"question": r.question, "choices": list(r.choices), "answer": r.answer_index} for r in rows]


def task_name(subject_key: str) -> str:
    return f"{TOP_GROUP}_{subject_key}"


def category_group_name(category: str) -> str:
    return f"{TOP_GROUP}_{category}"


def write_task_configs(task_dir: Path, subject_files: Sequence[SubjectFiles]) -> None:
    """Write one lm-eval task YAML per subject, one group per category and the `mmlu` group."""
    task_dir.mkdir(parents=True, exist_ok=True)
    # TaskManager indexes every YAML in the folder, so tasks left by an earlier run would join the groups.
    for stale in task_dir.glob("*.yaml"):
        stale.unlink()
    for files in subject_files:
        (task_dir / f"{task_name(files.subject.key)}.yaml").write_text(_task_yaml(files), encoding="utf-8")

    categories = [c for c in CATEGORIES if any(f.subject.category == c for f in subject_files)]
    for category in categories:
        group = {
            "group": category_group_name(category),
            "group_alias": category,
            "task": [f"{category_group_name(category)}_tasks"],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": 2},
        }
        (task_dir / f"_{category_group_name(category)}.yaml").write_text(
            yaml.safe_dump(group, sort_keys=False), encoding="utf-8"
        )

    top = {
        "group": TOP_GROUP,
        "task": [category_group_name(c) for c in categories],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }
    (task_dir / f"_{TOP_GROUP}.yaml").write_text(yaml.safe_dump(top, sort_keys=False), encoding="utf-8")


class _TaskYamlDumper(yaml.SafeDumper):
    """A SafeDumper that writes strings with line breaks double-quoted, as lm-eval's own YAMLs do."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TaskYamlDumper.add_representer(str, _represent_str)


def _task_yaml(files: SubjectFiles) -> str:
    subject = files.subject
    dataset_kwargs = {"test_file": str(files.test_file.resolve())}
    if files.dev_file is not None:
        dataset_kwargs["dev_file"] = str(files.dev_file.resolve())

    config: dict[str, Any] = {
        "task": task_name(subject.key),
        "task_alias": subject.key,
        "tag": f"{category_group_name(subject.category)}_tasks",
        "dataset_kwargs": dataset_kwargs,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": list(ANSWER_LETTERS),
        "doc_to_target": "answer",
        "description": DESCRIPTION.format(name=subject.name),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    if files.dev_file is not None:
        config["fewshot_split"] = "dev"
        config["fewshot_config"] = {"sampler": "first_n"}

    # safe_dump cannot write the `!function` tag that lm-eval resolves to a callable, so it is appended.
    text = yaml.dump(config, Dumper=_TaskYamlDumper, sort_keys=False, allow_unicode=True, width=1000)
    return text + f"custom_dataset: !function {__name__}.load_subject_dataset\n"


# ----------------------------------------------------------------------------- model


class _CausalLMAdapter(torch.nn.Module):
    """Exposes a wrapped causal LM (peft PeftModel, ExcitorModel) through the PreTrainedModel API HFLM uses.

    HFLM (lm-eval 0.4.13) reads `.config` and `.device`, calls `.eval()` and `.tie_weights()`, and
    calls the model with the token ids as the only positional argument. Wrappers may lack the first
    two or accept keyword arguments only.
    """

    def __init__(self, model: torch.nn.Module, config):
        super().__init__()
        self.wrapped = model
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.wrapped.parameters()).device

    def tie_weights(self, *args, **kwargs) -> None:
        # The wrapped model tied its own weights when it was built, and the adapter has none.
        pass

    def forward(self, input_ids: torch.Tensor):
        return self.wrapped(input_ids=input_ids)  # logits (B, T, V)


def find_model_config(model: torch.nn.Module):
    """Return the transformers config of `model` or of the model it wraps (`.base_model`, `.model`)."""
    from transformers import PretrainedConfig

    current = model
    for _ in range(4):
        config = getattr(current, "config", None)
        if isinstance(config, PretrainedConfig):
            return config
        current = getattr(current, "base_model", None) or getattr(current, "model", None)
        if current is None:
            break
    raise TypeError(
        f"{type(model).__name__} has no transformers config on itself, .base_model or .model; "
        "pass a transformers causal LM or a wrapper around one"
    )


def _make_lm(model: torch.nn.Module, tokenizer, batch_size: int):
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedModel

    class InMemoryHFLM(HFLM):
        def get_model_info(self) -> dict:
            # HFLM's version requests the commit of `pretrained` from the Hugging Face Hub. Here
            # `pretrained` is a module, so the request is pointless and must not reach the network.
            return {"model_num_parameters": sum(p.numel() for p in self._model.parameters())}

    if not isinstance(model, PreTrainedModel):
        model = _CausalLMAdapter(model, find_model_config(model))
    return InMemoryHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


# ----------------------------------------------------------------------------- logging


# Warnings lm-eval 0.4.13 emits on every run with an in-memory model, a custom_dataset and an
# explicit num_fewshot. They carry no information about this run, so they are dropped. Other
# warnings still reach the log.
_EXPECTED_WARNINGS = (
    "`pretrained` model kwarg is not of type `str`",
    "Passed an already-initialized model through `pretrained`",
    "Custom kwargs can be passed to `--metadata`",
    "Overwriting default num_fewshot",
)


class _DropExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_WARNINGS)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Hide lm-eval's info messages and its expected warnings while the block runs."""
    root = logging.getLogger("lm_eval")
    noisy = [logging.getLogger(f"lm_eval.{name}") for name in ("models.huggingface", "api.task", "evaluator")]
    drop = _DropExpectedWarnings()
    old_level = root.level
    root.setLevel(logging.WARNING)
    for child in noisy:
        child.addFilter(drop)
    try:
        yield
    finally:
        for child in noisy:
            child.removeFilter(drop)
        root.setLevel(old_level)


@contextlib.contextmanager
def _preserve_rng_state() -> Iterator[None]:
    """Restore the random, numpy and torch generators after the block.

    simple_evaluate seeds all three with fixed values, which makes the evaluation deterministic
    but would otherwise reset the random streams of a training run that evaluates in between.
    """
    import numpy as np

    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


# ----------------------------------------------------------------------------- evaluation


def evaluate_mmlu(
    model: torch.nn.Module,
    tokenizer,
    mmlu_dir: Path,
    *,
    num_fewshot: int = 0,
    batch_size: int = 32,
    limit: int | None = None,
    work_dir: Path | None = None,
) -> dict:
    """Evaluate `model` on the MMLU-format questions in `mmlu_dir` with lm-eval's multiple-choice scoring.

    Each question is scored by the summed log-likelihood of " A" .. " D" after the prompt, and the
    choice with the highest one is the prediction. `limit` caps the questions per subject (the
    first rows of each test file). Task YAMLs go to `work_dir/lm_eval_tasks`, or to a temporary
    directory that is removed afterwards when `work_dir` is None.

    Returns {"accuracy", "categories": {category: acc}, "subjects": {subject: acc},
    "n_questions", "per_item": [{"subject", "index", "correct"}]}, accuracies as fractions in
    [0, 1] and `index` the 0-based row of the question in its test file.
    """
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        # Given a name or None, HFLM would load the tokenizer with from_pretrained, possibly from the Hub.
        raise TypeError(f"tokenizer must be a transformers tokenizer object, got {type(tokenizer).__name__}")
    if num_fewshot < 0:
        raise UserError(f"num_fewshot={num_fewshot} is negative; use 0 or more")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} is invalid; use 1 or more")
    if limit is not None and limit < 1:
        raise UserError(f"limit={limit} is invalid; use None for all questions or 1 or more")

    subject_files = validate_mmlu_dir(Path(mmlu_dir), num_fewshot)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmlu_eval_")))
        task_dir = Path(work_dir) / "lm_eval_tasks"
        write_task_configs(task_dir, subject_files)
        logger.info("Evaluating %d MMLU subjects from %s (tasks in %s)", len(subject_files), mmlu_dir, task_dir)
        raw = _run_lm_eval(model, tokenizer, task_dir, num_fewshot, batch_size, limit)

    return _collect_results(raw, subject_files)


def _run_lm_eval(model, tokenizer, task_dir: Path, num_fewshot: int, batch_size: int, limit: int | None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    was_training = model.training
    try:
        # Scoring needs no gradients. This also covers the log-softmax that HFLM (lm-eval 0.4.13)
        # applies to the logits after leaving its own torch.no_grad block.
        with _quiet_lm_eval(), _preserve_rng_state(), torch.no_grad():
            lm = _make_lm(model, tokenizer, batch_size)
            # With include_defaults=False only these YAMLs are indexed, so the names cannot clash
            # with lm-eval's built-in `mmlu` tasks, and its 200-plus task folders are not scanned.
            task_manager = TaskManager(include_path=str(task_dir), include_defaults=False)
            return lm_eval.simple_evaluate(
                model=lm,
                tasks=[TOP_GROUP],
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=task_manager,
                log_samples=True,
                # Standard errors are not reported, so the default 100000 bootstrap rounds would be wasted.
                bootstrap_iters=0,
            )
    finally:
        # HFLM switches the model to eval mode, and the caller gets it back in its own mode.
        model.train(was_training)


def _collect_results(raw: dict, subject_files: Sequence[SubjectFiles]) -> dict:
    results = raw["results"]
    subjects = {}
    per_item = []
    for files in subject_files:
        name = task_name(files.subject.key)
        subjects[files.subject.key] = float(results[name]["acc,none"])
        samples = sorted(raw["samples"][name], key=lambda sample: sample["doc_id"])
        per_item += [
            {"subject": files.subject.key, "index": int(s["doc_id"]), "correct": int(s["acc"])} for s in samples
        ]

    categories = {
        c: float(results[category_group_name(c)]["acc,none"])
        for c in CATEGORIES
        if category_group_name(c) in results
    }
    return {
        "accuracy": float(results[TOP_GROUP]["acc,none"]),
        "categories": categories,
        "subjects": subjects,
        "n_questions": len(per_item),
        "per_item": per_item,
    }
