"""The Triton program behind masked_sample (see masked_sampling.py for the exact semantics and
sampling_chain.py for the draw).

Grid (bs, SPLITS): a row is a [V / 1024, 1024] grid of lanes (sampling_records.py); program
(row, split) streams lanes [split * 1024 / SPLITS, ...) in tiles. With SPLITS > 1 (small
batches) the programs of one row publish per-pass results (lane records, partials) and meet at
a barrier (atomic counter per row, spin-wait); the wrapper only splits while bs * SPLITS <=
number of SMs, so every program is resident. Every program then reads all of them in the same
order, so all take the same decisions.

Passes over the row:
    1. stats: per tile position the max and normaliser of x (and of s = x / T for sampling
       rows), reduced at the end to lane records and the greedy argmax and logsumexp. One exp
       per token (two when T != 1); no noise per token. Greedy rows end here; sampling rows draw
       c_0 by inverse CDF: the lane from the lanes' cumulative masses, then the token by
       re-reading that lane. Unfiltered rows end there.
    2. test of a candidate c (filtered rows whose thresholds are unknown): count and mass of
       s > s[c], which decide whether top-k / top-p keep c, and the lane records of {s > s[c]}:
       the support of the next draw when c is rejected. Usually c_0 or c_1 is kept.
    3. rare: when a test cannot decide (top-p's normaliser over top-k's set) or the rounds run
       out, exact thresholds by a 16-way key search (sampling_search.py), and for the last
       round the lane records of what the filters keep. Min-p needs no search: its bound on s
       is max(s) + log(min_p).
Constexpr flags compile out what a batch cannot need: SAMPLE (some row samples) and FILTERS
(some row has top-k, top-p or min-p); `lo, hi` is the program's share of the row for the search.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_chain import LANES, MAX_ROUNDS
from .sampling_noise import uniform_tl
from .sampling_records import _draw, _load_records, _support_pass, _tile, _totals
from .sampling_row import (_apply_mask, _column, _exchange, _int_column, _lane_bits, _load_raw, _load_words,
                           _ordered_key, _publish, _tile_words)
from .sampling_search import _thresholds

_ROUNDS = tl.constexpr(MAX_ROUNDS)
_FLOOR = tl.constexpr(-1.0e30)  # pass 1's start for the running max (logits at or below count as disallowed)
_LANES = tl.constexpr(LANES)


@triton.jit
def _pass1_step(x, offs, lm, lz, lzs, li, inv_t, is_sampled, SAMPLE: tl.constexpr):
    """One tile of pass 1 (any tile shape): per position the running max lm (from _FLOOR), its
    first index li and the normalisers lz of x and lzs of s = x / T, one exp per token (the
    smaller of (old max, x) is scaled against the larger; two for sampling rows)."""
    top = tl.maximum(lm, x)  # >= _FLOOR
    d = tl.minimum(lm, x) - top  # <= 0; -inf for a masked token
    up = x > lm
    e = tl.exp(d)
    lz = tl.where(up, lz * e + 1.0, lz + e)
    if SAMPLE:
        if is_sampled:
            es = tl.exp(d * inv_t)
            lzs = tl.where(up, lzs * es + 1.0, lzs + es)
    return top, lz, lzs, tl.where(up, offs, li)


@triton.jit
def _pass1_totals(lm, lz, lzs, li, lanes, rec, inv_t, is_sampled, SAMPLE: tl.constexpr, L: tl.constexpr):
    """Pass 1's state (tile-shaped, any rank, axis 0 the grid rows) -> the program's max,
    normaliser and first argmax (mx, zx, ax); for a sampling row also the lane records (lanes:
    each position's lane, the tile's shape without axis 0). Word tiles come here 3-D, not
    reshaped: a tl.reshape of that state gave wrong sums on the GPU (not in the interpreter)."""
    NEG = float("-inf")
    BIG = 2147483647
    lane_m = tl.max(lm, axis=0)
    lane_a = tl.min(tl.where(lm == lane_m[None], li, BIG), axis=0)  # (-1: nothing allowed)
    lane_m = tl.where(lane_m > _FLOOR, lane_m, NEG)
    lane_ref = tl.where(lane_m == NEG, 0.0, lane_m)
    lane_z = tl.sum(lz * tl.exp(lm - lane_ref[None]), axis=0)
    if SAMPLE:
        if is_sampled:
            tl.store(rec + lanes, lane_m * inv_t)
            tl.store(rec + L + lanes, tl.sum(lzs * tl.exp((lm - lane_ref[None]) * inv_t), axis=0))
    mx = tl.max(lane_m)
    ref = tl.where(mx == NEG, 0.0, mx)
    zx = tl.sum(lane_z * tl.exp(lane_m - ref))
    ax = tl.min(tl.where(lane_m == mx, lane_a, BIG))
    return mx, zx, ax


@triton.jit(do_not_specialize=["dead_token"])
def masked_sample_kernel(logits_ptr, stride_l, mask_ptr, stride_m, has_mask_ptr, greedy_ptr,
                         temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, keys_ptr, tok_ptr, lp_ptr,
                         part_ptr, sync_ptr, rec_ptr, V, chunk, dead_token,
                         HAS_BITMASK: tl.constexpr, HAS_ROW_FLAGS: tl.constexpr,
                         HAS_GREEDY_FLAGS: tl.constexpr, SPLITS: tl.constexpr,
                         KR: tl.constexpr, KMAX: tl.constexpr, SEARCH_BLOCK: tl.constexpr,
                         NP: tl.constexpr, FILTERS: tl.constexpr, SAMPLE: tl.constexpr,
                         WORD_TILES: tl.constexpr):
    NF: tl.constexpr = 2 * NP
    L: tl.constexpr = _LANES
    LW: tl.constexpr = L // SPLITS  # lanes per program
    NEG = float("-inf")
    BIG = 2147483647
    NO_KEY = tl.full((), -2147483648, tl.int64)  # a key bound that keeps everything
    NO_KEY32 = tl.full((), -2147483648, tl.int32)
    row = tl.program_id(0)
    split = tl.program_id(1)
    logits_ptr += row.to(tl.int64) * stride_l
    mask_ptr += row.to(tl.int64) * stride_m
    rec = rec_ptr + row.to(tl.int64) * (7 * L)
    q0 = split * LW  # this program's first lane
    lo = split * chunk  # its part of the row for the threshold search
    hi = tl.minimum(lo + chunk, V)
    row_masked = 1
    if HAS_ROW_FLAGS:
        row_masked = tl.load(has_mask_ptr + row).to(tl.int32)
    temp = tl.load(temp_ptr + row).to(tl.float32)
    is_sampled = temp > 0
    if HAS_GREEDY_FLAGS:
        is_sampled = is_sampled & (tl.load(greedy_ptr + row) == 0)
    inv_t = tl.math.div_rn(1.0, tl.where(is_sampled, temp, 1.0))  # correctly rounded, as torch
    top_k = tl.load(top_k_ptr + row).to(tl.int32)
    top_p = tl.load(top_p_ptr + row).to(tl.float32)
    min_p = tl.load(min_p_ptr + row).to(tl.float32)
    key0 = tl.load(keys_ptr + row * 2).to(tl.uint32, bitcast=True)
    key1 = tl.load(keys_ptr + row * 2 + 1).to(tl.uint32, bitcast=True)
    top_k_on = is_sampled & (top_k > 0) & (top_k < V)
    top_p_on = is_sampled & (top_p < 1)

    # pass 1: per tile position, max / first argmax / normaliser of x (one exp per token: the
    # smaller of (old max, x) is scaled against the larger) and, for sampling rows, of s;
    # reduced to lane records (the workspace) and the program's totals at the end
    # lm starts at a finite floor, not -inf: a masked token (-inf) then gives d = -inf and
    # exp(d) = 0, never -inf - -inf, so no select per token; floors left are -inf again below
    if WORD_TILES and LW >= 32:  # [KR, words, 32] tiles: each thread loads a bitmask word once
        NW: tl.constexpr = LW // 32
        lm3 = tl.full((KR, NW, 32), _FLOOR, tl.float32)
        lz3 = tl.zeros((KR, NW, 32), tl.float32)
        lzs3 = tl.zeros((KR, NW, 32), tl.float32)
        li3 = tl.full((KR, NW, 32), -1, tl.int32)
        x1, w1 = _load_words(logits_ptr, mask_ptr, row_masked, 0, q0, V, HAS_BITMASK, L, KR, NW)
        x2, w2 = _load_words(logits_ptr, mask_ptr, row_masked, KR, q0, V, HAS_BITMASK, L, KR, NW)
        bits3 = (1 << tl.arange(0, 32))[None, None, :]
        for k0 in range(0, tl.cdiv(V, L), KR):
            x = tl.where((w1 & bits3) != 0, x1, NEG)
            x1, w1 = x2, w2
            x2, w2 = _load_words(logits_ptr, mask_ptr, row_masked, k0 + 2 * KR, q0, V, HAS_BITMASK, L, KR, NW)
            lm3, lz3, lzs3, li3 = _pass1_step(x, _tile_words(k0, q0, L, KR, NW), lm3, lz3, lzs3, li3, inv_t,
                                              is_sampled, SAMPLE)
        lanes3 = q0 + tl.arange(0, NW)[:, None] * 32 + tl.arange(0, 32)[None, :]  # [NW, 32]
        mx, zx, ax = _pass1_totals(lm3, lz3, lzs3, li3, lanes3, rec, inv_t, is_sampled, SAMPLE, L)
    else:
        lm = tl.full((KR, LW), _FLOOR, tl.float32)
        lz = tl.zeros((KR, LW), tl.float32)
        lzs = tl.zeros((KR, LW), tl.float32)
        li = tl.full((KR, LW), -1, tl.int32)
        # the loads of the next two tiles are in flight while a tile computes (a software
        # pipeline: the loaded values are carried unused until their turn)
        x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(0, q0, L, KR, LW), V, HAS_BITMASK)
        x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, _tile(KR, q0, L, KR, LW), V, HAS_BITMASK)
        bits = _lane_bits(_tile(0, q0, L, KR, LW))  # the same in every tile
        for k0 in range(0, tl.cdiv(V, L), KR):
            offs = _tile(k0, q0, L, KR, LW)
            x = _apply_mask(x1, w1, bits)
            x1, w1 = x2, w2
            x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * KR * L, V, HAS_BITMASK)
            lm, lz, lzs, li = _pass1_step(x, offs, lm, lz, lzs, li, inv_t, is_sampled, SAMPLE)
        mx, zx, ax = _pass1_totals(lm, lz, lzs, li, q0 + tl.arange(0, LW), rec, inv_t, is_sampled, SAMPLE, L)
    nb = tl.zeros((), tl.int32) + 1  # barriers passed
    if SPLITS > 1:
        f = tl.arange(0, NF)
        rec1 = tl.where(f == 0, mx, tl.where(f == 1, zx,
                        tl.where(f == 2, ax.to(tl.float32, bitcast=True), 0.0)))
        base = _exchange(part_ptr, sync_ptr, row, split, nb, rec1, SPLITS, NF)  # publishes records too
        r_mx = _column(base, 0, SPLITS, NF)
        mx = tl.max(r_mx, axis=0)
        ref = tl.where(mx == NEG, 0.0, mx)
        zx = tl.sum(_column(base, 1, SPLITS, NF) * tl.exp(r_mx - ref), axis=0)
        ax = tl.min(tl.where(r_mx == mx, _int_column(base, 2, SPLITS, NF), BIG), axis=0)
    else:
        tl.debug_barrier()

    token = ax
    if SAMPLE:  # (not compiled when the caller promises greedy rows only)
        if is_sampled & (mx > NEG):
            m = mx * inv_t  # max of s (multiplying by inv_t > 0 is monotone)
            zs = tl.sum(_load_records(rec, 0, m, True, L)[0], axis=0)  # allowed mass, exp(s - m)
            c = _draw(rec, 0, m, uniform_tl(key0, key1, tl.full((), 0, tl.uint32)), logits_ptr, mask_ptr,
                      row_masked, V, inv_t, NEG, NO_KEY32, NEG, True, HAS_BITMASK, L, KMAX)
            if FILTERS:  # rejection rounds (not compiled when no row has a filter)
                floor = tl.where(min_p > 0, m + tl.log(tl.maximum(min_p, 1e-38)), NEG)  # min-p bound
                known = tl.where(top_k_on | top_p_on, 0, 1)  # are K's thresholds known? (min-p's is)
                thr = NO_KEY  # K = {ordered key of s >= thr, s >= floor}
                n = tl.zeros((), tl.int32)  # the round of candidate c
                q = tl.zeros((), tl.int32)  # parity of the newest records
                # state 0: c is a candidate; 2: the rounds ran out, draw on K; 1: c is the token
                state = tl.where(top_k_on | top_p_on | (floor > NEG), 0, 1)
                while state != 1:
                    v = tl.load(logits_ptr + c).to(tl.float32) * inv_t
                    in_k = (_ordered_key(v).to(tl.int64) >= thr) & (v >= floor)
                    if (state == 0) & (known != 0) & in_k:
                        state = state * 0 + 1
                    else:
                        # one pass (one call site keeps the registers down): the support {s > v}
                        # (c's test, and the next draw's support), or K itself (state 2)
                        last = state == 2
                        pv = tl.where(last, NEG, v)
                        pthr = tl.where(last, thr, NO_KEY).to(tl.int32)
                        pfloor = tl.where(last, floor, NEG)
                        q = 1 - q
                        _support_pass(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, m, pv, pthr,
                                      pfloor, rec, q, HAS_BITMASK, L, KR, LW)
                        nb += 1
                        _publish(sync_ptr, row, nb, SPLITS)
                        mass_gt, cnt, eq = _totals(rec, q, m, False, L)
                        draw = last
                        if state == 0:
                            accepted = in_k & (known != 0)
                            if known == 0:
                                mass_ge = mass_gt + eq * tl.exp(v - m)
                                kept_k = (top_k_on == 0) | (cnt < top_k)
                                # top-p's normaliser is top-k's kept mass z_k; with c inside
                                # top-k, mass_ge <= z_k <= zs, so some cases need z_k itself
                                sure_p = ((top_p_on == 0) | (cnt == 0)
                                          | (mass_gt < top_p * tl.where(top_k_on, mass_ge, zs)))
                                dropped = ((kept_k == 0) | (top_p_on & (cnt > 0) & (mass_gt >= top_p * zs))
                                           | (v < floor))
                                accepted = kept_k & sure_p & (v >= floor)
                                undecided = (accepted | dropped) == 0
                                # the exact thresholds: for an undecided c, or for the draw on K
                                if undecided | (dropped & (n + 1 >= _ROUNDS)):
                                    thr, nb = _thresholds(logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo,
                                                          hi, v, cnt, mass_gt, zs, top_k, top_p, top_k_on,
                                                          top_p_on, part_ptr, sync_ptr, row, split, nb,
                                                          HAS_BITMASK, SPLITS, NP, SEARCH_BLOCK)
                                    known = known * 0 + 1
                                    accepted = accepted | (undecided & (_ordered_key(v).to(tl.int64) >= thr)
                                                           & (v >= floor))
                            if accepted:
                                state = state * 0 + 1
                            elif n + 1 < _ROUNDS:  # redraw on {s > v}: K is an upper set without c
                                n += 1
                                draw = draw | True
                            else:  # the rounds ran out (K's thresholds are known): the next pass is K
                                state = state * 0 + 2
                        if draw:
                            u = uniform_tl(key0, key1, tl.where(last, _ROUNDS, n).to(tl.uint32))
                            c = _draw(rec, q, m, u, logits_ptr, mask_ptr, row_masked, V, inv_t, pv, pthr,
                                      pfloor, False, HAS_BITMASK, L, KMAX)
                            if last:
                                state = state * 0 + 1
            token = c

    if SPLITS > 1:
        # every program has passed its last barrier once it counts itself done; the last one
        # resets both counters for the next call
        done = tl.atomic_add(sync_ptr + row * 2 + 1, 1, sem="acq_rel")
        if done == SPLITS - 1:
            tl.atomic_xchg(sync_ptr + row * 2, 0)
            tl.atomic_xchg(sync_ptr + row * 2 + 1, 0)
    if split == 0:
        is_dead = mx == NEG
        lse = mx + tl.log(tl.where(is_dead, 1.0, zx))
        safe_tok = tl.where(is_dead, 0, token)
        x_tok = tl.load(logits_ptr + safe_tok).to(tl.float32)
        tl.store(tok_ptr + row, tl.where(is_dead, dead_token, token).to(tl.int64))
        tl.store(lp_ptr + row, tl.where(is_dead, NEG, x_tok - lse))
