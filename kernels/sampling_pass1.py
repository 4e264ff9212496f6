"""Pass 1 of the masked-sampling kernel (sampling_kernel.py): one stream over the program's
lanes that gives the row's max, normaliser and first argmax of x and, for a sampling row, the
lane records of s = x / T (sampling_records.py) and, for a whole-row filtered program, each
tile position's top three values (sampling_lists.py).

Two tile shapes: [KR, words, 32] (each thread loads a bitmask word once; needs >= 32 lanes per
program) and [KR, lanes]. The running max starts at a finite floor, not -inf: a masked token
(-inf) then gives exp(-inf) = 0, never -inf - -inf, so no select per token (so logits at or
below the floor count as disallowed). SCALED (a sampling row: the normaliser of s) and ARGMAX
(a greedy row: the first index of the max) are compile-time, so a program's loop carries only
what its row needs; the kernel picks the variant per row (a branch per program, not per token).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_lists import _store_lists
from .sampling_records import _tile
from .sampling_row import _apply_mask, _lane_bits, _load_raw, _load_words, _tile_words

FLOOR = -1.0e30  # pass 1's start for the running max
_FLOOR = tl.constexpr(FLOOR)


@triton.jit
def _pass1_step(x, offs, lm, lz, lzs, li, l1, l2, t2, SCALED: tl.constexpr, ARGMAX: tl.constexpr,
                LISTS: tl.constexpr):
    """One tile (any shape): per position the running max lm, the normalisers lz of x and lzs
    of s (SCALED; t2 = log2(e) / T) and the first index li of the max (ARGMAX); one exp per
    token and normaliser (the smaller of (old max, x) is scaled against the larger). LISTS: x
    also goes into the position's top three lm >= l1 >= l2 (ties kept)."""
    top = tl.maximum(lm, x)  # >= _FLOOR
    low = tl.minimum(lm, x)
    d = low - top  # <= 0; -inf for a masked token
    up = x > lm
    lz = tl.where(up, lz * tl.exp(d) + 1.0, lz + tl.exp(d))
    if SCALED:
        es = tl.math.exp2(d * t2)  # exp(d / T) with one multiply
        lzs = tl.where(up, lzs * es + 1.0, lzs + es)
    if ARGMAX:
        li = tl.where(up, offs, li)
    if LISTS:
        l2 = tl.maximum(l2, tl.minimum(l1, x))
        l1 = tl.maximum(l1, low)
    return top, lz, lzs, li, l1, l2


@triton.jit
def _pass1_totals(lm, lz, lzs, li, lanes, rec, inv_t, SCALED: tl.constexpr, ARGMAX: tl.constexpr,
                  L: tl.constexpr):
    """Pass 1's state (tile-shaped, any rank, axis 0 the grid rows) -> the program's max,
    normaliser and first argmax (mx, zx, ax; ax -1 without ARGMAX); with SCALED also the lane
    records (lanes: each position's lane, the tile's shape without axis 0). Word tiles come here
    3-D, not reshaped: a tl.reshape of that state gave wrong sums on the GPU (not in the
    interpreter)."""
    NEG = float("-inf")
    BIG = 2147483647
    lane_m = tl.max(lm, axis=0)
    lane_a = tl.zeros_like(lane_m).to(tl.int32) - 1
    if ARGMAX:
        lane_a = tl.min(tl.where(lm == lane_m[None], li, BIG), axis=0)  # (-1: nothing allowed)
    lane_m = tl.where(lane_m > _FLOOR, lane_m, NEG)
    lane_ref = tl.where(lane_m == NEG, 0.0, lane_m)
    lane_z = tl.sum(lz * tl.exp(lm - lane_ref[None]), axis=0)
    if SCALED:
        tl.store(rec + lanes, lane_m * inv_t)
        tl.store(rec + L + lanes, tl.sum(lzs * tl.exp((lm - lane_ref[None]) * inv_t), axis=0))
    mx = tl.max(lane_m)
    ref = tl.where(mx == NEG, 0.0, mx)
    zx = tl.sum(lane_z * tl.exp(lane_m - ref))
    ax = tl.zeros((), tl.int32) - 1
    if ARGMAX:
        ax = tl.min(tl.where(lane_m == mx, lane_a, BIG))
    return mx, zx, ax


@triton.jit
def _pass1(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, rec, lists, HAS_BITMASK: tl.constexpr,
           SCALED: tl.constexpr, ARGMAX: tl.constexpr, LISTS: tl.constexpr, WORDS: tl.constexpr,
           L: tl.constexpr, KR: tl.constexpr, LW: tl.constexpr):
    """-> (mx, zx, ax, xl): the program's max, normaliser, first argmax of x and (LISTS) the
    lists' largest last level (else the floor). The loads of the next two tiles are in flight
    while a tile computes (carried unused until their turn)."""
    NEG = float("-inf")
    xl = tl.zeros((), tl.float32) + _FLOOR
    t2 = inv_t * 1.4426950408889634  # log2(e) / T
    if WORDS:  # [KR, NW, 32] tiles
        NW: tl.constexpr = LW // 32
        lm = tl.full((KR, NW, 32), _FLOOR, tl.float32)
        lz = tl.zeros((KR, NW, 32), tl.float32)
        lzs = tl.zeros((KR, NW, 32), tl.float32)
        li = tl.full((KR, NW, 32), -1, tl.int32)
        l1 = tl.full((KR, NW, 32), _FLOOR, tl.float32)  # (LISTS) the two values below lm
        l2 = tl.full((KR, NW, 32), _FLOOR, tl.float32)
        x1, w1 = _load_words(logits_ptr, mask_ptr, row_masked, 0, q0, V, HAS_BITMASK, L, KR, NW)
        x2, w2 = _load_words(logits_ptr, mask_ptr, row_masked, KR, q0, V, HAS_BITMASK, L, KR, NW)
        bits = (1 << tl.arange(0, 32))[None, None, :]
        for k0 in range(0, tl.cdiv(V, L), KR):
            x = tl.where((w1 & bits) != 0, x1, NEG)
            x1, w1 = x2, w2
            x2, w2 = _load_words(logits_ptr, mask_ptr, row_masked, k0 + 2 * KR, q0, V, HAS_BITMASK, L, KR, NW)
            lm, lz, lzs, li, l1, l2 = _pass1_step(x, _tile_words(k0, q0, L, KR, NW), lm, lz, lzs, li, l1, l2,
                                                  t2, SCALED, ARGMAX, LISTS)
        if LISTS:
            xl = _store_lists(lists, _tile_words(0, q0, L, KR, NW), lm, l1, l2, KR * L)
        lanes = q0 + tl.arange(0, NW)[:, None] * 32 + tl.arange(0, 32)[None, :]  # [NW, 32]
        mx, zx, ax = _pass1_totals(lm, lz, lzs, li, lanes, rec, inv_t, SCALED, ARGMAX, L)
    else:  # [KR, LW] tiles
        lm = tl.full((KR, LW), _FLOOR, tl.float32)
        lz = tl.zeros((KR, LW), tl.float32)
        lzs = tl.zeros((KR, LW), tl.float32)
        li = tl.full((KR, LW), -1, tl.int32)
        l1 = tl.full((KR, LW), _FLOOR, tl.float32)
        l2 = tl.full((KR, LW), _FLOOR, tl.float32)
        x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(0, q0, L, KR, LW), V, HAS_BITMASK)
        x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(KR, q0, L, KR, LW), V, HAS_BITMASK)
        bits = _lane_bits(_tile(0, q0, L, KR, LW))  # the same in every tile
        for k0 in range(0, tl.cdiv(V, L), KR):
            offs = _tile(k0, q0, L, KR, LW)
            x = _apply_mask(x1, w1, bits)
            x1, w1 = x2, w2
            x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * KR * L, V, HAS_BITMASK)
            lm, lz, lzs, li, l1, l2 = _pass1_step(x, offs, lm, lz, lzs, li, l1, l2, t2, SCALED, ARGMAX, LISTS)
        if LISTS:
            xl = _store_lists(lists, _tile(0, q0, L, KR, LW), lm, l1, l2, KR * L)
        mx, zx, ax = _pass1_totals(lm, lz, lzs, li, q0 + tl.arange(0, LW), rec, inv_t, SCALED, ARGMAX, L)
    return mx, zx, ax, xl
