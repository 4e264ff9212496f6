"""The Triton program behind masked_sample (see masked_sampling.py for the exact semantics and
sampling_chain.py for the draw).

Grid (bs, SPLITS): a row is a [V / 1024, 1024] grid of lanes (sampling_records.py); program
(row, split) streams lanes [split * 1024 / SPLITS, ...) in tiles. With SPLITS > 1 (small
batches) the programs of one row publish per-pass results (lane records, partials) and meet at
a barrier (atomic counter per row, spin-wait); the wrapper only splits while bs * SPLITS <=
number of SMs, so every program is resident. Every program then reads all of them in the same
order, so all take the same decisions.

Passes over the row:
    1. stats (sampling_pass1.py): per tile position the max and normaliser of x (and of
       s = x / T for sampling rows), reduced at the end to lane records and the greedy argmax
       and logsumexp. One exp per token (two for sampling rows); no noise per token; a variant
       per row kind (branch per program). Greedy rows end here; sampling rows draw
       c_0 by inverse CDF: the lane from the lanes' cumulative masses, then the token by
       re-reading that lane. Unfiltered rows end there.
    2. test of a candidate c (filtered rows whose thresholds are unknown): count and mass of
       s > s[c], which decide whether top-k / top-p keep c, and the lane records of {s > s[c]}:
       the support of the next draw when c is rejected. Usually c_0 or c_1 is kept. Whole-row
       programs (LISTS) answer it from each tile position's top three values, stored by pass 1
       (sampling_lists.py), plus a re-read of the few positions whose list may miss a token
       above s[c]: usually no second pass over the row.
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
from .sampling_lists import _LEVELS, MAX_UNLISTED, _list_pass, _unlisted
from .sampling_noise import uniform_tl
from .sampling_pass1 import _pass1
from .sampling_records import _draw, _load_records, _support_pass, _totals
from .sampling_row import _column, _exchange, _int_column, _ordered_key, _publish
from .sampling_search import _thresholds

_ROUNDS = tl.constexpr(MAX_ROUNDS)
_LANES = tl.constexpr(LANES)
_UNLISTED = tl.constexpr(MAX_UNLISTED)


@triton.jit(do_not_specialize=["dead_token"])
def masked_sample_kernel(logits_ptr, stride_l, mask_ptr, stride_m, has_mask_ptr, greedy_ptr,
                         temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, keys_ptr, tok_ptr, lp_ptr,
                         part_ptr, sync_ptr, rec_ptr, lists_ptr, V, chunk, dead_token,
                         HAS_BITMASK: tl.constexpr, HAS_ROW_FLAGS: tl.constexpr,
                         HAS_GREEDY_FLAGS: tl.constexpr, SPLITS: tl.constexpr,
                         KR: tl.constexpr, KMAX: tl.constexpr, SEARCH_BLOCK: tl.constexpr,
                         NP: tl.constexpr, FILTERS: tl.constexpr, SAMPLE: tl.constexpr,
                         WORD_TILES: tl.constexpr, LISTS: tl.constexpr, KPOS: tl.constexpr):
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
    lists = lists_ptr + row.to(tl.int64) * (_LEVELS * KR * L)  # (LISTS: SPLITS == 1; sampling_lists.py)
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

    # pass 1 (sampling_pass1.py): a sampling row's variant carries s's normaliser and no
    # argmax, a greedy row's the argmax only; a whole-row filtered program also keeps lists
    WORDS: tl.constexpr = WORD_TILES and LW >= 32
    if SAMPLE:
        if is_sampled:
            mx, zx, ax, xl = _pass1(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, rec, lists, HAS_BITMASK,
                                    True, False, LISTS, WORDS, L, KR, LW)
        else:
            mx, zx, ax, xl = _pass1(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, rec, lists, HAS_BITMASK,
                                    False, True, False, WORDS, L, KR, LW)
    else:
        mx, zx, ax, xl = _pass1(logits_ptr, mask_ptr, row_masked, q0, V, inv_t, rec, lists, HAS_BITMASK,
                                False, True, False, WORDS, L, KR, LW)
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
                        listed = state < 0  # (false) do the lists (and a few positions) do?
                        if LISTS:
                            listed = state == 0
                            if listed & (v <= xl * inv_t):
                                listed = tl.sum(_unlisted(lists, inv_t, v, L, KR).to(tl.int32)) <= _UNLISTED
                        if listed:  # a few KB instead of the row
                            _list_pass(lists, inv_t, m, v, rec, q, logits_ptr, mask_ptr, row_masked, V,
                                       HAS_BITMASK, L, KR, KPOS)
                        else:
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
