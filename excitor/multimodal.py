"""Multi-modal Excitor: a frozen CLIP vision tower conditions every Excitor block's prompts on the image.

LLaMA-Excitor (Zou et al., CVPR 2024) feeds the features of a frozen CLIP visual encoder into the same Excitor block, with no
separate vision-language alignment stage. No readable source states how, so this module implements the
reconstruction below and exposes the alternative as a switch:

    v        = CLIP(image)                      (B, C_v) pooled feature, or (B, N, C_v) with features="tokens"
    u        = v W_proj + b                     (B, N, C) one trainable projection, shared by all layers
    prompt_mode="add"  (default):  P'_l = P_l + u      added to every row of every layer's prompts
    prompt_mode="rows":            P'_l = [P_l ; u]    the visual tokens join the prompts as N extra rows

The language model's tokens then mix the image-conditioned prompts exactly as in the text-only block,
so with every gate at zero the model still equals the base model bit for bit, whatever the image.
Only the Excitor parameters and the projection train; the vision tower and the language model stay frozen.

Example::

    from transformers import AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionModel
    from excitor import ExcitorConfig
    from excitor.multimodal import ExcitorVisualModel, VisualConfig

    llm = AutoModelForCausalLM.from_pretrained("path/to/llama")
    vision = CLIPVisionModel.from_pretrained("openai/clip-vit-large-patch14")
    model = ExcitorVisualModel(llm, vision, ExcitorConfig(), VisualConfig())
    pixels = CLIPImageProcessor.from_pretrained("openai/clip-vit-large-patch14")(images, return_tensors="pt")
    loss = model(input_ids=ids, labels=labels, pixel_values=pixels["pixel_values"]).loss
    model.save_pretrained("out/excitor-visual")
    tuned = ExcitorVisualModel.from_pretrained(fresh_llm, vision, "out/excitor-visual")
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ExcitorConfig
from .model import ExcitorModel, excitor_modules, read_config, read_weights

logger = logging.getLogger(__name__)

VISUAL_CONFIG_NAME = "visual_config.json"
PROJECTION_WEIGHTS_NAME = "visual_projection.safetensors"
PROMPT_MODES = ("add", "rows")
FEATURE_KINDS = ("global", "tokens")


@dataclass
class VisualConfig:
    """The settings of how image features reach the language model.

    Args:
        prompt_mode: "add" adds the projected feature to every prompt row (the default reconstruction);
            "rows" appends the projected visual tokens to the prompts as extra rows.
        features: "global" uses CLIP's pooled feature (one vector per image); "tokens" uses every output
            token of the vision tower (the class token and the patches).
    """

    prompt_mode: str = "add"
    features: str = "global"

    def __post_init__(self) -> None:
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {self.features!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VisualConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown VisualConfig field {unknown[0]!r}; known fields are {sorted(known)}")
        return cls(**values)


class VisualEncoder(nn.Module):
    """A frozen vision tower and the one trainable projection into the language model's hidden size.

    The tower is any module that returns `pooler_output` and `last_hidden_state`, such as transformers'
    CLIPVisionModel. It stays in eval mode and receives no gradient, even while the encoder trains.
    """

    def __init__(self, vision_tower: nn.Module, hidden_size: int, features: str = "global",
                 dtype: torch.dtype | None = None) -> None:
        """`dtype` is the projection's, normally the language model's; None keeps torch's default."""
        super().__init__()
        if features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
        self.vision_tower = vision_tower
        self.vision_tower.requires_grad_(False)
        self.vision_tower.eval()
        self.features = features
        weight = next(vision_tower.parameters())
        self.projection = nn.Linear(vision_tower.config.hidden_size, hidden_size, device=weight.device, dtype=dtype)

    @property
    def num_tokens(self) -> int:
        """The number of visual tokens per image: 1 for the pooled feature, else the class token and patches."""
        if self.features == "global":
            return 1
        config = self.vision_tower.config
        return (config.image_size // config.patch_size) ** 2 + 1

    def train(self, mode: bool = True) -> VisualEncoder:
        super().train(mode)
        self.vision_tower.eval()  # frozen: dropout and similar layers stay in inference mode
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return the projected visual tokens (B, N, C); N is 1 for the pooled feature."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        with torch.no_grad():
            output = self.vision_tower(pixel_values=pixel_values.to(tower_dtype))
        if self.features == "global":
            visual = output.pooler_output[:, None, :]  # (B, 1, C_v)
        else:
            visual = output.last_hidden_state  # (B, N, C_v)
        return self.projection(visual.to(self.projection.weight.dtype))  # (B, N, C)


@contextlib.contextmanager
def visual_prompts(model: nn.Module, visual: torch.Tensor, prompt_mode: str) -> Iterator[None]:
    """Condition every Excitor block of `model` on `visual` (B, N, C) while the context is open.

    With prompt_mode="add", N must be 1, or the tokens are averaged to one vector per example first.
    The blocks are reset on exit, also after an error, so a later text-only call gets no stale image.
    """
    blocks = excitor_modules(model)
    if not blocks:
        raise ValueError("the model has no Excitor blocks to condition on images; inject them first")
    for block in blocks:
        if prompt_mode == "add":
            block.prompt_offset = visual.mean(dim=1, keepdim=True)  # (B, 1, C), broadcast over the K rows
        else:
            block.prompt_rows = visual  # (B, N, C)
    try:
        yield
    finally:
        for block in blocks:
            block.prompt_offset = None
            block.prompt_rows = None


class ExcitorVisualModel(nn.Module):
    """A frozen causal LM with Excitor blocks whose prompts are conditioned on a frozen vision tower.

    `forward` and `generate` take the language model's arguments plus `pixel_values` (B, 3, H, W), one
    image per sequence. Without `pixel_values` the model is the text-only Excitor model. The trainable
    parameters are the Excitor blocks and the visual projection.
    """

    def __init__(
        self,
        language_model: nn.Module,
        vision_tower: nn.Module,
        config: ExcitorConfig,
        visual_config: VisualConfig | None = None,
    ) -> None:
        super().__init__()
        self.visual_config = visual_config or VisualConfig()
        self.language_model = ExcitorModel(language_model, config)
        hidden_size = language_model.get_input_embeddings().embedding_dim
        self.visual_encoder = VisualEncoder(vision_tower, hidden_size, self.visual_config.features,
                                            dtype=next(language_model.parameters()).dtype)

    @property
    def excitor_config(self) -> ExcitorConfig:
        return self.language_model.excitor_config

    @property
    def config(self) -> Any:
        return self.language_model.base_model.config

    @property
    def visual_sequence_length(self) -> int:
        """Sequence positions the image takes: none, because it enters through the prompts."""
        return 0

    def _conditioned(self, pixel_values: torch.Tensor | None) -> contextlib.AbstractContextManager:
        if pixel_values is None:
            return contextlib.nullcontext()
        visual = self.visual_encoder(pixel_values)  # (B, N, C)
        return visual_prompts(self.language_model, visual, self.visual_config.prompt_mode)

    def forward(self, *args: Any, pixel_values: torch.Tensor | None = None, **kwargs: Any) -> Any:
        with self._conditioned(pixel_values):
            return self.language_model(*args, **kwargs)

    def generate(self, *args: Any, pixel_values: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Generate as the language model does; with beam search or sampling of several sequences per
        input, repeat `pixel_values` to the expanded batch size first."""
        with self._conditioned(pixel_values):
            return self.language_model.generate(*args, **kwargs)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """Return (trainable parameter count, total parameter count), as peft does."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the Excitor adapter, the visual projection and `visual_config.json` into one folder."""
        self.language_model.save_pretrained(save_directory)
        save_visual_parts(self.visual_encoder, self.visual_config, save_directory)

    @classmethod
    def from_pretrained(
        cls, language_model: nn.Module, vision_tower: nn.Module, model_id: str | Path, is_trainable: bool = False
    ) -> ExcitorVisualModel:
        """Rebuild a saved model onto a fresh language model and the vision tower it was trained with.

        Raises FileNotFoundError when a file is missing and ValueError when a saved config is invalid or
        the saved tensors do not fit the models.
        """
        directory = Path(model_id)
        model = cls(language_model, vision_tower, read_config(directory), read_visual_config(directory))
        model.language_model.load_excitor_weights(read_weights(directory), directory)
        load_projection(model.visual_encoder.projection, directory / PROJECTION_WEIGHTS_NAME)
        if not is_trainable:
            model.requires_grad_(False)
            model.eval()
        return model


def save_visual_parts(encoder: VisualEncoder, visual_config: VisualConfig, directory: str | Path) -> None:
    """Write the projection's weights and `visual_config.json`, beside the language model's own files.

    The frozen vision tower is not saved: loading takes it from where it was loaded for training.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in encoder.projection.state_dict().items()}
    save_file(tensors, str(directory / PROJECTION_WEIGHTS_NAME), metadata={"format": "pt"})
    (directory / VISUAL_CONFIG_NAME).write_text(json.dumps(visual_config.to_dict(), indent=2) + "\n")


def load_projection(projection: nn.Linear, path: Path) -> None:
    """Load saved projection weights, raising an error that names the tensor and shape that do not fit."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by save_pretrained.")
    weights = load_file(str(path))
    own = projection.state_dict()
    for name, tensor in own.items():
        saved = weights.get(name)
        if saved is None or saved.shape != tensor.shape:
            found = None if saved is None else tuple(saved.shape)
            raise ValueError(
                f"{path}: {name} has shape {found}, but the models expect {tuple(tensor.shape)}; "
                "load it with the language model and vision tower it was trained with."
            )
    projection.load_state_dict({name: weights[name] for name in own})


def read_visual_config(directory: Path) -> VisualConfig:
    """Read `visual_config.json` from a folder written by a visual model's save_pretrained."""
    path = directory / VISUAL_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by a visual model's save_pretrained.")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): write it again with save_pretrained.") from error
    return VisualConfig.from_dict(values)
