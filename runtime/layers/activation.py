"""SiluAndMul: the gated activation of Llama/Qwen MLPs on a fused gate_up output."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SiluAndMul(nn.Module):
    """x: [T, 2*I] laid out [gate | up] -> silu(gate) * up: [T, I]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.dim() == 2:  # one Triton kernel instead of silu, then mul
            from sgl_lang.kernels.silu_mul import silu_and_mul
            return silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
