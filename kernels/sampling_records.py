"""Lanes: the per-lane masses and the inverse-CDF draw of the masked-sampling kernel
(sampling_kernel.py).

A row is a [ceil(V / L), L] grid (L = LANES): token j sits in row j // L of lane j % L. The
SPLITS programs of a row split the lanes (program p streams lanes [p * LW, (p + 1) * LW) in
tiles [KR, LW]: KR grid rows of LW contiguous tokens). Each program keeps a running mass per
tile position and, after a pass, writes one record per lane. Workspace row rec [7, L] float32:
    rec[0, q]           lane max of s (pass 1)
    rec[1 + 3q', q]     z: sum of exp(s - ref) over the lane's tokens in the current support
                        (ref: the lane max in pass 1, before the row's max m is known; m later)
    rec[2 + 3q', q]     count of the lane's tokens in the support
    rec[3 + 3q', q]     count of the lane's tokens with s == v (the candidate's value)
q' alternates between support passes: a slow program may still read the last records while a
fast one writes the next (the barrier between them orders every other reuse).

The support of a pass is {s > v, ordered key of s >= thr, s >= floor} (v = -inf: every allowed
token). A draw picks the lane from the cumulative lane masses, then the token by re-reading
that lane's ceil(V / L) tokens (sampling_chain.py's lane order): one pass plus one lane.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_row import _apply_mask, _lane_bits, _load_raw, _ordered_key, _row_block


@triton.jit
def _tile(k0, q0, L: tl.constexpr, KR: tl.constexpr, LW: tl.constexpr):
    """[KR, LW] int32 token ids of grid rows k0.. and lanes q0.."""
    return (k0 + tl.arange(0, KR))[:, None] * L + q0 + tl.arange(0, LW)[None, :]


@triton.jit
def _in_support(s, v, thr, floor):
    """bool: s in the support (thr: int32 ordered-key bound)."""
    return (s > v) & (_ordered_key(s) >= thr) & (s >= floor)


@triton.jit
def _support_pass(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, m, v, thr, floor, rec, q,
                  HAS_BITMASK: tl.constexpr, L: tl.constexpr, KR: tl.constexpr,
                  LW: tl.constexpr):
    """Write the lane records (parity q) of this program's lanes for the support; z is taken
    against the row's max m (a token below m - 87 weighs < 1e-38 of the max's: dropped). The
    loads of the next two tiles are in flight while a tile computes."""
    lz = tl.zeros((KR, LW), tl.float32)  # per tile position: mass, count, ties with v
    lc = tl.zeros((KR, LW), tl.float32)
    le = tl.zeros((KR, LW), tl.float32)
    x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(0, q0, L, KR, LW), V, HAS_BITMASK)
    x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(KR, q0, L, KR, LW), V, HAS_BITMASK)
    bits = _lane_bits(_tile(0, q0, L, KR, LW))  # the same in every tile
    for k0 in range(0, tl.cdiv(V, L), KR):
        offs = _tile(k0, q0, L, KR, LW)
        s = _apply_mask(x1, w1, bits) * inv_t
        x1, w1 = x2, w2
        x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * KR * L, V, HAS_BITMASK)
        keep = _in_support(s, v, thr, floor)
        lz += tl.where(keep, tl.exp(s - m), 0.0)
        lc += keep.to(tl.float32)
        le += (s == v).to(tl.float32)
    _write_records(rec, q, q0 + tl.arange(0, LW), tl.sum(lz, axis=0), tl.sum(lc, axis=0), tl.sum(le, axis=0), L)


@triton.jit
def _write_records(rec, q, lanes, z, cnt, ties, L: tl.constexpr):
    """Store the lane records of parity q: per lane (lanes: their ids) the support's mass z,
    its count and the count of ties with the candidate."""
    tl.store(rec + (1 + 3 * q) * L + lanes, z)
    tl.store(rec + (2 + 3 * q) * L + lanes, cnt)
    tl.store(rec + (3 + 3 * q) * L + lanes, ties)


@triton.jit
def _load_records(rec, q, m, PASS1: tl.constexpr, L: tl.constexpr):
    """Lane records of parity q -> (w [L] lane masses exp(s - m), ref [L] the reference of
    each z (pass 1: the lane max; later passes: m), z [L])."""
    j = tl.arange(0, L)
    z = tl.load(rec + (1 + 3 * q) * L + j, volatile=True)
    if PASS1:
        ref = tl.load(rec + j, volatile=True)
        w = tl.where(ref > float("-inf"), z * tl.exp(ref - m), 0.0)
    else:
        ref = tl.zeros((L,), tl.float32) + m
        w = z
    return w, ref, z


@triton.jit
def _totals(rec, q, m, PASS1: tl.constexpr, L: tl.constexpr):
    """(mass exp(s - m), count, ties) of the support the records of parity q describe."""
    j = tl.arange(0, L)
    w, ref, z = _load_records(rec, q, m, PASS1, L)
    cnt = tl.sum(tl.load(rec + (2 + 3 * q) * L + j, volatile=True), axis=0)
    eq = tl.sum(tl.load(rec + (3 + 3 * q) * L + j, volatile=True), axis=0)
    return tl.sum(w, axis=0), cnt, eq


@triton.jit
def _draw(rec, q, m, u, logits_ptr, mask_ptr, row_masked, V, inv_t, v, thr, floor,
          PASS1: tl.constexpr, HAS_BITMASK: tl.constexpr, L: tl.constexpr, KMAX: tl.constexpr):
    """Inverse-CDF draw with uniform u on the support the lane records of parity q describe
    (loaded here, so no [L] vector lives across the caller's passes): the first token, in lane
    order, whose cumulative mass exceeds u * total (int32 id)."""
    BIG = 2147483647
    j = tl.arange(0, L)
    w, ref, z = _load_records(rec, q, m, PASS1, L)
    cum = tl.cumsum(w, axis=0)  # [L]
    target = u * tl.max(cum, axis=0)
    r = tl.sum((cum <= target).to(tl.int32), axis=0)  # the first lane whose cum exceeds it
    r = tl.minimum(r, tl.max(tl.where(w > 0, j, -1), axis=0))  # against rounding at the end
    w_r = tl.sum(tl.where(j == r, w, 0.0), axis=0)
    frac = (target - tl.sum(tl.where(j < r, w, 0.0), axis=0)) / tl.where(w_r > 0, w_r, 1.0)
    t_in = tl.minimum(tl.maximum(frac, 0.0), 1.0) * tl.sum(tl.where(j == r, z, 0.0), axis=0)
    ref_r = tl.sum(tl.where(j == r, ref, 0.0), axis=0)
    offs = tl.arange(0, KMAX) * L + r  # [KMAX]: the lane's tokens, in order
    x, s = _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK)
    e = tl.where(_in_support(s, v, thr, floor), tl.exp(s - ref_r), 0.0)
    c = tl.cumsum(e, axis=0)
    first = tl.min(tl.where(c > t_in, offs, BIG), axis=0)
    last = tl.max(tl.where(e > 0, offs, -1), axis=0)
    return tl.where(first < BIG, first, last)
