"""KV store: write the new tokens' keys and values into their pool slots in one launch.

    store_kv(k_cache, v_cache, loc, k, v)
        k_cache, v_cache: [num_slots + 1, Hkv, D]    loc: [T] int slots    k, v: [T, Hkv, D]
        k_cache[loc[t]] = k[t];  v_cache[loc[t]] = v[t]      (cast to the cache dtype)

k and v may be strided views (e.g. slices of a fused qkv projection); only their last dimension
must be contiguous. Grid (T,): one program copies one token's Hkv * D keys and values.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(KCache, VCache, Loc, K, V, stride_ct, stride_ch, stride_vct, stride_vch,
                     stride_kt, stride_kh, stride_vt, stride_vh, H: tl.constexpr, D: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(Loc + t).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h[:, None] < H) & (offs_d[None, :] < D)
    k = tl.load(K + t * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
    v = tl.load(V + t * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    tl.store(KCache + slot * stride_ct + offs_h[:, None] * stride_ch + offs_d[None, :],
             k.to(KCache.dtype.element_ty), mask=mask)
    tl.store(VCache + slot * stride_vct + offs_h[:, None] * stride_vch + offs_d[None, :],
             v.to(VCache.dtype.element_ty), mask=mask)


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> None:
    """See the module docstring."""
    if k.dim() != 3 or k.shape != v.shape or k.shape[1:] != k_cache.shape[1:] or v_cache.shape != k_cache.shape:
        raise ValueError(f"expected k, v [T, Hkv, D] matching caches [slots, Hkv, D], got k "
                         f"{tuple(k.shape)}, v {tuple(v.shape)}, caches {tuple(k_cache.shape)}")
    if loc.shape != (k.shape[0],):
        raise ValueError(f"expected loc [{k.shape[0]}], got {tuple(loc.shape)}")
    if k.stride(2) != 1 or v.stride(2) != 1 or k_cache.stride(2) != 1 or v_cache.stride(2) != 1:
        raise ValueError("expected the last dimension of k, v and the caches contiguous")
    num_tokens, hkv, d = k.shape
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        k_cache, v_cache, loc, k, v, k_cache.stride(0), k_cache.stride(1), v_cache.stride(0),
        v_cache.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), H=hkv, D=d,
        BLOCK_H=triton.next_power_of_2(hkv), BLOCK_D=triton.next_power_of_2(d), num_warps=1)


def store_kv_ref(k_cache, v_cache, loc, k, v) -> None:
    k_cache[loc.long()] = k.to(k_cache.dtype)
    v_cache[loc.long()] = v.to(v_cache.dtype)
