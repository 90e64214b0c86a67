"""MMLU evaluation through lm-eval, checked against hand computations on a tiny fixture.

The fixture in tests/fixtures/mmlu has three subjects in three categories:

    subject          category     test rows  answers
    astronomy        stem         6          A B A C D B
    world_religions  humanities   5          A B C D B
    marketing        other        7          A B C D A B B

and five dev rows per subject, whose answers are B A C D B (astronomy and world_religions) and
A B C D B (marketing). Test row 4 of astronomy has spaces around its question, which the prompt
strips, as lm-eval's MMLU template does.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import CausalLMOutput

from excitor_bench.errors import UserError
from excitor_bench.evaluate.mmlu import (
    MmluRow,
    evaluate_mmlu,
    load_subject_dataset,
    load_subjects,
    read_mmlu_csv,
    write_mmlu_csv,
)

FIXTURE = Path(__file__).parent / "fixtures" / "mmlu"
SUBJECTS = {"astronomy": "astronomy", "world_religions": "world religions", "marketing": "marketing"}
CATEGORY_OF = {"astronomy": "stem", "world_religions": "humanities", "marketing": "other"}
N_TEST = {"astronomy": 6, "world_religions": 5, "marketing": 7}


# ----------------------------------------------------------------------------- tokenizer and models


@pytest.fixture(scope="module")
def tokenizer():
    """A character-level tokenizer over printable ASCII that prepends <s>, as Llama tokenizers do."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for char in "\n" + "".join(chr(code) for code in range(32, 127)):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def llama_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(tokenizer)).eval()


class ConstantLetterModel(torch.nn.Module):
    """Gives the token `letter` the highest logit at every position, whatever the input."""

    def __init__(self, tokenizer, letter: str):
        super().__init__()
        self.config = llama_config(tokenizer)
        self.bias = torch.nn.Parameter(torch.zeros(self.config.vocab_size))
        with torch.no_grad():
            self.bias[tokenizer.convert_tokens_to_ids(letter)] = 5.0

    def forward(self, input_ids):
        batch, length = input_ids.shape
        return CausalLMOutput(logits=self.bias.expand(batch, length, -1))  # (B, T, V)


class EchoLastAnswerModel(torch.nn.Module):
    """Predicts the letter that followed the most recent ": " in the input, so a few-shot prompt
    makes it repeat the answer of the last example. It predicts D when no ": X" came before."""

    def __init__(self, tokenizer):
        super().__init__()
        self.config = llama_config(tokenizer)
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.colon = tokenizer.convert_tokens_to_ids(":")
        self.space = tokenizer.convert_tokens_to_ids(" ")
        self.letters = {tokenizer.convert_tokens_to_ids(letter) for letter in "ABCD"}
        self.default = tokenizer.convert_tokens_to_ids("D")

    def forward(self, input_ids):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.config.vocab_size)  # (B, T, V)
        for b in range(batch):
            ids = input_ids[b].tolist()
            echo = self.default
            for t in range(length):
                if t >= 2 and ids[t - 2] == self.colon and ids[t - 1] == self.space and ids[t] in self.letters:
                    echo = ids[t]
                logits[b, t, echo] = 5.0
        return CausalLMOutput(logits=logits)


class PrefixHashModel(torch.nn.Module):
    """Gives logits that are a fixed pseudo-random function of every token up to each position.

    A small change anywhere in a prompt, one character or one position, reshuffles which letter
    scores highest, so matching its predictions checks the prompt text exactly. A random Llama
    does not: its choice mostly depends on the last few tokens.
    """

    def __init__(self, tokenizer):
        super().__init__()
        self.config = llama_config(tokenizer)
        generator = torch.Generator().manual_seed(0)
        positions = self.config.max_position_embeddings
        self.register_buffer("position_weights", torch.randint(1, 2**16, (positions,), generator=generator))
        frequencies = torch.rand(self.config.vocab_size, generator=generator, dtype=torch.float64) + 0.5
        self.register_buffer("frequencies", frequencies)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        length = input_ids.shape[1]
        # The hash stays below 2**34 (2048 positions, ids under 128, weights under 2**16),
        # so float64 represents it exactly.
        prefix_hash = torch.cumsum(input_ids * self.position_weights[:length], dim=1).double()  # (B, T)
        logits = 5.0 * torch.sin(prefix_hash[..., None] * self.frequencies)  # (B, T, V)
        return CausalLMOutput(logits=logits.float())


# ----------------------------------------------------------------------------- hand computation


def fixture_rows(subject: str, split: str) -> list[list[str]]:
    with (FIXTURE / split / f"{subject}_{split}.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def format_question(row: list[str]) -> str:
    question, a, b, c, d, _ = row
    return f"{question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"


def hand_correctness(model, tokenizer, num_fewshot: int, limit: int | None = None) -> list[int]:
    """Score the first `limit` test questions of each subject by summing log p(" X") after the prompt."""
    continuations = [tokenizer.encode(" " + letter, add_special_tokens=False) for letter in "ABCD"]
    correct = []
    for subject, name in SUBJECTS.items():
        dev_rows = fixture_rows(subject, "dev")[:num_fewshot]
        shots = "".join(format_question(row) + " " + row[5] + "\n\n" for row in dev_rows)
        header = f"The following are multiple choice questions (with answers) about {name}.\n\n"
        for row in fixture_rows(subject, "test")[:limit]:
            context = tokenizer.encode(header + shots + format_question(row))
            scores = continuation_logprobs(model, context, continuations)
            predicted = "ABCD"[scores.index(max(scores))]
            correct.append(int(predicted == row[5]))
    return correct


def continuation_logprobs(model, context: list[int], continuations: list[list[int]]) -> list[float]:
    """Return the summed log-probability of each continuation after `context`, in one batch."""
    # Every " X" is two tokens with this tokenizer, so the batch needs no padding.
    input_ids = torch.tensor([context + continuation for continuation in continuations])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()  # (4, T, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    scores = []
    for b, continuation in enumerate(continuations):
        # The logits at position p predict the token at p + 1.
        scores.append(sum(logprobs[b, len(context) - 1 + i, token].item() for i, token in enumerate(continuation)))
    return scores


@pytest.fixture(scope="module")
def zero_shot_result(tiny_llama, tokenizer):
    return evaluate_mmlu(tiny_llama, tokenizer, FIXTURE)


# ----------------------------------------------------------------------------- scores


def test_zero_shot_matches_hand_computation(zero_shot_result, tiny_llama, tokenizer):
    expected = hand_correctness(tiny_llama, tokenizer, num_fewshot=0)

    assert [item["correct"] for item in zero_shot_result["per_item"]] == expected
    assert zero_shot_result["accuracy"] == pytest.approx(sum(expected) / len(expected))
    # A check on a model that is all right or all wrong would not tell wiring errors apart.
    assert 0 < sum(expected) < len(expected)


def test_fewshot_matches_hand_computation(tiny_llama, tokenizer, tmp_path):
    result = evaluate_mmlu(tiny_llama, tokenizer, FIXTURE, num_fewshot=2, limit=3, work_dir=tmp_path)
    expected = hand_correctness(tiny_llama, tokenizer, num_fewshot=2, limit=3)

    assert [item["correct"] for item in result["per_item"]] == expected
    assert result["accuracy"] == pytest.approx(sum(expected) / len(expected))


@pytest.mark.parametrize("num_fewshot", [0, 2])
def test_prompt_matches_hand_computation(tokenizer, num_fewshot):
    model = PrefixHashModel(tokenizer)

    result = evaluate_mmlu(model, tokenizer, FIXTURE, num_fewshot=num_fewshot)
    expected = hand_correctness(model, tokenizer, num_fewshot=num_fewshot)

    assert [item["correct"] for item in result["per_item"]] == expected
    assert 0 < sum(expected) < len(expected)


def test_per_item_lists_every_question(zero_shot_result):
    expected = [(subject, index) for subject in SUBJECTS for index in range(N_TEST[subject])]

    assert [(item["subject"], item["index"]) for item in zero_shot_result["per_item"]] == expected
    assert zero_shot_result["n_questions"] == 18


def test_aggregates_are_size_weighted(zero_shot_result):
    per_subject = {s: [i["correct"] for i in zero_shot_result["per_item"] if i["subject"] == s] for s in SUBJECTS}

    for subject, flags in per_subject.items():
        assert zero_shot_result["subjects"][subject] == pytest.approx(sum(flags) / len(flags))
    # Each fixture category contains exactly one subject.
    for subject, category in CATEGORY_OF.items():
        assert zero_shot_result["categories"][category] == pytest.approx(zero_shot_result["subjects"][subject])
    weighted = sum(zero_shot_result["subjects"][s] * N_TEST[s] for s in SUBJECTS) / 18
    assert zero_shot_result["accuracy"] == pytest.approx(weighted)
    assert set(zero_shot_result["categories"]) == {"stem", "humanities", "other"}


def test_model_always_b_scores_share_of_b(tokenizer):
    result = evaluate_mmlu(ConstantLetterModel(tokenizer, "B"), tokenizer, FIXTURE)

    # Questions whose answer is B: astronomy 2 of 6, world_religions 2 of 5, marketing 3 of 7.
    assert result["subjects"] == pytest.approx({"astronomy": 2 / 6, "world_religions": 2 / 5, "marketing": 3 / 7})
    assert result["accuracy"] == pytest.approx(7 / 18)


def test_category_weights_subjects_by_size(tokenizer, tmp_path):
    root = copy_fixture(tmp_path)
    subjects = {
        "astronomy": {"category": "stem", "name": "astronomy"},
        "world_religions": {"category": "humanities", "name": "world religions"},
        "marketing": {"category": "humanities", "name": "marketing"},
    }
    (root / "subjects.json").write_text(json.dumps(subjects))

    result = evaluate_mmlu(ConstantLetterModel(tokenizer, "B"), tokenizer, root)

    # B is the answer to 2 of 5 world_religions and 3 of 7 marketing questions. The mean of the
    # two subject scores, (2/5 + 3/7) / 2 = 0.414, would differ.
    assert result["categories"]["humanities"] == pytest.approx(5 / 12)
    assert result["categories"]["stem"] == pytest.approx(2 / 6)
    assert set(result["categories"]) == {"stem", "humanities"}


def test_limit_takes_first_rows(tokenizer):
    result = evaluate_mmlu(ConstantLetterModel(tokenizer, "B"), tokenizer, FIXTURE, limit=2)

    # The first two answers of every subject are A, B.
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["n_questions"] == 6
    assert [item["index"] for item in result["per_item"]] == [0, 1] * 3


@pytest.mark.parametrize(
    ("num_fewshot", "expected"),
    [
        # The last example is dev row 1, whose answers are B, B, A, so the model predicts those.
        (1, {"astronomy": 2 / 6, "world_religions": 2 / 5, "marketing": 2 / 7}),
        # The last example is dev row 2, whose answers are A, A, B.
        (2, {"astronomy": 2 / 6, "world_religions": 1 / 5, "marketing": 3 / 7}),
        # The last example is dev row 3, whose answers are C, C, C.
        (3, {"astronomy": 1 / 6, "world_religions": 1 / 5, "marketing": 1 / 7}),
    ],
)
def test_fewshot_examples_are_first_dev_rows(tokenizer, num_fewshot, expected):
    result = evaluate_mmlu(EchoLastAnswerModel(tokenizer), tokenizer, FIXTURE, num_fewshot=num_fewshot)

    assert result["subjects"] == pytest.approx(expected)


def test_peft_lora_model_evaluates(tokenizer):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = LlamaForCausalLM(llama_config(tokenizer))
    # init_lora_weights=False draws non-zero LoRA weights, so the adapter changes the logits.
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.train()

    result = evaluate_mmlu(lora, tokenizer, FIXTURE, limit=3)
    lora.eval()
    expected = hand_correctness(lora, tokenizer, num_fewshot=0, limit=3)

    assert [item["correct"] for item in result["per_item"]] == expected
    assert result["accuracy"] == pytest.approx(sum(expected) / len(expected))


def test_training_mode_and_rng_are_restored(tokenizer):
    model = ConstantLetterModel(tokenizer, "A").train()
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)

    evaluate_mmlu(model, tokenizer, FIXTURE, limit=1)

    assert model.training
    assert torch.equal(torch.rand(3), expected_draw)


# ----------------------------------------------------------------------------- bad input


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "mmlu"
    shutil.copytree(FIXTURE, target)
    return target


def replace_row(path: Path, row_number: int, fields: list[str]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[row_number - 1] = fields
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def break_seven_columns(root: Path) -> Path:
    path = root / "test" / "astronomy_test.csv"
    replace_row(path, 3, ["Which is largest?", "Sun", "Moon", "Mars", "Venus", "Pluto", "A"])
    return path


def break_five_columns(root: Path) -> Path:
    path = root / "test" / "marketing_test.csv"
    replace_row(path, 5, ["What is a brand?", "A name", "A tax", "A loan", "B"])
    return path


def break_answer_letter(root: Path) -> Path:
    path = root / "test" / "world_religions_test.csv"
    replace_row(path, 2, ["Which city is holy to three religions?", "Jerusalem", "Paris", "Oslo", "Lima", "E"])
    return path


def break_empty_question(root: Path) -> Path:
    path = root / "test" / "astronomy_test.csv"
    replace_row(path, 4, ["  ", "Time", "Mass", "Distance", "Speed", "C"])
    return path


def break_dev_row(root: Path) -> Path:
    path = root / "dev" / "marketing_dev.csv"
    replace_row(path, 1, ["What is price?", "Cost", "Value", "Money", "Fee", "b"])
    return path


@pytest.mark.parametrize(
    ("break_file", "row", "problem"),
    [
        (break_seven_columns, 3, "found 7; remove the extra choice"),
        (break_five_columns, 5, "found 5"),
        (break_answer_letter, 2, "answer 'E' is not one of A, B, C, D"),
        (break_empty_question, 4, "question is empty"),
        (break_dev_row, 1, "answer 'b' is not one of A, B, C, D"),
    ],
)
def test_bad_row_names_file_and_row(tiny_llama, tokenizer, tmp_path, break_file, row, problem):
    path = break_file(copy_fixture(tmp_path))

    with pytest.raises(UserError) as caught:
        evaluate_mmlu(tiny_llama, tokenizer, tmp_path / "mmlu")

    message = str(caught.value)
    assert f"{path} row {row}:" in message
    assert problem in message
    assert "\n" not in message


def test_missing_test_file_is_named(tiny_llama, tokenizer, tmp_path):
    root = copy_fixture(tmp_path)
    (root / "test" / "marketing_test.csv").unlink()

    with pytest.raises(UserError, match="marketing_test.csv: test file not found for subject 'marketing'"):
        evaluate_mmlu(tiny_llama, tokenizer, root)


def test_missing_subjects_json_for_unknown_subject(tiny_llama, tokenizer, tmp_path):
    root = tmp_path / "mmlu"
    write_mmlu_csv(root / "test" / "my_subject_test.csv", [MmluRow("Q?", ("a", "b", "c", "d"), "A")])

    expected = r"my_subject_test.csv: subject 'my_subject' is not an MMLU subject.*subjects\.json"
    with pytest.raises(UserError, match=expected):
        evaluate_mmlu(tiny_llama, tokenizer, root)


def test_empty_directory_is_rejected(tiny_llama, tokenizer, tmp_path):
    with pytest.raises(UserError, match=r"no subjects\.json and no test/\*_test\.csv found"):
        evaluate_mmlu(tiny_llama, tokenizer, tmp_path)


@pytest.mark.parametrize(
    ("subjects_json", "problem"),
    [
        (
            '{"astronomy": {"category": "science", "name": "astronomy"}}',
            "subject 'astronomy': invalid category 'science'",
        ),
        ('{"astronomy": {"category": "stem"}}', "subject 'astronomy': \"name\" is missing or empty"),
        ('{"stem": {"category": "stem", "name": "stem"}}', "subject 'stem': subject key is reserved"),
        ('{"astro nomy": {"category": "stem", "name": "x"}}', "subject 'astro nomy': invalid subject key"),
        ('{"astronomy": ', "invalid JSON"),
    ],
)
def test_bad_subjects_json_is_rejected(tiny_llama, tokenizer, tmp_path, subjects_json, problem):
    root = copy_fixture(tmp_path)
    (root / "subjects.json").write_text(subjects_json)

    with pytest.raises(UserError) as caught:
        evaluate_mmlu(tiny_llama, tokenizer, root)

    assert str(caught.value).startswith(str(root / "subjects.json"))
    assert problem in str(caught.value)


def test_too_few_dev_rows_for_fewshot(tiny_llama, tokenizer):
    with pytest.raises(UserError, match="astronomy_dev.csv: has 5 rows but num_fewshot=6"):
        evaluate_mmlu(tiny_llama, tokenizer, FIXTURE, num_fewshot=6)


def test_missing_dev_file_with_fewshot(tiny_llama, tokenizer, tmp_path):
    root = copy_fixture(tmp_path)
    (root / "dev" / "astronomy_dev.csv").unlink()

    with pytest.raises(UserError, match="astronomy_dev.csv: dev file not found"):
        evaluate_mmlu(tiny_llama, tokenizer, root, num_fewshot=1)


# ----------------------------------------------------------------------------- files and subjects


def test_subjects_fall_back_to_lm_eval_mmlu(tmp_path):
    root = copy_fixture(tmp_path)
    (root / "subjects.json").unlink()

    from_lm_eval = {s.key: (s.category, s.name) for s in load_subjects(root)}
    from_json = {s.key: (s.category, s.name) for s in load_subjects(FIXTURE)}

    assert from_lm_eval == from_json


def test_csv_round_trip_keeps_text(tmp_path):
    rows = [
        MmluRow('Multi-line\nquestion, with "quotes"?', ("0.50", "None", "1,000", "True"), "C"),
        MmluRow("Second?", ("NA", "", "x", "y"), "D"),
    ]
    path = tmp_path / "x_test.csv"

    write_mmlu_csv(path, rows)

    assert read_mmlu_csv(path) == rows
    docs = load_subject_dataset(test_file=str(path))["test"]
    assert docs[0]["choices"] == ["0.50", "None", "1,000", "True"]
    assert docs[0]["answer"] == 2
    assert docs[1]["choices"][0] == "NA"
