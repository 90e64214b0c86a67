"""The tiny world: a seeded fictional universe written in real data sets' formats."""

from excitor_bench.world.generator import MMLU_CATEGORIES, Fact, World, WorldSettings, build_world_model
from excitor_bench.world.writers import DOCUMENT_SEPARATOR, build_world, format_mmlu_prompt, read_corpus_documents

__all__ = [
    "DOCUMENT_SEPARATOR",
    "MMLU_CATEGORIES",
    "Fact",
    "World",
    "WorldSettings",
    "build_world",
    "build_world_model",
    "format_mmlu_prompt",
    "read_corpus_documents",
]
