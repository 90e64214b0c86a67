"""Prompt templates shared by the data generator, the trainer and the evaluators."""

# Stanford Alpaca's template (tatsu-lab/stanford_alpaca, train.py), with and without an input.
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def format_alpaca_prompt(instruction: str, input: str = "") -> str:
    """Build the Alpaca prompt that precedes the response."""
    if input:
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


# lm-evaluation-harness's default MMLU template (lm_eval/tasks/mmlu/default/_default_template_yaml):
# a description line per subject, then the question, four lettered choices and "Answer:".
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"
MMLU_QUESTION = "{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"
MMLU_LETTERS = ("A", "B", "C", "D")
