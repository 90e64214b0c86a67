"""The Excitor block: a wrapper around a frozen key projection that reconstructs the keys.

LLaMA-Excitor (Zou et al., "LLaMA-Excitor: General Instruction Tuning via Indirect Feature
Interaction", CVPR 2024) adds a gated extra term to the attention scores before the softmax,
S = softmax(Q K^T / sqrt(d) + g * Q K_extra^T / sqrt(d)), built from the layer input and K
learnable prompts through a low-rank bottleneck. No published code or readable equation for
K_extra was available, so this module implements the reconstruction below. It fits the
paper's parameter count of K*C + 2*C*r per layer (plus the gate):

    mix       = softmax(LR(x) P^T / sqrt(C)) P        (B, T, C): each token's mixture of prompts
    LR(x)     = x W_down W_up                         W_down (C, r), W_up (r, C)
    K_extra   = W_k mix                               through the FROZEN key projection
    key       = W_k x + g * K_extra = W_k (x + g * mix)

    x (B, T, C)
     ├──────────────────────────┐
     │                          │
     │         scores = (x W_down)(W_up P^T) / sqrt(C)      (B, T, K)
     │                          │
     │          mix = softmax(scores over K) P              (B, T, C)
     │                          │
     │                        * g                           gate: scalar or one per KV head
     │                          │
    (+) <───────────────────────┘
     │
    frozen W_k (k_proj)
     │
    key                                                     (B, T, H_kv * d)

The diagram shows the default, gate="layer" with key_source="frozen". With gate="head" or
key_source="free" the gated extra key is added after the projection: W_k x + g * K_extra.

Queries and values still see the untouched x, so only how much attention each token receives
changes. RoPE, grouped-query attention, the KV cache and the attention kernel see an ordinary
key tensor, and no attention matrix is built here. With g == 0 the key is
W_k(x + 0 * mix) == W_k(x) bit for bit.
At inference (autograd off) the default block folds its weights ahead of time, so that one
matmul gives the key and the prompt scores together and one more adds the gated prompt keys.
The folded weights are reused for every decoding step until a parameter changes.

NOTE: eager and SDPA attention are tested, but flash attention has not been run (it needs a GPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ExcitorConfig

EXCITOR_PARAMETER_PREFIX = "excitor_"
"""Every trainable Excitor parameter's attribute name starts with this prefix, and no other's does."""


class ExcitorKeyProjection(nn.Module):
    """Frozen key projection `base_layer` plus an Excitor block that shifts its input by a gated prompt mixture.

    Two attributes let a caller condition the prompts on each example, for example on image features
    (see `excitor.multimodal`). Both are None by default, and while one is set, its B must match the
    batch size of every forward call:
      - `prompt_offset` (B, K, C) or (B, 1, C) is added to the prompts;
      - `prompt_rows` (B, N, C) joins the prompts as N extra rows, so each token mixes K + N prompts.
    """

    def __init__(self, base_layer: nn.Linear, config: ExcitorConfig, num_key_value_heads: int) -> None:
        super().__init__()
        if base_layer.out_features % num_key_value_heads != 0:
            raise ValueError(
                f"num_key_value_heads={num_key_value_heads} does not divide the key projection's "
                f"out_features={base_layer.out_features}: pass the model's num_key_value_heads."
            )
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.config = config
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = base_layer.out_features // num_key_value_heads
        self.prompt_offset: torch.Tensor | None = None
        self.prompt_rows: torch.Tensor | None = None
        # Inference folds the weights of the default block only (per-layer gate, frozen W_k).
        self._foldable = config.gate == "layer" and config.key_source == "frozen"
        self._folded_split = [base_layer.out_features, config.prompt_length]
        self._folded_cache: tuple | None = None
        self._create_parameters()
        self.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """Weight of the frozen key projection, for code that reads `k_proj.weight`."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """Bias of the frozen key projection, for code that reads `k_proj.bias`."""
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def _create_parameters(self) -> None:
        hidden = self.base_layer.in_features
        kv_dim = self.base_layer.out_features
        # The block lives where the frozen weight lives and in its dtype, so bf16 models stay bf16.
        factory_kwargs = {"device": self.base_layer.weight.device, "dtype": self.base_layer.weight.dtype}
        gate_size = 1 if self.config.gate == "layer" else self.num_key_value_heads

        self.excitor_prompts = nn.Parameter(torch.empty(self.config.prompt_length, hidden, **factory_kwargs))  # (K, C)
        self.excitor_down = nn.Parameter(torch.empty(hidden, self.config.rank, **factory_kwargs))  # (C, r)
        self.excitor_up = nn.Parameter(torch.empty(self.config.rank, hidden, **factory_kwargs))  # (r, C)
        self.excitor_gate = nn.Parameter(torch.empty(gate_size, **factory_kwargs))  # (1,) or (H_kv,)
        if self.config.key_source == "free":
            self.excitor_free_proj = nn.Parameter(torch.empty(hidden, kv_dim, **factory_kwargs))  # (C, H_kv * d)
        else:
            self.register_parameter("excitor_free_proj", None)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the prompts, W_down and W_up from N(0, init_scale^2) and the gate to gate_init.

        W_up must not start at zero, because then LR(x) = 0 and every token gets the same mixture
        (the mean prompt) until W_up moves. RoPE rotates even that constant key shift differently at
        each position, so the gate would still get a gradient, but the block would start blind to the token.

        NOTE: at init_scale=0.02 the scores start tiny (std about 2e-3 for C=4096 and unit-variance x,
        measured with torch.randn inputs), so the softmax over the K prompts starts almost uniform.
        """
        std = self.config.init_scale
        nn.init.normal_(self.excitor_prompts, std=std)
        nn.init.normal_(self.excitor_down, std=std)
        nn.init.normal_(self.excitor_up, std=std)
        nn.init.constant_(self.excitor_gate, self.config.gate_init)
        if self.excitor_free_proj is not None:
            # Starting from W_k makes the "free" ablation begin as the same function as "frozen".
            self.excitor_free_proj.copy_(self.base_layer.weight.t())  # (C, H_kv * d)

    def prompt_mixture(self, x: torch.Tensor) -> torch.Tensor:
        """Return softmax(LR(x) P^T / sqrt(C)) P, each token's mixture of the prompts."""
        dtype = x.dtype
        prompts = self.excitor_prompts.to(dtype)  # (K, C)
        if self.prompt_offset is not None:
            prompts = prompts + self.prompt_offset.to(dtype)  # (B, K, C)
        if self.prompt_rows is not None:
            rows = self.prompt_rows.to(dtype)  # (B, N, C)
            prompts = torch.cat([prompts.expand(rows.shape[0], -1, -1), rows], dim=1)  # (B, K + N, C)
        down = self.excitor_down.to(dtype)  # (C, r)
        up = self.excitor_up.to(dtype)  # (r, C)

        # (x W_down)(W_up P^T) equals LR(x) P^T up to rounding, and never builds the (B, T, C) LR(x).
        scale = 1.0 / math.sqrt(x.shape[-1])
        prompt_keys = (up @ prompts.transpose(-1, -2)) * scale  # (r, K) or (B, r, K)
        scores = (x @ down) @ prompt_keys  # (B, T, r) @ (r, K) -> (B, T, K)
        # The softmax runs in float32 so that bf16 inputs do not lose the small score differences.
        weights = torch.softmax(scores.float(), dim=-1).to(dtype)  # (B, T, K)
        return weights @ prompts  # (B, T, K) @ (K, C) or (B, K, C) -> (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conditioned = self.prompt_offset is not None or self.prompt_rows is not None
        if self._foldable and not conditioned and not torch.is_grad_enabled():
            return self._forward_folded(x)

        mix = self.prompt_mixture(x)  # (B, T, C)
        gate = self.excitor_gate.to(x.dtype)  # (1,) or (H_kv,)

        if self.config.gate == "layer" and self.excitor_free_proj is None:
            # W_k x + g W_k mix == W_k (x + g mix): one matmul, and x + 0 * mix == x exactly at g == 0.
            return self.base_layer(x + gate * mix)  # (B, T, H_kv * d)

        key = self.base_layer(x)  # (B, T, H_kv * d)
        extra_key = self._extra_key(mix)  # (B, T, H_kv * d)
        return key + self._apply_gate(gate, extra_key)  # (B, T, H_kv * d)

    def _folded_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, bool]:
        """Return the weights of the folded inference path, recomputed only when a parameter changed.

        Decoding calls the block once per new token, so the four small matmuls and the gate are
        folded ahead of time into:
          - [W_k ; (W_down W_up P^T / sqrt(C))^T] (H_kv * d + K, C), so that one matmul gives the key
            and the prompt scores together, with the frozen bias (if any) extended by zeros;
          - g P W_k^T (K, H_kv * d), the gated prompts already through the frozen key projection;
          - whether g == 0, in which case the block is skipped so the output is W_k x bit for bit.
        """
        # A parameter's _version grows with every in-place change (optimiser steps, load_state_dict).
        # Attributes are read one by one because this check runs for every decoded token.
        key = (
            dtype,
            self.excitor_prompts._version,
            self.excitor_down._version,
            self.excitor_up._version,
            self.excitor_gate._version,
            self.excitor_prompts.device,
        )
        cached = self._folded_cache
        if cached is not None and cached[0] == key:
            return cached[1]

        weight = self.base_layer.weight.float()  # (H_kv * d, C)
        prompts = self.excitor_prompts.float()  # (K, C)
        scale = 1.0 / math.sqrt(prompts.shape[-1])
        score_weight = (self.excitor_down.float() @ (self.excitor_up.float() @ prompts.t())) * scale  # (C, K)
        joint_weight = torch.cat([weight, score_weight.t()]).to(dtype)  # (H_kv * d + K, C)
        joint_bias = None
        if self.base_layer.bias is not None:
            zeros = self.base_layer.bias.new_zeros(prompts.shape[0])
            joint_bias = torch.cat([self.base_layer.bias, zeros]).to(dtype)  # (H_kv * d + K,)
        prompt_keys = ((self.excitor_gate.float() * prompts) @ weight.t()).to(dtype)  # (K, H_kv * d)
        gate_is_zero = bool((self.excitor_gate == 0).all())
        folded = (joint_weight, joint_bias, prompt_keys, gate_is_zero)
        self._folded_cache = (key, folded)
        return folded

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        joint_weight, joint_bias, prompt_keys, gate_is_zero = self._folded_weights(x.dtype)
        if gate_is_zero:
            return self.base_layer(x)  # (B, T, H_kv * d)

        key, scores = F.linear(x, joint_weight, joint_bias).split(self._folded_split, dim=-1)
        if x.dtype == torch.float32:
            weights = torch.softmax(scores, dim=-1)  # (B, T, K)
        else:
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(x.dtype)  # (B, T, K)
        # W_k (x + g mix) == W_k x + softmax(scores) (g P W_k^T).
        return torch.matmul(weights, prompt_keys).add_(key)  # (B, T, H_kv * d)

    def _extra_key(self, mix: torch.Tensor) -> torch.Tensor:
        if self.excitor_free_proj is not None:
            return mix @ self.excitor_free_proj.to(mix.dtype)  # (B, T, C) @ (C, H_kv * d)
        # Weight only, without the bias: the bias belongs to W_k x and must be added once.
        return F.linear(mix, self.base_layer.weight)  # (B, T, H_kv * d)

    def _apply_gate(self, gate: torch.Tensor, extra_key: torch.Tensor) -> torch.Tensor:
        if self.config.gate == "layer":
            return gate * extra_key  # (B, T, H_kv * d)
        per_head = extra_key.unflatten(-1, (self.num_key_value_heads, self.head_dim))  # (B, T, H_kv, d)
        per_head = per_head * gate[:, None]  # (B, T, H_kv, d) * (H_kv, 1)
        return per_head.flatten(-2)  # (B, T, H_kv * d)

    def extra_repr(self) -> str:
        return (
            f"rank={self.config.rank}, prompt_length={self.config.prompt_length}, gate={self.config.gate!r}, "
            f"key_source={self.config.key_source!r}, num_key_value_heads={self.num_key_value_heads}"
        )
