"""The gated activation of Llama/Qwen MLPs in one launch (torch runs silu, then mul: two).

    silu_and_mul(x) -> y        x: [T, 2*I] laid out [gate | up]    y: [T, I], x's dtype
        y = round(round(silu(gate)) * up)    silu in float32; rounded to x's dtype twice, exactly
                                              as F.silu(gate) * up rounds in that dtype

Grid (T, cdiv(I, BLOCK)): one program per row block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _silu_mul_kernel(X, Y, stride_x, stride_y, I, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < I
    gate = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(X + row * stride_x + I + offs, mask=mask, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(X.dtype.element_ty)  # silu(gate), rounded as F.silu does
    tl.store(Y + row * stride_y + offs, (act.to(tl.float32) * up.to(tl.float32)).to(Y.dtype.element_ty),
             mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """See the module docstring."""
    if x.dim() != 2 or x.shape[1] % 2 or x.stride(1) != 1:
        raise ValueError(f"expected x [T, 2*I] with contiguous rows, got {tuple(x.shape)}")
    num_rows, i = x.shape[0], x.shape[1] // 2
    y = torch.empty(num_rows, i, dtype=x.dtype, device=x.device)
    if num_rows:
        block = min(1024, triton.next_power_of_2(i))
        _silu_mul_kernel[(num_rows, triton.cdiv(i, block))](x, y, x.stride(0), y.stride(0), i, BLOCK=block,
                                                            num_warps=max(1, min(4, block // 256)))
    return y


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
