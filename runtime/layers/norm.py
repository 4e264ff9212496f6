"""RMSNorm with an optional fused residual add (the pre-norm pattern of every decoder layer)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps), computed in float32 and cast back (HF semantics).

    forward(x) -> y
    forward(x, residual) -> (y, x + residual)   # the sum is the next layer's residual
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (self.hidden_size,), self.weight, self.eps)
        # [..., hidden]: normalize in float32, round once to the model dtype, then scale (as HF does)
        y = F.rms_norm(x.float(), (self.hidden_size,), None, self.eps).to(x.dtype)
        return y * self.weight

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None):
        if x.is_cuda and x.dim() == 2:  # one fused Triton kernel (norm, or add + norm)
            from sgl_lang.kernels.attention_prologue import rms_norm
            return rms_norm(x, self.weight, self.eps, residual)
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
