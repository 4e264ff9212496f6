"""Int8 weight-only quantization, applied from outside to a loaded model (opt-in).

CPU decode is memory-bound: every token reads every weight once. Storing weights as int8 with
one scale per output row halves the bytes read against bf16 (a quarter against fp32):

    W ≈ scale[:, None] * W_q        W_q: [out, in] int8 in [-127, 127], scale: [out] = max|W_row| / 127
    y = x @ W^T + b  ≈  aten._weight_int8pack_mm(x, W_q, scale) + b    (x: [n, in] bf16/fp16/fp32)

`quantize_int8_weight_only(model)` swaps each linear layer (and the LM head) in place; the
embedding keeps its float weights, so a tied LM head gets its own int8 copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layer_swap import SwappedLinear


INT8_MAX_ROWS = 4  # inputs with more rows use the float weight (see Int8WeightOnlyLinear)


class QuantizationUnsupported(RuntimeError):
    """The model or device cannot be quantized this way."""


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] float -> (int8 [out, in], float32 scale [out]), symmetric per row."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # [out]
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8WeightOnlyLinear(SwappedLinear):
    """Drop-in for a tp_size-1 linear layer: x [..., in] -> [..., out] in x's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_float32: bool = False):
        super().__init__(weight, out_float32)
        # The int8 kernel wins only for a few rows (decode at small batch: it halves the bytes
        # read); from ~8 rows on the float GEMM is faster (measured on this CPU: at 32 rows
        # int8 takes 2-3x longer). So the float weight is kept (shared, not copied: a tied LM
        # head costs nothing extra) and used for larger inputs.
        self.register_buffer("weight", weight.detach(), persistent=False)  # [out, in] float
        q, scale = quantize_rows_int8(weight)
        self.register_buffer("qweight", q)  # [out, in] int8
        self.register_buffer("scale", scale.to(weight.dtype))  # [out], the activation dtype
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def _linear(self, x2: torch.Tensor) -> torch.Tensor:
        if x2.dtype != self.scale.dtype:
            x2 = x2.to(self.scale.dtype)
        if x2.shape[0] > INT8_MAX_ROWS:
            y = F.linear(x2, self.weight)  # [n, out]
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scale)  # [n, out]
        if self.bias is not None:
            y = y + self.bias
        return y


def quantize_int8_weight_only(model: nn.Module, include_lm_head: bool = True) -> int:
    """Replace the model's linear layers (and LM head) with int8 weight-only versions in place.

    Returns the number of layers replaced. Only tensor-parallel size 1 and CPU are supported
    (the int8 kernel used here is a CPU kernel).
    """
    def accept(name: str, module: nn.Module, is_lm_head: bool) -> bool:
        if is_lm_head and not include_lm_head:
            return False
        if module.tp_size != 1:
            raise QuantizationUnsupported(f"{name}: int8 weight-only needs tp_size 1, "
                                          f"got {module.tp_size}")
        if module.weight.device.type != "cpu":
            raise QuantizationUnsupported(f"{name}: int8 weight-only runs on CPU, "
                                          f"got {module.weight.device}")
        return True

    return Int8WeightOnlyLinear.replace_in(model, accept)
