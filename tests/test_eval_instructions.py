import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from excitor_bench.evaluate.instructions import evaluate_instructions, left_padded, normalize_answer


def test_normalize_answer_keeps_first_line():
    assert normalize_answer("  owl  \nmore text") == "owl"
    assert normalize_answer("two   words") == "two words"
    assert normalize_answer("") == ""


def test_left_padded_aligns_prompt_ends():
    batch = left_padded([[5, 6, 7], [8]], pad_token_id=0, device="cpu")

    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_answers_match_one_by_one(micro_model_dir, micro_world):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    test_file = micro_world / "instructions" / "test.json"

    one_by_one = evaluate_instructions(model, tokenizer, test_file, max_new_tokens=5, batch_size=1, limit=6)
    batched = evaluate_instructions(model, tokenizer, test_file, max_new_tokens=5, batch_size=6, limit=6)

    # Left padding and the attention mask must make a prompt's answer independent of its batch.
    assert [item["answer"] for item in batched["per_item"]] == [item["answer"] for item in one_by_one["per_item"]]
    assert batched["n_items"] == 6


def test_exact_match_counts_correct_items(micro_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    # The untrained model's own greedy answer to the first prompt is made the expected output of
    # two items, so exactly those two of the four are correct.
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "x"}]))
    answer = evaluate_instructions(model, tokenizer, probe, max_new_tokens=4)["per_item"][0]["answer"]
    expected = normalize_answer(answer)
    records = [
        {"instruction": "Say hi.", "input": "", "output": expected},
        {"instruction": "Say hi.", "input": "", "output": expected + " no"},
        # White space around an expected output does not count against the answer.
        {"instruction": "Say hi.", "input": "", "output": f"  {expected}\n"},
        {"instruction": "Say hi.", "input": "", "output": "never produced"},
    ]
    test_file = tmp_path / "test.json"
    test_file.write_text(json.dumps(records))

    result = evaluate_instructions(model, tokenizer, test_file, max_new_tokens=4)

    assert [item["correct"] for item in result["per_item"]] == [1, 0, 1, 0]
    assert result["exact_match"] == 0.5
