"""Paged decode attention with split-K: one new query token per sequence against its cached keys.

    decode_attention(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits) -> out
        q: [bs, Hq, D]          k_cache, v_cache: [num_slots + 1, Hkv, D]
        req_to_token: [bs', L]  (bs' >= bs; row i holds the pool slots of sequence i)
        seq_lens: [bs] int on the device (keys 0 .. seq_lens[i]-1 are attended)
        out: [bs, Hq * D], q's dtype

    for i, h:                                     # semantics (what decode_attention_ref computes)
        kv = h // (Hq // Hkv); slots = req_to_token[i, :seq_lens[i]]
        out[i, h] = softmax(q[i, h] . k_cache[slots, kv]^T / sqrt(D)) @ v_cache[slots, kv]

Stage 1, grid (bs, Hkv, S): program (i, kv, s) owns the s-th of S equal pieces of sequence i's
keys and all G = Hq / Hkv query heads that share KV head kv (each key tile is read once for the
whole group; the group is padded to 16 rows so tl.dot applies). It writes a partial output and its
log-sum-exp (with S = 1: the final output). The S partials are merged

    out = sum_s exp(lse_s - max lse) * o_s / sum_s exp(lse_s - max lse)

by a second launch, grid (bs, Hq). With fused_merge=True the last of the S programs of (i, kv)
to finish merges them instead (an arrival counter per (i, kv), reset by that program): one
launch, but slower as it stands (see decode_attention).

    decode_attention_rope(qk, v, cos, sin_signed, k_cache, v_cache, loc, req_to_token, seq_lens, S)
        the same after rope_store_ (kernels/rope_store.py), in the stage-1 launch: each program
        rotates its group's queries; the one owning the newest key stores it and its value first

S (num_kv_splits) is a power of two chosen by the caller from the batch size only, so a CUDA graph
captured for a batch size stays valid for every sequence length; no host sync is needed.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .attention_checks import check_last_dim_contiguous, check_paged_qkv, paged_qkv_strides
from .pdl import launch_options, pdl_on, wait_for_inputs
from .rope_store import _rope_prologue, check_rope_store


@triton.jit
def _decode_stage1(Q, K, V, ReqToToken, SeqLens, MidO, MidLse, Out, Arrived,
                   stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_rb,
                   stride_ob, stride_oh, stride_os, stride_lb, stride_lh, stride_outb,
                   sm_scale, KNew, VNew, Cos, Sin, Loc, stride_knb, stride_knh, stride_vnb, stride_vnh,
                   stride_cb, stride_sb, G: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
                   MERGE_LAST: tl.constexpr, ROPE: tl.constexpr, PDL: tl.constexpr, KV_EVICT: tl.constexpr):
    wait_for_inputs(PDL)
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(SeqLens + b).to(tl.int32)
    split_len = tl.cdiv(seq_len, NUM_SPLITS)
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    offs_g = tl.arange(0, BLOCK_H)
    heads = kvh * G + offs_g  # [BLOCK_H] query heads of this KV head (rows >= G are padding)
    mask_h = offs_g < G
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    if ROPE:  # q unrotated; this step's k and v not stored yet (decode_attention_rope)
        q = _rope_prologue(Q, K, V, KNew, VNew, Cos, Sin, Loc, b, kvh, heads, mask_h, offs_d, mask_d,
                           seq_len, start, end, stride_qb, stride_qh, stride_kt, stride_kh, stride_vt,
                           stride_vh, stride_knb, stride_knh, stride_vnb, stride_vnh, stride_cb, stride_sb, D)
    else:
        q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                    mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # [BLOCK_H, BLOCK_D]

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        slots = tl.load(ReqToToken + b * stride_rb + offs_n, mask=mask_n, other=0).to(tl.int64)
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(K + slots[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=kv_mask, other=0.0, eviction_policy=KV_EVICT)  # [BLOCK_N, BLOCK_D]
        s = tl.dot(q, tl.trans(k).to(q.dtype)) * sm_scale  # [BLOCK_H, BLOCK_N] f32
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + slots[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                    mask=kv_mask, other=0.0, eviction_policy=KV_EVICT)  # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
        m_i = m_new

    has_keys = l_i > 0
    o = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    if NUM_SPLITS == 1:  # the one partial is the answer: no merge launch
        tl.store(Out + b * stride_outb + heads[:, None] * D + offs_d[None, :],
                 o.to(Out.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])
    else:
        tl.store(MidO + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + offs_d[None, :],
                 o, mask=mask_h[:, None] & mask_d[None, :])
        tl.store(MidLse + b * stride_lb + heads * stride_lh + split, lse, mask=mask_h)
        if MERGE_LAST:
            # the last of the S programs of (b, kv) to arrive merges the S partials (no second
            # launch); its counter goes back to 0 for the next call
            tl.debug_barrier()
            count = Arrived + b * tl.num_programs(1) + kvh
            if tl.atomic_add(count, 1, sem="acq_rel") == NUM_SPLITS - 1:
                tl.debug_barrier()
                _merge_splits(MidO, MidLse, Out, b, heads, mask_h, offs_d, mask_d, stride_ob, stride_oh,
                              stride_os, stride_lb, stride_lh, stride_outb, D, BLOCK_H, BLOCK_D, NUM_SPLITS)
                tl.atomic_xchg(count, 0)


@triton.jit
def _merge_splits(MidO, MidLse, Out, b, heads, mask_h, offs_d, mask_d, stride_ob, stride_oh, stride_os,
                  stride_lb, stride_lh, stride_outb, D: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr):
    """out[b, heads] from the S partials, one split at a time (as small as the main loop's state).
    The loop is unrolled and its loads bypass L1 (.cg: the partials other programs wrote are read
    from L2, after the acquiring counter) instead of being volatile, so they can all be in flight
    at once."""
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for s in tl.static_range(NUM_SPLITS):
        lse = tl.load(MidLse + b * stride_lb + heads * stride_lh + s, mask=mask_h, other=float("-inf"),
                      cache_modifier=".cg")  # [BLOCK_H]; -inf: an empty split
        o = tl.load(MidO + b * stride_ob + heads[:, None] * stride_oh + s * stride_os + offs_d[None, :],
                    mask=mask_h[:, None] & mask_d[None, :], other=0.0,
                    cache_modifier=".cg")  # [BLOCK_H, BLOCK_D]
        m_new = tl.maximum(m, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        w = tl.exp(lse - m_safe)
        l = l * alpha + w
        acc = acc * alpha[:, None] + o * w[:, None]
        m = m_new
    out = acc / tl.where(l > 0, l, 1.0)[:, None]
    tl.store(Out + b * stride_outb + heads[:, None] * D + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=mask_h[:, None] & mask_d[None, :])


@triton.jit
def _decode_stage2(MidO, MidLse, Out, stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
                   stride_outb, D: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr,
                   PDL: tl.constexpr):
    wait_for_inputs(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    lse = tl.load(MidLse + b * stride_lb + h * stride_lh + offs_s)  # [S]
    m = tl.max(lse, 0)
    w = tl.exp(lse - m)  # empty splits: exp(-inf) = 0
    o = tl.load(MidO + b * stride_ob + h * stride_oh + offs_s[:, None] * stride_os + offs_d[None, :],
                mask=mask_d[None, :], other=0.0)  # [S, BLOCK_D]
    out = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)
    tl.store(Out + b * stride_outb + h * D + offs_d, out.to(Out.dtype.element_ty), mask=mask_d)


def pick_num_kv_splits(batch_size: int, num_kv_heads: int, num_sms: int = 132) -> int:
    """A power of two S <= 16 so that batch_size * num_kv_heads * S programs fill the GPU about
    four times. (Swept on an H200 with CUDA-graph timing, benchmarks/bench_decode_attention.py,
    2026-11-28: this picks the best or within 10% of it at 135M / 8B shapes from batch 1 to 256;
    S = 32 was never best.)"""
    want = max(1, (4 * num_sms) // max(1, batch_size * num_kv_heads))
    return int(min(16, 1 << (want.bit_length() - 1)))


def _check(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits):
    check_paged_qkv(q, k_cache, v_cache, "[bs, Hq, D]")
    bs = q.shape[0]
    if req_to_token.dim() != 2 or req_to_token.shape[0] < bs or seq_lens.shape != (bs,):
        raise ValueError(f"expected req_to_token [>= {bs}, L] and seq_lens [{bs}], got "
                         f"{tuple(req_to_token.shape)}, {tuple(seq_lens.shape)}")
    devices = {t.device for t in (q, k_cache, v_cache, req_to_token, seq_lens)}
    if len(devices) != 1:
        raise ValueError(f"expected all tensors on one device, got {devices}")
    if num_kv_splits < 1 or num_kv_splits & (num_kv_splits - 1):
        raise ValueError(f"expected num_kv_splits a power of two, got {num_kv_splits}")
    check_last_dim_contiguous(q, k_cache, v_cache, req_to_token)


# the default launch (both entry points): K/V loads in 4 pipeline stages, evicted from L2 first.
# On an H200 at 8B bs 64 x 640 keys: 43.4 µs per layer against 44.8 for 3 stages and no policy
# (benchmarks/bench_decode_attention.py --loads, 2026-11-29)
DEFAULT_NUM_STAGES = 4
DEFAULT_KV_EVICT = "evict_first"


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     req_to_token: torch.Tensor, seq_lens: torch.Tensor, num_kv_splits: int = 8,
                     out: torch.Tensor | None = None, block_n: int | None = None,
                     num_stages: int = DEFAULT_NUM_STAGES, fused_merge: bool = False, num_warps: int = 4,
                     kv_evict: str = DEFAULT_KV_EVICT) -> torch.Tensor:
    """See the module docstring. Every seq_lens[i] must be >= 1. block_n (keys per loop step,
    a power of two >= 16; None: 128 for D <= 64, else 64), num_stages, num_warps and kv_evict
    (the K/V loads' L2 eviction policy: "", "evict_first" or "evict_last") are launch knobs
    (benchmarks/bench_decode_attention.py --loads sweeps them). fused_merge: with S > 1, the last of a
    sequence's S programs merges the partials (one launch) instead of a second launch. Off: on
    an H200 its first version (volatile loads, one split after another) was slower at every
    shape measured (135M bs 1, S 16: 19.9 µs against 5.2); the unrolled L2-read merge it has now
    is not measured yet (benchmarks/bench_decode_attention.py --merge)."""
    _check(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits)
    if kv_evict not in ("", "evict_first", "evict_last"):
        raise ValueError(f"expected kv_evict '', 'evict_first' or 'evict_last', got {kv_evict!r}")
    return _attend(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits, out, block_n, num_stages,
                   fused_merge, None, num_warps, kv_evict)


def decode_attention_rope(qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                          k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor,
                          req_to_token: torch.Tensor, seq_lens: torch.Tensor, num_kv_splits: int = 8
                          ) -> torch.Tensor:
    """rope_store_(qk, v, cos, sin_signed, k_cache, v_cache, loc) then decode_attention of the
    rotated queries, in the attention launch (no rope_store_ launch): qk [bs, Hq + Hkv, D] the
    unrotated query and key heads of the new token (left as they are), v [bs, Hkv, D], cos /
    sin_signed [bs, 1, D], loc [bs] its KV slot (req_to_token[i, seq_lens[i] - 1]). -> out
    [bs, Hq * D]. Same arguments and semantics as those two calls (kernels/rope_store.py)."""
    check_rope_store(qk, v, cos, sin_signed, k_cache, v_cache, loc)
    hkv = v.shape[1]
    q = qk[:, :qk.shape[1] - hkv]  # [bs, Hq, D] (strided: rows of the fused qkv output)
    _check(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits)
    return _attend(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits, None, None,
                   DEFAULT_NUM_STAGES, False, (qk[:, qk.shape[1] - hkv:], v, cos, sin_signed, loc))


def _attend(q, k_cache, v_cache, req_to_token, seq_lens, num_kv_splits, out, block_n, num_stages,
            fused_merge, rope, num_warps=4, kv_evict=DEFAULT_KV_EVICT) -> torch.Tensor:
    bs, hq, d = q.shape
    hkv = k_cache.shape[1]
    group = hq // hkv
    block_d = triton.next_power_of_2(d)
    if out is None:
        out = torch.empty(bs, hq * d, dtype=q.dtype, device=q.device)
    if bs == 0:
        return out
    if num_kv_splits == 1:  # stage 1 writes out itself; no partial buffers
        mid_o = mid_lse = out
        o_strides, lse_strides = (0, 0, 0), (0, 0)
    else:
        mid_o = torch.empty(bs, hq, num_kv_splits, d, dtype=torch.float32, device=q.device)
        mid_lse = torch.empty(bs, hq, num_kv_splits, dtype=torch.float32, device=q.device)
        o_strides, lse_strides = mid_o.stride()[:3], mid_lse.stride()[:2]
    merge_last = fused_merge and num_kv_splits > 1
    arrived = _arrival_counters(q.device, bs * hkv) if merge_last else seq_lens
    if rope is not None:
        k_new, v_new, cos, sin_signed, loc = rope
        rope_args = (k_new, v_new, cos, sin_signed, loc, k_new.stride(0), k_new.stride(1), v_new.stride(0),
                     v_new.stride(1), cos.stride(0), sin_signed.stride(0))
    else:
        rope_args = (q, q, q, q, q, 0, 0, 0, 0, 0, 0)  # (unused)
    _decode_stage1[(bs, hkv, num_kv_splits)](
        q, k_cache, v_cache, req_to_token, seq_lens, mid_o, mid_lse, out, arrived,
        *paged_qkv_strides(q, k_cache, v_cache), req_to_token.stride(0),
        *o_strides, *lse_strides, out.stride(0), 1.0 / math.sqrt(d), *rope_args,
        G=group, D=d, BLOCK_H=max(16, triton.next_power_of_2(group)),
        BLOCK_D=block_d, BLOCK_N=block_n or (128 if block_d <= 64 else 64), NUM_SPLITS=num_kv_splits,
        MERGE_LAST=merge_last, ROPE=rope is not None, PDL=pdl_on(), KV_EVICT=kv_evict, num_warps=num_warps,
        num_stages=num_stages,
        **launch_options())
    if num_kv_splits == 1 or merge_last:
        return out
    _decode_stage2[(bs, hq)](
        mid_o, mid_lse, out, mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1), out.stride(0),
        D=d, BLOCK_D=block_d, NUM_SPLITS=num_kv_splits, PDL=pdl_on(), num_warps=2, **launch_options())
    return out


_ARRIVALS: dict = {}  # device -> [int32 counters], largest last; every buffer is kept alive


def _arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """n int32 counters, zero between calls (the merging program resets its own). A larger
    request allocates a new buffer but keeps the old ones: a captured CUDA graph may use them."""
    buffers = _ARRIVALS.setdefault(device, [])
    if not buffers or buffers[-1].numel() < n:
        buffers.append(torch.zeros(max(n, 1024), dtype=torch.int32, device=device))
    return buffers[-1]


def decode_attention_ref(q, k_cache, v_cache, req_to_token, seq_lens) -> torch.Tensor:
    """The semantics above in plain torch (float32 math), one sequence at a time."""
    bs, hq, d = q.shape
    group = hq // k_cache.shape[1]
    out = torch.empty(bs, hq * d, dtype=q.dtype, device=q.device)
    for i, n in enumerate(seq_lens.tolist()):
        slots = req_to_token[i, :n].long()
        k = k_cache[slots].float().repeat_interleave(group, dim=1)  # [n, Hq, D]
        v = v_cache[slots].float().repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[i].float(), k) / math.sqrt(d)  # [Hq, n]
        out[i] = torch.einsum("hn,nhd->hd", scores.softmax(-1), v).reshape(-1).to(q.dtype)
    return out
