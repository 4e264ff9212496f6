"""Records and the inverse-CDF draw of the masked-sampling kernel (sampling_kernel.py).

A row is cut into records of REC = BLOCK * RPB consecutive tokens (record r holds tokens
[r * REC, (r + 1) * REC); the program that streams them writes their records). Workspace row
rec [7, RMAX] float32 (RMAX: a power of two >= the number of records NR):
    rec[0, r]           bm: max of s over the record (pass 1)
    rec[1 + 3q, r]      z: sum of exp(s - ref) over the record's tokens in the current support
                        (ref: bm in pass 1, before the row's max m is known; m afterwards)
    rec[2 + 3q, r]      count of the record's tokens in the support
    rec[3 + 3q, r]      count of the record's tokens with s == v (the candidate's value)
q alternates between support passes: a slow program may still read the last records while a
fast one writes the next (the barrier between them orders every other reuse).

The support of a pass is {s > v, ordered key of s >= thr, s >= floor} (v = -inf: every allowed
token). A draw picks the record by the cumulative masses of all records, then the token by
re-reading that one record: one pass over the row plus REC tokens.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_row import _apply_mask, _load_raw, _ordered_key, _row_block


@triton.jit
def _in_support(s, v, thr, floor):
    """[BLOCK] bool: s in the support (thr: int32 ordered-key bound)."""
    return (s > v) & (_ordered_key(s) >= thr) & (s >= floor)


@triton.jit
def _support_pass(logits_ptr, mask_ptr, row_masked, lo, hi, inv_t, m, v, thr, floor, rec, q,
                  HAS_BITMASK: tl.constexpr, BLOCK: tl.constexpr, RPB: tl.constexpr,
                  RMAX: tl.constexpr):
    """Write the records (parity q) of this program's tokens [lo, hi) for the support; z is
    taken against the row's max m (a token below m - 87 weighs < 1e-38 of the max's; it is
    dropped). The loads of the next two blocks are in flight while a block computes."""
    ar = tl.arange(0, BLOCK)
    lz = tl.zeros((BLOCK,), tl.float32)  # per lane: mass, count, ties with v
    lc = tl.zeros((BLOCK,), tl.float32)
    le = tl.zeros((BLOCK,), tl.float32)
    x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + ar, hi, HAS_BITMASK)
    x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + BLOCK + ar, hi, HAS_BITMASK)
    for start in range(lo, hi, BLOCK):
        offs = start + ar
        s = _apply_mask(x1, w1, offs) * inv_t
        x1, w1 = x2, w2
        x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * BLOCK, hi, HAS_BITMASK)
        keep = _in_support(s, v, thr, floor)
        lz += tl.where(keep, tl.exp(s - m), 0.0)
        lc += keep.to(tl.float32)
        le += (s == v).to(tl.float32)
        if ((start // BLOCK) % RPB == RPB - 1) | (start + BLOCK >= hi):  # a record ends
            ri = start // (BLOCK * RPB)
            tl.store(rec + (1 + 3 * q) * RMAX + ri, tl.sum(lz, axis=0))
            tl.store(rec + (2 + 3 * q) * RMAX + ri, tl.sum(lc, axis=0))
            tl.store(rec + (3 + 3 * q) * RMAX + ri, tl.sum(le, axis=0))
            lz = tl.zeros((BLOCK,), tl.float32)
            lc = tl.zeros((BLOCK,), tl.float32)
            le = tl.zeros((BLOCK,), tl.float32)


@triton.jit
def _load_records(rec, q, NR, m, PASS1: tl.constexpr, RMAX: tl.constexpr):
    """Records of parity q -> (w [RMAX] record masses exp(s - m), bm [RMAX] the reference of
    each z (pass 1: the record's max; later passes: m), z [RMAX], count, ties): sum(w) is the
    support's mass, count its size."""
    j = tl.arange(0, RMAX)
    ok = j < NR
    z = tl.load(rec + (1 + 3 * q) * RMAX + j, mask=ok, other=0.0, volatile=True)
    cnt = tl.sum(tl.load(rec + (2 + 3 * q) * RMAX + j, mask=ok, other=0.0, volatile=True), axis=0)
    eq = tl.sum(tl.load(rec + (3 + 3 * q) * RMAX + j, mask=ok, other=0.0, volatile=True), axis=0)
    if PASS1:
        bm = tl.load(rec + j, mask=ok, other=float("-inf"), volatile=True)
        w = tl.where(bm > float("-inf"), z * tl.exp(bm - m), 0.0)
    else:
        bm = tl.zeros((RMAX,), tl.float32) + m
        w = z
    return w, bm, z, cnt, eq


@triton.jit
def _draw(w, bm, z, u, logits_ptr, mask_ptr, row_masked, V, inv_t, v, thr, floor,
          HAS_BITMASK: tl.constexpr, BLOCK: tl.constexpr, RPB: tl.constexpr, RMAX: tl.constexpr):
    """Inverse-CDF draw with uniform u on the support the records (w, bm, z) describe: the
    first token whose cumulative mass exceeds u * total (int32 token id)."""
    REC: tl.constexpr = BLOCK * RPB
    BIG = 2147483647
    j = tl.arange(0, RMAX)
    cum = tl.cumsum(w, axis=0)  # [RMAX]
    target = u * tl.max(cum, axis=0)
    r = tl.sum((cum <= target).to(tl.int32), axis=0)  # the first record whose cum exceeds it
    r = tl.minimum(r, tl.max(tl.where(w > 0, j, -1), axis=0))  # against rounding at the end
    w_r = tl.sum(tl.where(j == r, w, 0.0), axis=0)
    frac = (target - tl.sum(tl.where(j < r, w, 0.0), axis=0)) / tl.where(w_r > 0, w_r, 1.0)
    t_in = tl.minimum(tl.maximum(frac, 0.0), 1.0) * tl.sum(tl.where(j == r, z, 0.0), axis=0)
    bm_r = tl.sum(tl.where(j == r, bm, 0.0), axis=0)
    acc = 0.0  # mass of the record's earlier blocks, relative to bm_r
    tok = -1
    last = -1
    ar = tl.arange(0, BLOCK)
    for b in tl.static_range(RPB):
        offs = r * REC + b * BLOCK + ar
        x, s = _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK)
        e = tl.where(_in_support(s, v, thr, floor), tl.exp(s - bm_r), 0.0)
        c = tl.cumsum(e, axis=0) + acc
        first = tl.min(tl.where(c > t_in, offs, BIG), axis=0)
        tok = tl.where((tok < 0) & (first < BIG), first, tok)
        last = tl.maximum(last, tl.max(tl.where(e > 0, offs, -1), axis=0))
        acc = tl.max(c, axis=0)
    return tl.where(tok < 0, last, tok)
