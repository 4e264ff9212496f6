"""Rotary embedding fused with the KV store: one launch per layer where there were two (rope_,
then store_kv).

    rope_store_(qk, v, cos, sin_signed, k_cache, v_cache, loc, norm=None) -> q
        qk: [T, Hq + Hkv, D]   query heads then key heads (a strided view of the fused qkv output)
        v:  [T, Hkv, D]        cos, sin_signed: [T, 1, D] rows of the RotaryEmbedding tables
        k_cache, v_cache: [num_slots + 1, Hkv, D]    loc: [T] int slots
    Effects: qk[:, :Hq] is rotated in place (the returned q is that view);
             k_cache[loc[t]] = rotate(qk[t, Hq:]);  v_cache[loc[t]] = v[t]   (cast to the cache dtype)
    The key heads inside qk are left as they were: attention reads keys from the cache.
    rotate([x1 | x2]) = [x1*cos - x2*sin | x2*cos + x1*sin], computed in float32 and rounded once.
    norm = (q_weight [D], k_weight [D], eps): Qwen3's per-head RMSNorm of q and k before the
    rotation, x -> round(round(x / sqrt(mean(x^2) + eps)) * weight)   (HF's order of rounding)

Grid (T,): one program rotates one token's query heads and stores its keys and values.
_rope_prologue does the same work (without norms) inside a decode-attention program, for
attention_decode.decode_attention_rope: then a decode layer has no rope_store_ launch.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .attention_prologue import rms_norm_ref, rope_ref
from .attention_store import store_kv_ref
from .pdl import launch_options, pdl_on, wait_for_inputs


@triton.jit
def _head_norm(x1, x2, W, eps, offs_d, mask_d, HALF: tl.constexpr, DT: tl.constexpr):
    """RMSNorm of heads [H, HALF] + [H, HALF] (float32) with weight W [2*HALF], HF rounding."""
    rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)  # [H]
    w1 = tl.load(W + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    w2 = tl.load(W + HALF + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    n1 = (x1 * rstd[:, None]).to(DT).to(tl.float32) * w1[None, :]
    n2 = (x2 * rstd[:, None]).to(DT).to(tl.float32) * w2[None, :]
    return n1.to(DT).to(tl.float32), n2.to(DT).to(tl.float32)


@triton.jit
def _rope_store_kernel(QK, V, Cos, Sin, KCache, VCache, Loc, QW, KW, eps, stride_qt, stride_qh, stride_vt,
                       stride_vh, stride_ct, stride_st, stride_kct, stride_kch, stride_vct, stride_vch,
                       HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr, BLOCK_HQ: tl.constexpr,
                       BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr, HAS_NORM: tl.constexpr,
                       PDL: tl.constexpr):
    wait_for_inputs(PDL)
    t = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask_d = offs_d < HALF
    c = tl.load(Cos + t * stride_ct + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [HALF]
    s = tl.load(Sin + t * stride_st + HALF + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # +sin
    # query heads, in place
    offs_q = tl.arange(0, BLOCK_HQ)
    mask_q = (offs_q[:, None] < HQ) & mask_d[None, :]
    pq = QK + t * stride_qt + offs_q[:, None] * stride_qh + offs_d[None, :]
    q1 = tl.load(pq, mask=mask_q, other=0.0).to(tl.float32)  # [BLOCK_HQ, HALF]
    q2 = tl.load(pq + HALF, mask=mask_q, other=0.0).to(tl.float32)
    if HAS_NORM:
        q1, q2 = _head_norm(q1, q2, QW, eps, offs_d, mask_d, HALF, QK.dtype.element_ty)
    tl.store(pq, (q1 * c[None, :] - q2 * s[None, :]).to(QK.dtype.element_ty), mask=mask_q)
    tl.store(pq + HALF, (q2 * c[None, :] + q1 * s[None, :]).to(QK.dtype.element_ty), mask=mask_q)
    # key heads, rotated into the cache slot; values copied beside them
    slot = tl.load(Loc + t).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_HKV)
    mask_k = (offs_k[:, None] < HKV) & mask_d[None, :]
    pk = QK + t * stride_qt + (HQ + offs_k[:, None]) * stride_qh + offs_d[None, :]
    k1 = tl.load(pk, mask=mask_k, other=0.0).to(tl.float32)  # [BLOCK_HKV, HALF]
    k2 = tl.load(pk + HALF, mask=mask_k, other=0.0).to(tl.float32)
    if HAS_NORM:
        k1, k2 = _head_norm(k1, k2, KW, eps, offs_d, mask_d, HALF, QK.dtype.element_ty)
    r1 = (k1 * c[None, :] - k2 * s[None, :]).to(QK.dtype.element_ty)  # rounded as rope_ rounds
    r2 = (k2 * c[None, :] + k1 * s[None, :]).to(QK.dtype.element_ty)
    pkc = KCache + slot * stride_kct + offs_k[:, None] * stride_kch + offs_d[None, :]
    tl.store(pkc, r1.to(KCache.dtype.element_ty), mask=mask_k)
    tl.store(pkc + HALF, r2.to(KCache.dtype.element_ty), mask=mask_k)
    pv = V + t * stride_vt + offs_k[:, None] * stride_vh + offs_d[None, :]
    pvc = VCache + slot * stride_vct + offs_k[:, None] * stride_vch + offs_d[None, :]
    tl.store(pvc, tl.load(pv, mask=mask_k).to(VCache.dtype.element_ty), mask=mask_k)
    tl.store(pvc + HALF, tl.load(pv + HALF, mask=mask_k).to(VCache.dtype.element_ty), mask=mask_k)


@triton.jit
def _rope_prologue(Q, K, V, KNew, VNew, Cos, Sin, Loc, b, kvh, heads, mask_h, offs_d, mask_d, seq_len,
                   start, end, stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                   stride_knb, stride_knh, stride_vnb, stride_vnh, stride_cb, stride_sb, D: tl.constexpr):
    """The work of rope_store_ for one sequence and KV head, inside a decode-attention program
    (attention_decode.decode_attention_rope): -> the
    group's rotated queries [BLOCK_H, BLOCK_D]; the program that owns the newest key rotates it
    into the cache at Loc[b] and copies the value beside it, before any key is read.
    rotate(x)[d] = x[d] * cos[d] + x[(d + D/2) % D] * sin_signed[d]   (f32, rounded once)"""
    c = tl.load(Cos + b * stride_cb + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [BLOCK_D] [cos|cos]
    sn = tl.load(Sin + b * stride_sb + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [-sin|sin]
    swap = (offs_d + D // 2) % D
    mask_q = mask_h[:, None] & mask_d[None, :]
    pq = Q + b * stride_qb + heads[:, None] * stride_qh
    q = (tl.load(pq + offs_d[None, :], mask=mask_q, other=0.0).to(tl.float32) * c[None, :]
         + tl.load(pq + swap[None, :], mask=mask_q, other=0.0).to(tl.float32) * sn[None, :])
    if (start <= seq_len - 1) & (seq_len - 1 < end):
        slot = tl.load(Loc + b).to(tl.int64)
        pk = KNew + b * stride_knb + kvh * stride_knh
        k = (tl.load(pk + offs_d, mask=mask_d, other=0.0).to(tl.float32) * c
             + tl.load(pk + swap, mask=mask_d, other=0.0).to(tl.float32) * sn)
        tl.store(K + slot * stride_kt + kvh * stride_kh + offs_d,
                 k.to(KNew.dtype.element_ty).to(K.dtype.element_ty), mask=mask_d)
        v = tl.load(VNew + b * stride_vnb + kvh * stride_vnh + offs_d, mask=mask_d)
        tl.store(V + slot * stride_vt + kvh * stride_vh + offs_d, v.to(V.dtype.element_ty), mask=mask_d)
    tl.debug_barrier()  # the stores above are seen by this program's key loads
    return q.to(Q.dtype.element_ty)


def check_rope_store(qk, v, cos, sin_signed, k_cache, v_cache, loc) -> None:
    if qk.dim() != 3 or v.dim() != 3 or qk.shape[2] % 2:
        raise ValueError(f"expected qk [T, Hq + Hkv, D] (even D) and v [T, Hkv, D], got "
                         f"{tuple(qk.shape)}, {tuple(v.shape)}")
    num_tokens, _, d = qk.shape
    hkv = v.shape[1]
    if v.shape != (num_tokens, hkv, d) or qk.shape[1] <= hkv:
        raise ValueError(f"expected v [{num_tokens}, Hkv, {d}] with Hkv < {qk.shape[1]}, got {tuple(v.shape)}")
    if k_cache.shape[1:] != (hkv, d) or v_cache.shape != k_cache.shape:
        raise ValueError(f"expected caches [slots, {hkv}, {d}], got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if cos.shape != (num_tokens, 1, d) or sin_signed.shape != cos.shape:
        raise ValueError(f"expected cos, sin [{num_tokens}, 1, {d}], got {tuple(cos.shape)}, "
                         f"{tuple(sin_signed.shape)}")
    if loc.shape != (num_tokens,):
        raise ValueError(f"expected loc [{num_tokens}], got {tuple(loc.shape)}")
    if any(t.stride(-1) != 1 for t in (qk, v, cos, sin_signed, k_cache, v_cache)):
        raise ValueError("expected the last dimension of qk, v, cos, sin and the caches contiguous")


def rope_store_(qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor,
                norm: Optional[tuple[torch.Tensor, torch.Tensor, float]] = None) -> torch.Tensor:
    """See the module docstring; returns q = qk[:, :Hq], rotated."""
    check_rope_store(qk, v, cos, sin_signed, k_cache, v_cache, loc)
    num_tokens, h, d = qk.shape
    hkv = v.shape[1]
    q_weight, k_weight, eps = norm if norm is not None else (qk, qk, 0.0)  # (unused pointers without norm)
    if norm is not None and (q_weight.shape != (d,) or k_weight.shape != (d,)):
        raise ValueError(f"expected norm weights [{d}], got {tuple(q_weight.shape)}, {tuple(k_weight.shape)}")
    if num_tokens:
        _rope_store_kernel[(num_tokens,)](
            qk, v, cos, sin_signed, k_cache, v_cache, loc, q_weight, k_weight, eps, qk.stride(0),
            qk.stride(1), v.stride(0), v.stride(1), cos.stride(0), sin_signed.stride(0), k_cache.stride(0),
            k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), HQ=h - hkv, HKV=hkv, HALF=d // 2,
            BLOCK_HQ=triton.next_power_of_2(h - hkv), BLOCK_HKV=triton.next_power_of_2(hkv),
            BLOCK_HALF=triton.next_power_of_2(d // 2), HAS_NORM=norm is not None, PDL=pdl_on(), num_warps=2,
            **launch_options())
    return qk[:, :h - hkv]


def rope_store_ref(qk, v, cos, sin_signed, k_cache, v_cache, loc, norm=None) -> torch.Tensor:
    hq = qk.shape[1] - v.shape[1]
    if norm is not None:
        q_weight, k_weight, eps = norm
        qk[:, :hq] = rms_norm_ref(qk[:, :hq], q_weight, eps)
        qk[:, hq:] = rms_norm_ref(qk[:, hq:], k_weight, eps)
    rotated = rope_ref(qk, cos, sin_signed)
    qk[:, :hq] = rotated[:, :hq]
    store_kv_ref(k_cache, v_cache, loc, rotated[:, hq:], v)
    return qk[:, :hq]
