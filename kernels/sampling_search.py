"""Exact top-k / top-p thresholds for the masked-sampling kernel (sampling_kernel.py), used only
when a candidate's test cannot tell whether the filters keep it (top-p's normaliser over top-k's
set) or when the rejection rounds run out: a 16-way search over the ordered float keys of s,
~8 passes over the row per threshold. Compute-bound, and rare."""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_row import _exchange, _ordered_key, _records, _row_block

NUM_PIVOTS = 16  # pivots per search pass: the key range shrinks 17x per pass
RECORD = 2 * NUM_PIVOTS  # float32 fields per program and pass in the exchange workspace


@triton.jit
def _threshold_search(logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi, lo_key, hi_key, lo_mass,
                      target, part_ptr, sync_ptr, row, split, nb, BY_COUNT: tl.constexpr,
                      HAS_BITMASK: tl.constexpr, SPLITS: tl.constexpr, NP: tl.constexpr,
                      SEARCH_BLOCK: tl.constexpr):
    """The largest ordered key in [lo_key, hi_key] whose count (BY_COUNT) or mass exp(s - m) of
    keys >= it still reaches target (true at lo_key). NP pivots per pass over the row, so the
    range shrinks (NP + 1)-fold per pass. Returns (key, mass of keys >= key, barriers passed)."""
    NF: tl.constexpr = 2 * NP
    i = tl.arange(0, NP) + 1
    while lo_key < hi_key:
        piv = lo_key + ((hi_key - lo_key) * i + NP) // (NP + 1)  # [NP] increasing, in (lo, hi]
        piv32 = piv.to(tl.int32)  # keys are int32; the arithmetic above needs 64 bits
        ac = tl.zeros((SEARCH_BLOCK, NP), tl.float32)  # per lane and pivot: count, mass above
        am = tl.zeros((SEARCH_BLOCK, NP), tl.float32)
        for start in range(lo, hi, SEARCH_BLOCK):
            offs = start + tl.arange(0, SEARCH_BLOCK)
            x, s = _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK)
            above = (_ordered_key(s)[:, None] >= piv32[None, :]) & (s > float("-inf"))[:, None]
            ac += above.to(tl.float32)
            am += tl.where(above, tl.exp(s - m)[:, None], 0.0)
        pc = tl.sum(ac, axis=0)  # [NP]
        pm = tl.sum(am, axis=0)
        if SPLITS > 1:
            f = tl.arange(0, NF)
            nb += 1
            both = tl.sum(tl.where(f[:, None] == i[None, :] - 1, pc[None, :], 0.0)
                          + tl.where(f[:, None] == i[None, :] - 1 + NP, pm[None, :], 0.0),
                          axis=1)  # [NF]: counts, then masses
            base = _exchange(part_ptr, sync_ptr, row, split, nb, both, SPLITS, NF)
            tot = tl.sum(_records(base, SPLITS, NF), axis=0)  # [NF]
            pc = tl.sum(tl.where(f[None, :] == i[:, None] - 1, tot[None, :], 0.0), axis=1)
            pm = tl.sum(tl.where(f[None, :] == i[:, None] - 1 + NP, tot[None, :], 0.0), axis=1)
        if BY_COUNT:
            ok = pc >= target
        else:
            ok = pm >= target
        n_ok = tl.sum(ok.to(tl.int32), axis=0)  # ok holds on a prefix of the pivots
        lo_mass = tl.where(n_ok > 0, tl.sum(tl.where(i == n_ok, pm, 0.0), axis=0), lo_mass)
        new_hi = tl.sum(tl.where(i == n_ok + 1, piv, 0), axis=0) - 1
        lo_key = tl.where(n_ok > 0, tl.sum(tl.where(i == n_ok, piv, 0), axis=0), lo_key)
        hi_key = tl.where(n_ok < NP, new_hi, hi_key)
    return lo_key, lo_mass, nb


@triton.jit
def _thresholds(logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi, v, cnt, mass_gt, zs,
                top_k, top_p, top_k_on, top_p_on, part_ptr, sync_ptr, row, split, nb,
                HAS_BITMASK: tl.constexpr, SPLITS: tl.constexpr, NP: tl.constexpr,
                SEARCH_BLOCK: tl.constexpr):
    """(key, barriers passed): top-k and top-p keep the ordered keys >= key. A candidate of value
    v, with cnt tokens and mass mass_gt strictly above it, brackets each search where it can:
    top-k first, then top-p on the mass top-k keeps (zs: the whole row's mass)."""
    thr = tl.full((), -2147483648, tl.int64)
    v_key = _ordered_key(v).to(tl.int64)
    m_key = _ordered_key(m).to(tl.int64)
    zk = zs
    if top_k_on:
        out = cnt >= top_k
        thr, zk, nb = _threshold_search(
            logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi, tl.where(out, v_key + 1, thr),
            tl.where(out, m_key, v_key), tl.where(out, mass_gt, zs), top_k.to(tl.float32),
            part_ptr, sync_ptr, row, split, nb, True, HAS_BITMASK, SPLITS, NP, SEARCH_BLOCK)
    if top_p_on:
        out = (top_k_on == 0) & (mass_gt >= top_p * zs)
        inside = (top_k_on == 0) & (mass_gt < top_p * zs)
        thr, zk, nb = _threshold_search(
            logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi, tl.where(out, v_key + 1, thr),
            tl.where(inside, v_key, m_key), zk, top_p * zk, part_ptr, sync_ptr, row, split, nb,
            False, HAS_BITMASK, SPLITS, NP, SEARCH_BLOCK)
    return thr, nb
