"""Rotary position embedding (HF "rotate_half" layout), with llama3 and linear scaling.

The model asks for cos/sin of its positions once per forward; every layer then calls
`apply_rotary` on its q and k. Rotating halves of each head:

    x = [x1 | x2]                      # [..., head_dim], halves of head_dim/2
    out = [x1*cos - x2*sin | x2*cos + x1*sin]
        = x * [cos|cos] + roll(x, D/2) * [-sin|sin]
"""
from __future__ import annotations

import math
from typing import Optional

import torch

SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


class UnsupportedRopeScaling(ValueError):
    """The config asks for a rope scaling type we do not implement."""


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding:
    """cos/sin tables for positions [0, max_position), built lazily on the first device that asks."""

    def __init__(self, head_dim: int, max_position: int, base: float,
                 scaling: Optional[dict] = None):
        rope_type = (scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default"
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedRopeScaling(f"rope type {rope_type!r} is not supported; "
                                         f"supported: {SUPPORTED_ROPE_TYPES}")
        self.head_dim = head_dim
        self.max_position = max_position
        self.base = base
        self.rope_type = rope_type
        self.scaling = dict(scaling or {})
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        inv_freq = 1.0 / (self.base ** exponents)  # [head_dim/2]
        if self.rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, self.scaling)
        elif self.rope_type == "linear":
            inv_freq = inv_freq / float(self.scaling["factor"])
        return inv_freq

    def _tables(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            pos = torch.arange(self.max_position, dtype=torch.int64).float()
            freqs = torch.outer(pos, self._inv_freq())  # [max_pos, D/2] float32
            cos, sin = freqs.cos(), freqs.sin()
            cos_full = torch.cat([cos, cos], dim=-1)  # [max_pos, D]
            sin_signed = torch.cat([-sin, sin], dim=-1)  # [max_pos, D]
            self._cache[key] = (cos_full.to(device, dtype), sin_signed.to(device, dtype))
        return self._cache[key]

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> (cos, sin_signed), each [T, 1, head_dim] in `dtype`."""
        cos, sin = self._tables(positions.device, dtype)
        return cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x: [T, H, D]; cos, sin_signed: [T, 1, D] -> rotated x [T, H, D]."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * sin_signed
