"""The small ops around attention, fused so a decode step launches fewer kernels:
RMSNorm (+ residual add) and in-place rotary embedding of q and k.

    rms_norm(x, weight, eps) -> y                   x: [T, N]  weight: [N]
    rms_norm(x, weight, eps, residual) -> (y, s)    s = x + residual (rounded to x's dtype), y = norm(s)
        norm(s) = (s_f32 / sqrt(mean(s_f32^2) + eps)).to(dtype) * weight     (HF order of rounding)

    rope_(x, cos, sin_signed)                       in place; x: [T, H, D] (strided rows allowed)
        cos, sin_signed: [T, 1, D] rows of the RotaryEmbedding tables ([cos|cos], [-sin|sin])
        x = [x1 | x2] -> [x1*cos - x2*sin | x2*cos + x1*sin]   (computed in float32)
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .pdl import launch_options, pdl_on, wait_for_inputs


@triton.jit
def _rms_norm_kernel(X, Res, W, Y, SumOut, stride_x, stride_r, stride_y, stride_s, eps,
                     N: tl.constexpr, BLOCK: tl.constexpr, HAS_RES: tl.constexpr, PDL: tl.constexpr):
    wait_for_inputs(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(Res + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(SumOut + row * stride_s + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / N + eps)
    normed = (xf * rstd).to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + offs, (normed * w).to(Y.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: Optional[torch.Tensor] = None):
    """See the module docstring."""
    if x.dim() != 2 or weight.shape != (x.shape[1],):
        raise ValueError(f"expected x [T, N] and weight [N], got {tuple(x.shape)}, {tuple(weight.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"expected residual {tuple(x.shape)} {x.dtype}, got "
                         f"{tuple(residual.shape)} {residual.dtype}")
    if x.stride(1) != 1 or (residual is not None and residual.stride(1) != 1):
        raise ValueError("expected rows of x and residual contiguous")
    num_rows, n = x.shape
    y = torch.empty(num_rows, n, dtype=x.dtype, device=x.device)
    s = torch.empty_like(y) if residual is not None else y
    if num_rows:
        res = residual if residual is not None else x
        block = triton.next_power_of_2(n)
        _rms_norm_kernel[(num_rows,)](x, res, weight, y, s, x.stride(0), res.stride(0), y.stride(0),
                                      s.stride(0), eps, N=n, BLOCK=block, HAS_RES=residual is not None,
                                      PDL=pdl_on(), num_warps=max(1, min(8, block // 256)),
                                      **launch_options())
    return y if residual is None else (y, s)


def rms_norm_ref(x, weight, eps, residual=None):
    if residual is not None:
        x = x + residual
    y = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return y if residual is None else (y, x)


@triton.jit
def _rope_kernel(X, Cos, Sin, stride_xt, stride_xh, stride_ct, stride_st, H: tl.constexpr,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask_d = offs_d < HALF
    mask = (offs_h[:, None] < H) & mask_d[None, :]
    c = tl.load(Cos + t * stride_ct + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [HALF]
    s = tl.load(Sin + t * stride_st + HALF + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # +sin
    p1 = X + t * stride_xt + offs_h[:, None] * stride_xh + offs_d[None, :]
    x1 = tl.load(p1, mask=mask, other=0.0).to(tl.float32)  # [BLOCK_H, HALF]
    x2 = tl.load(p1 + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(p1, (x1 * c[None, :] - x2 * s[None, :]).to(X.dtype.element_ty), mask=mask)
    tl.store(p1 + HALF, (x2 * c[None, :] + x1 * s[None, :]).to(X.dtype.element_ty), mask=mask)


def rope_(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate x in place (see the module docstring); returns x."""
    if x.dim() != 3 or x.shape[2] % 2 or x.stride(2) != 1:
        raise ValueError(f"expected x [T, H, D] with even D and contiguous last dim, got {tuple(x.shape)}")
    num_tokens, h, d = x.shape
    if cos.shape != (num_tokens, 1, d) or sin_signed.shape != cos.shape:
        raise ValueError(f"expected cos, sin [{num_tokens}, 1, {d}], got {tuple(cos.shape)}, "
                         f"{tuple(sin_signed.shape)}")
    if cos.stride(2) != 1 or sin_signed.stride(2) != 1:
        raise ValueError("expected cos and sin contiguous in their last dimension")
    if num_tokens:
        _rope_kernel[(num_tokens,)](x, cos, sin_signed, x.stride(0), x.stride(1), cos.stride(0),
                                    sin_signed.stride(0), H=h, HALF=d // 2,
                                    BLOCK_H=triton.next_power_of_2(h),
                                    BLOCK_HALF=triton.next_power_of_2(d // 2), num_warps=2)
    return x


def rope_ref(x, cos, sin_signed) -> torch.Tensor:
    xf = x.float()
    rolled = torch.roll(xf, x.shape[-1] // 2, dims=-1)
    return (xf * cos.float() + rolled * sin_signed.float()).to(x.dtype)
