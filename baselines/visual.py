"""The visual setting of the baselines: projected CLIP features as a prefix of the input embeddings.

LoRA, prefix tuning, LLaMA-Adapter and full fine-tuning have no place of their own for an image, so
they get it the way most visual instruction tuning recipes feed one, LLaVA for example. The frozen
vision tower's features go through one trainable linear projection into the language model's
embedding space, and are placed in front of the text as N extra input embeddings. The projection is
the same kind as multi-modal Excitor's (`excitor.multimodal.VisualEncoder`), and it receives the same
features, so every method gets the same information about the image.

The visual tokens take N placeholder positions right before the first attended token of each row,
so the layout is [visual, text, padding] with right padding (training) and [padding, visual, text]
with left padding (generation), and the loss ignores them. A forward hook on the input embeddings
writes the visual tokens into those positions. Keeping token ids as the model's input, rather than
passing `inputs_embeds`, lets transformers' generate and every peft method (prefix tuning included,
whose generation does not accept input embeddings) run unchanged, with the KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from excitor.multimodal import (
    PROJECTION_WEIGHTS_NAME,
    VisualConfig,
    VisualEncoder,
    load_projection,
    read_visual_config,
)

IGNORE_INDEX = -100
"""Label value that the loss ignores (transformers' and torch's cross-entropy default)."""


class VisualPrefixModel(nn.Module):
    """A tuned causal LM (peft or plain) whose inputs start with projected visual tokens.

    `forward` and `generate` take the language model's arguments plus `pixel_values` (B, 3, H, W), one
    image per sequence. `generate` returns the prompt ids followed by the new tokens, as transformers'
    generate does, without the placeholder positions.
    """

    def __init__(self, language_model: nn.Module, vision_tower: nn.Module, visual_config: VisualConfig,
                 placeholder_token_id: int = 0) -> None:
        super().__init__()
        self.language_model = language_model
        self.visual_config = visual_config
        self.placeholder_token_id = placeholder_token_id
        embeddings = language_model.get_input_embeddings()
        self.visual_encoder = VisualEncoder(vision_tower, embeddings.embedding_dim, visual_config.features,
                                            dtype=embeddings.weight.dtype)

    @property
    def config(self) -> Any:
        return self.language_model.config

    @property
    def visual_sequence_length(self) -> int:
        """Sequence positions the image takes: its visual tokens."""
        return self.visual_encoder.num_tokens

    def insert_placeholders(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None, count: int
    ) -> dict[str, torch.Tensor]:
        """Insert `count` placeholder positions before the first attended token of every row.

        Returns the new input_ids, attention_mask and labels (when given), and `visual_positions`, a
        (B, T + count) boolean mask of the placeholders.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        placeholder_ids = input_ids.new_full((count,), self.placeholder_token_id)
        ones = attention_mask.new_ones(count)
        ignored = input_ids.new_full((count,), IGNORE_INDEX)
        rows: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "labels": [],
                                               "visual_positions": []}
        for row in range(input_ids.shape[0]):
            # The first attended position: 0 with right padding, the number of pads with left padding.
            start = int(attention_mask[row].argmax())
            rows["input_ids"].append(torch.cat([input_ids[row, :start], placeholder_ids, input_ids[row, start:]]))
            rows["attention_mask"].append(torch.cat([attention_mask[row, :start], ones, attention_mask[row, start:]]))
            if labels is not None:
                rows["labels"].append(torch.cat([labels[row, :start], ignored, labels[row, start:]]))
            positions = torch.zeros(input_ids.shape[1] + count, dtype=torch.bool, device=input_ids.device)
            positions[start:start + count] = True
            rows["visual_positions"].append(positions)
        return {name: torch.stack(values) for name, values in rows.items() if values}  # (B, T + count)

    @contextlib.contextmanager
    def _visual_embeddings(self, visual: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
        """Write `visual` (B, N, C) into the placeholder positions of the input embeddings while open."""
        flat_visual = visual.reshape(-1, visual.shape[-1])  # (B * N, C), row-major like boolean indexing

        def write_visual_tokens(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[:2] != positions.shape:
                return None  # a decoding step after the prompt: nothing to replace
            output = output.clone()
            output[positions] = flat_visual.to(output.dtype)
            return output

        handle = self.language_model.get_input_embeddings().register_forward_hook(write_visual_tokens)
        try:
            yield
        finally:
            handle.remove()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if pixel_values is None:
            return self.language_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        visual = self.visual_encoder(pixel_values)  # (B, N, C)
        inputs = self.insert_placeholders(input_ids, attention_mask, labels, visual.shape[1])
        positions = inputs.pop("visual_positions")
        with self._visual_embeddings(visual, positions):
            return self.language_model(**inputs, **kwargs)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Generate after the visual tokens and the prompt; returns the prompt ids and the new tokens."""
        if pixel_values is None:
            return self.language_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        visual = self.visual_encoder(pixel_values)  # (B, N, C)
        inputs = self.insert_placeholders(input_ids, attention_mask, None, visual.shape[1])
        positions = inputs.pop("visual_positions")
        with self._visual_embeddings(visual, positions):
            output = self.language_model.generate(**inputs, **kwargs)  # (B, N + T + new)
        return torch.cat([input_ids, output[:, positions.shape[1]:]], dim=1)


def load_visual_prefix_model(language_model: nn.Module, vision_tower: nn.Module, directory: Path) -> VisualPrefixModel:
    """Rebuild a saved visual prefix model around an already loaded tuned language model, ready for inference."""
    directory = Path(directory)
    model = VisualPrefixModel(language_model, vision_tower, read_visual_config(directory))
    load_projection(model.visual_encoder.projection, directory / PROJECTION_WEIGHTS_NAME)
    model.requires_grad_(False)
    model.eval()
    return model
