"""Byte-level BPE tokenizer for the tiny world, saved as a Hugging Face fast tokenizer.

Like LLaMA's tokenizer, encoding prepends the BOS token, so prompts scored by
lm-evaluation-harness start with BOS just as the pretraining documents do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from excitor_bench.errors import UserError
from excitor_bench.prompts import format_alpaca_prompt
from excitor_bench.world.writers import read_corpus_documents

logger = logging.getLogger(__name__)

UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
# 256 byte symbols plus the special tokens must fit, with room for merges.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1


def iter_training_texts(files: list[Path]) -> Iterator[str]:
    """Yield the texts of each file as the model will see them.

    A .json file holding Alpaca records yields each record's full Alpaca prompt and output,
    so the template's "###" headers get merges. Any other file is read as a corpus.txt.
    """
    for path in files:
        path = Path(path)
        if path.suffix == ".json":
            for record in json.loads(path.read_text(encoding="utf-8")):
                yield format_alpaca_prompt(record["instruction"], record["input"]) + record["output"]
        else:
            yield from read_corpus_documents(path)


def train_tokenizer(files: list[Path], vocab_size: int, out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer on `files` and save it with `save_pretrained` to `out_dir`."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"base_model.vocab_size = {vocab_size!r} is too small; set it to at least {MIN_VOCAB_SIZE} in the config"
        )

    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    # Like LLaMA's SentencePiece tokenizer, a leading space is added before encoding and removed
    # after decoding. So a response encoded on its own starts with the same " word" tokens as that
    # word inside the corpus, and decode(encode(text)) == text still holds.
    tokenizer.normalizer = normalizers.Prepend(" ")
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter_training_texts(files), trainer=trainer)

    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        add_bos_token=True,
        add_eos_token=False,
    )
    wrapped.save_pretrained(str(out_dir))
    logger.info("trained a %d-token BPE tokenizer on %d files into %s", len(wrapped), len(files), out_dir)
