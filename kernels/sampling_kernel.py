"""The Triton program behind masked_sample (see masked_sampling.py for the exact semantics).

Grid (bs, SPLITS): program (row, split) streams the chunk [split * chunk, (split + 1) * chunk)
of its row. With SPLITS > 1 (small batches) the programs of one row exchange per-pass partial
results through a workspace and meet at a barrier (atomic counter per row, spin-wait); the
wrapper only splits while bs * SPLITS <= number of SMs, so every program is resident. Every
program then combines all partials in the same order, so all take the same decisions.

Passes over the row:
    1. stats: max / argmax / logsumexp of x (greedy token, logprob), and for sampling rows the
       Gumbel winner c0 over all allowed tokens, max and normaliser of s = x / T.
       Greedy rows and plain-temperature rows end here (one pass).
    2. candidate chain (top-k / top-p rows): count and mass of s strictly above s[c], and the
       Gumbel winner among s > s[c]. The filters keep an upper set of s, so c kept => c is
       the answer (exact, no threshold); c dropped => that winner is the next candidate.
       Usually one or two passes.
    3+. after 4 candidates, or when top-p's normaliser over top-k's set is needed: exact
       thresholds by a 16-way search over the ordered float keys (~8 passes each; top-k
       first, then top-p on top-k's mass), then one Gumbel-max pass over the kept tokens.
       Min-p needs no search: its threshold is max(s) + log(min_p) (a dropped c0 with min-p
       alone costs one redraw pass).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_noise import gumbel_tl
from .sampling_row import _load_raw, _apply_mask, _ordered_key, _exchange, _column, _int_column, _records, _row_block

NUM_PIVOTS = 16  # pivots per search pass: the key range shrinks 17x per pass
RECORD = 2 * NUM_PIVOTS  # float32 fields per program and pass in the workspace


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


@triton.jit(do_not_specialize=["dead_token"])
def masked_sample_kernel(logits_ptr, stride_l, mask_ptr, stride_m, has_mask_ptr, greedy_ptr,
                         temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, keys_ptr, tok_ptr, lp_ptr,
                         part_ptr, sync_ptr, V, chunk, dead_token,
                         HAS_BITMASK: tl.constexpr, HAS_ROW_FLAGS: tl.constexpr,
                         HAS_GREEDY_FLAGS: tl.constexpr, SPLITS: tl.constexpr,
                         BLOCK: tl.constexpr, SEARCH_BLOCK: tl.constexpr, NP: tl.constexpr,
                         FAST_LOG: tl.constexpr, FILTERS: tl.constexpr):
    # Every pass keeps per-lane accumulators ([BLOCK] or [SEARCH_BLOCK, NP]) and reduces across
    # lanes once at its end: no cross-warp reduction inside the streaming loops.
    NF: tl.constexpr = 2 * NP
    MAX_CHAIN: tl.constexpr = 4  # candidates tested (a pass each) before the threshold search
    NEG = float("-inf")
    BIG = 2147483647
    row = tl.program_id(0)
    split = tl.program_id(1)
    logits_ptr += row.to(tl.int64) * stride_l
    mask_ptr += row.to(tl.int64) * stride_m
    lo = split * chunk
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
    if not FILTERS:  # the caller promises no top-k / top-p row: their passes are not compiled
        top_k_on = top_k_on & (V < 0)
        top_p_on = top_p_on & (V < 0)

    # pass 1: per lane, max / first argmax / normaliser of x; for sampling rows the Gumbel
    # winner (s + g, index, s) and, for top-p rows, the normaliser of s
    lm = tl.full((BLOCK,), NEG, tl.float32)
    lz = tl.zeros((BLOCK,), tl.float32)
    li = tl.full((BLOCK,), -1, tl.int32)
    bv = tl.full((BLOCK,), NEG, tl.float32)
    bi = tl.full((BLOCK,), -1, tl.int32)
    bs = tl.full((BLOCK,), NEG, tl.float32)
    lzs = tl.zeros((BLOCK,), tl.float32)
    # the loads of the next two blocks are in flight while a block computes (a software
    # pipeline: the loaded values are carried unused until their turn)
    ar = tl.arange(0, BLOCK)
    x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + ar, hi, HAS_BITMASK)
    x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + BLOCK + ar, hi, HAS_BITMASK)
    for start in range(lo, hi, BLOCK):
        offs = start + ar
        x = _apply_mask(x1, w1, offs)
        x1, w1 = x2, w2
        x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * BLOCK, hi, HAS_BITMASK)
        new = tl.maximum(lm, x)
        ref = tl.where(new == NEG, 0.0, new)
        lz = lz * tl.exp(lm - ref) + tl.exp(x - ref)
        li = tl.where(x > lm, offs, li)
        if is_sampled:
            s = x * inv_t
            if top_p_on:
                sref = ref * inv_t
                lzs = lzs * tl.exp(lm * inv_t - sref) + tl.exp(s - sref)
            noisy = s + gumbel_tl(offs, key0, key1, FAST_LOG)
            take = noisy > bv
            bv = tl.where(take, noisy, bv)
            bi = tl.where(take, offs, bi)
            bs = tl.where(take, s, bs)
        lm = new
    mx = tl.max(lm, axis=0)
    ref = tl.where(mx == NEG, 0.0, mx)
    zx = tl.sum(lz * tl.exp(lm - ref), axis=0)
    zs = tl.sum(lzs * tl.exp(lm * inv_t - ref * inv_t), axis=0)
    ax = tl.min(tl.where(lm == mx, li, BIG), axis=0)
    gv = tl.max(bv, axis=0)
    gi = tl.min(tl.where(bv == gv, bi, BIG), axis=0)
    gs = tl.max(tl.where(bi == gi, bs, NEG), axis=0)
    nb = tl.zeros((), tl.int32)  # barriers passed so far
    if SPLITS > 1:
        f = tl.arange(0, NF)
        rec = tl.where(f == 0, mx, tl.where(f == 1, zx, tl.where(f == 2, ax.to(tl.float32, bitcast=True),
              tl.where(f == 3, gv, tl.where(f == 4, gi.to(tl.float32, bitcast=True),
              tl.where(f == 5, gs, tl.where(f == 6, zs, 0.0)))))))
        nb += 1
        base = _exchange(part_ptr, sync_ptr, row, split, nb, rec, SPLITS, NF)
        r_mx = _column(base, 0, SPLITS, NF)
        mx = tl.max(r_mx, axis=0)
        ref = tl.where(mx == NEG, 0.0, mx)
        zx = tl.sum(_column(base, 1, SPLITS, NF) * tl.exp(r_mx - ref), axis=0)
        if top_p_on:
            zs = tl.sum(_column(base, 6, SPLITS, NF)
                        * tl.exp(r_mx * inv_t - ref * inv_t), axis=0)
        ax = tl.min(tl.where(r_mx == mx, _int_column(base, 2, SPLITS, NF), BIG), axis=0)
        r_gv = _column(base, 3, SPLITS, NF)
        r_gi = _int_column(base, 4, SPLITS, NF)
        gv = tl.max(r_gv, axis=0)
        gi = tl.min(tl.where(r_gv == gv, r_gi, BIG), axis=0)
        gs = tl.max(tl.where(r_gi == gi, _column(base, 5, SPLITS, NF), NEG), axis=0)

    m = mx * inv_t  # max of s (multiplying by inv_t > 0 is monotone)
    floor = tl.where(min_p > 0, m + tl.log(tl.maximum(min_p, 1e-38)), NEG)  # min-p bound on s
    draw_thr = tl.full((), -2147483648, tl.int64)  # the last pass keeps ordered keys >= draw_thr
    need_draw = is_sampled & (mx > NEG) & (gs < floor)  # min-p alone drops c0: redraw
    if FILTERS:
        if is_sampled & (mx > NEG) & (top_k_on | top_p_on):
            # candidate chain: is the candidate c (first the Gumbel winner c0) kept? One pass
            # counts s strictly above s[c] (and the mass above / at or above) and finds the
            # Gumbel winner among s > s[c]: the filters keep an upper set of s, so a dropped c
            # rules out every s <= s[c], and that winner is the next candidate (exact).
            state = tl.zeros((), tl.int32)  # 0: testing, 1: accepted, 2: threshold search
            n_chain = tl.zeros((), tl.int32)
            cnt = tl.zeros((), tl.float32)
            mass_gt = tl.zeros((), tl.float32)
            mass_ge = tl.zeros((), tl.float32)
            while state == 0:
                lc = tl.zeros((BLOCK,), tl.float32)
                lgt = tl.zeros((BLOCK,), tl.float32)
                lge = tl.zeros((BLOCK,), tl.float32)
                nbv = tl.full((BLOCK,), NEG, tl.float32)
                nbi = tl.full((BLOCK,), -1, tl.int32)
                nbs = tl.full((BLOCK,), NEG, tl.float32)
                x1, w1 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + ar, hi, HAS_BITMASK)
                x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, lo + BLOCK + ar, hi, HAS_BITMASK)
                for start in range(lo, hi, BLOCK):
                    offs = start + ar
                    s = _apply_mask(x1, w1, offs) * inv_t
                    x1, w1 = x2, w2
                    x2, w2 = _load_raw(logits_ptr, mask_ptr, row_masked, offs + 2 * BLOCK, hi, HAS_BITMASK)
                    e = tl.exp(s - m)
                    gt = s > gs
                    lc += gt.to(tl.float32)
                    lgt += tl.where(gt, e, 0.0)
                    lge += tl.where(s >= gs, e, 0.0)
                    noisy = tl.where(gt, s + gumbel_tl(offs, key0, key1, FAST_LOG), NEG)
                    take = noisy > nbv
                    nbv = tl.where(take, noisy, nbv)
                    nbi = tl.where(take, offs, nbi)
                    nbs = tl.where(take, s, nbs)
                cnt = tl.sum(lc, axis=0)
                mass_gt = tl.sum(lgt, axis=0)
                mass_ge = tl.sum(lge, axis=0)
                nv = tl.max(nbv, axis=0)
                ni = tl.min(tl.where(nbv == nv, nbi, BIG), axis=0)
                ns = tl.max(tl.where(nbi == ni, nbs, NEG), axis=0)
                if SPLITS > 1:
                    f = tl.arange(0, NF)
                    nb += 1
                    rec = tl.where(f == 0, cnt, tl.where(f == 1, mass_gt, tl.where(f == 2, mass_ge,
                          tl.where(f == 3, nv, tl.where(f == 4, ni.to(tl.float32, bitcast=True),
                          tl.where(f == 5, ns, 0.0))))))
                    base = _exchange(part_ptr, sync_ptr, row, split, nb, rec, SPLITS, NF)
                    cnt = tl.sum(_column(base, 0, SPLITS, NF), axis=0)
                    mass_gt = tl.sum(_column(base, 1, SPLITS, NF), axis=0)
                    mass_ge = tl.sum(_column(base, 2, SPLITS, NF), axis=0)
                    r_nv = _column(base, 3, SPLITS, NF)
                    r_ni = _int_column(base, 4, SPLITS, NF)
                    nv = tl.max(r_nv, axis=0)
                    ni = tl.min(tl.where(r_nv == nv, r_ni, BIG), axis=0)
                    ns = tl.max(tl.where(r_ni == ni, _column(base, 5, SPLITS, NF), NEG), axis=0)
                kept_k = (top_k_on == 0) | (cnt < top_k)
                # top-p's normaliser is top-k's kept mass z_k; with c inside top-k,
                # mass_ge <= z_k <= zs, so some cases need z_k itself (the search)
                sure_p = (top_p_on == 0) | (cnt == 0) | (mass_gt < top_p * tl.where(top_k_on, mass_ge, zs))
                dropped = (kept_k == 0) | (top_p_on & (cnt > 0) & (mass_gt >= top_p * zs)) | (gs < floor)
                chain = dropped & (n_chain < MAX_CHAIN) & (nv > NEG)
                state = tl.where(kept_k & sure_p & (gs >= floor), 1, tl.where(chain, 0, 2))
                gi = tl.where(chain, ni, gi)
                gs = tl.where(chain, ns, gs)
                n_chain += 1
            need_draw = state == 2
            if need_draw:
                # exact thresholds: the largest key t with count(key >= t) >= top_k, then the
                # largest with mass(key >= t) >= top_p * z_k (z_k: mass top-k keeps); c0's test
                # brackets each where it can
                v0_key = _ordered_key(gs).to(tl.int64)
                m_key = _ordered_key(m).to(tl.int64)
                zk = zs
                if top_k_on:
                    out = cnt >= top_k
                    draw_thr, zk, nb = _threshold_search(
                        logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi,
                        tl.where(out, v0_key + 1, draw_thr), tl.where(out, m_key, v0_key),
                        tl.where(out, mass_gt, zs), top_k.to(tl.float32), part_ptr, sync_ptr, row,
                        split, nb, True, HAS_BITMASK, SPLITS, NP, SEARCH_BLOCK)
                if top_p_on:
                    out = (top_k_on == 0) & (mass_gt >= top_p * zs)
                    inside = (top_k_on == 0) & (mass_gt < top_p * zs)
                    draw_thr, zk, nb = _threshold_search(
                        logits_ptr, mask_ptr, row_masked, V, inv_t, m, lo, hi,
                        tl.where(out, v0_key + 1, draw_thr), tl.where(inside, v0_key, m_key), zk,
                        top_p * zk, part_ptr, sync_ptr, row, split, nb, False, HAS_BITMASK, SPLITS,
                        NP, SEARCH_BLOCK)
    token = tl.where(is_sampled, gi, ax)
    if need_draw:
        # last pass: Gumbel-max over the kept tokens (key >= draw_thr, s >= floor)
        bv = tl.full((BLOCK,), NEG, tl.float32)
        bi = tl.full((BLOCK,), -1, tl.int32)
        for start in range(lo, hi, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, s = _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK)
            keep = (s > NEG) & (_ordered_key(s).to(tl.int64) >= draw_thr) & (s >= floor)
            noisy = tl.where(keep, s + gumbel_tl(offs, key0, key1, FAST_LOG), NEG)
            take = noisy > bv
            bv = tl.where(take, noisy, bv)
            bi = tl.where(take, offs, bi)
        gv = tl.max(bv, axis=0)
        gi = tl.min(tl.where(bv == gv, bi, BIG), axis=0)
        if SPLITS > 1:
            f = tl.arange(0, NF)
            nb += 1
            base = _exchange(part_ptr, sync_ptr, row, split, nb,
                             tl.where(f == 0, gv, tl.where(f == 1, gi.to(tl.float32, bitcast=True), 0.0)),
                             SPLITS, NF)
            r_gv = _column(base, 0, SPLITS, NF)
            gv = tl.max(r_gv, axis=0)
            gi = tl.min(tl.where(r_gv == gv, _int_column(base, 1, SPLITS, NF), BIG), axis=0)
        token = gi

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
