"""Stream-K for decode-sized GEMMs: y [M, N] = x [M, K] @ W [N, K]^T with M <= 64, every SM busy.

    streamk_linear(x, w, cfg, silu_mul=False, out_dtype=None, tickets=None) -> y
        as skinny_gemm.skinny_linear (same rounding, same silu_mul layout of w), cfg: StreamKConfig
    streamk_config(m, n, k, silu_mul, programs) -> StreamKConfig or None (LM heads: None, they
        have enough column blocks for skinny_gemm's own grid)

Why: a decode GEMM streams its weights, and one SM reads at most ~31.5 GB/s on the H200 (the LM
head, 1,002 programs over 132 SMs, reads at 4.12-4.15 TB/s; qkv's 96 column blocks of 64 leave 36
SMs idle and read at 2.9-3.1 TB/s). Splitting K evenly (skinny_gemm's split) gives 192 programs,
1.45 waves, and no gain. Here the work is the list of (column block, K block) units, column block
major, cut into `programs` equal contiguous ranges, one program each (programs <= the SM count,
so one wave): a program walks its range, accumulating one column block at a time. A block it
covers whole is written directly; a block shared by several programs gets float32 partials (at
most two per program: the block its range starts in and the one it ends in), and the last of its
programs to take a ticket adds them in program order and writes y (deterministic; the ticket is
reset for the next call, as in skinny_gemm).

The engine uses it with decode_gemm="streamk" (runtime/layers/decode_gemm.py; not the default
until measured on the GPU); benchmarks/bench_decode_gemm.py times it against the skinny kernel
and cuBLAS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .pdl import launch_options, pdl_on, wait_for_inputs
from .skinny_gemm import _gated, _k_sums


@dataclass(frozen=True)
class StreamKConfig:
    bn: int  # output columns per unit
    bk: int  # reduction depth per unit
    programs: int  # one per SM, at most
    stages: int  # tiles in flight
    warps: int = 4
    flat: bool = False  # one pipelined loop over a program's units (see _streamk_kernel)

    def fits(self, m: int, n: int, k: int) -> bool:
        return m <= 64 and n % self.bn == 0 and k % self.bk == 0

    def __str__(self) -> str:
        return (f"stream-K{' flat' if self.flat else ''} {self.bn}x{self.bk} x{self.programs} "
                f"st {self.stages} w {self.warps}")


@triton.jit
def _finish(acc, acc_up, x_ptr, y_ptr, rm, rn, row_ok, stride_y, SILU_MUL: tl.constexpr):
    """Write a column block of y from its float32 sums, rounded as F.linear(x, w) (and the unfused
    SiLU-mul) rounds."""
    dt = x_ptr.dtype.element_ty
    acc = _gated(acc, acc_up, dt, SILU_MUL)
    tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], acc.to(dt).to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _segment_done(acc, acc_up, t, seg_lo, seg_hi, u0, p, per_prog, k_units, x_ptr, y_ptr, ws_ptr, cnt_ptr,
                  rm, rn, row_ok, part, stride_y, BM: tl.constexpr, BN: tl.constexpr, MAXC: tl.constexpr,
                  SILU_MUL: tl.constexpr):
    """Units [seg_lo, seg_hi) of column block t are summed in acc (acc_up): write the block when
    they are all of it; else store the partials (workspace [programs, 2 slots, gate/up, BM, BN]
    float32: slot 0 the block this program's range starts in, slot 1 the one it ends in) and, as
    the last of the block's programs to take its ticket, add everyone's in program order (at most
    MAXC programs share a block: an unrolled loop, so no loop nests inside the flat kernel's)."""
    if (seg_lo == t * k_units) & (seg_hi == (t + 1) * k_units):
        _finish(acc, acc_up, x_ptr, y_ptr, rm, rn, row_ok, stride_y, SILU_MUL)
    else:
        ACCS: tl.constexpr = 2 if SILU_MUL else 1
        base = ws_ptr + (p * 2 + tl.where(seg_lo == u0, 0, 1)) * ACCS * BM * BN
        tl.store(base + part, acc)
        if SILU_MUL:
            tl.store(base + BM * BN + part, acc_up)
        tl.debug_barrier()
        first = (t * k_units) // per_prog  # the programs sharing block t
        last = ((t + 1) * k_units - 1) // per_prog
        ticket = tl.atomic_add(cnt_ptr + t, 1, sem="acq_rel")
        if ticket == last - first:
            tot = tl.zeros((BM, BN), tl.float32)
            tot_up = tl.zeros((BM, BN), tl.float32)
            for j in tl.static_range(MAXC):
                q = first + j
                ok = (part * 0 + q) <= last
                q_slot = tl.where(tl.maximum(q * per_prog, t * k_units) == q * per_prog, 0, 1)
                q_base = ws_ptr + (q * 2 + q_slot) * ACCS * BM * BN
                tot += tl.load(q_base + part, mask=ok, other=0.0, volatile=True)
                if SILU_MUL:
                    tot_up += tl.load(q_base + BM * BN + part, mask=ok, other=0.0, volatile=True)
            _finish(tot, tot_up, x_ptr, y_ptr, rm, rn, row_ok, stride_y, SILU_MUL)
            tl.atomic_xchg(cnt_ptr + t, 0)


@triton.jit
def _streamk_kernel(x_ptr, w_ptr, y_ptr, ws_ptr, cnt_ptr, M, K, stride_x, stride_w, stride_y, N, per_prog,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, STAGES: tl.constexpr,
                    MAXC: tl.constexpr, FLAT: tl.constexpr, SILU_MUL: tl.constexpr, PDL: tl.constexpr):
    """FLAT: one pipelined loop over the program's units, a block finished inside it when its last
    unit passes (the weight stream never drains); else a loop per block segment."""
    wait_for_inputs(PDL)
    p = tl.program_id(0)
    k_units = K // BK  # units per column block
    u0 = p * per_prog  # this program's units: [u0, u_end)
    u_end = tl.minimum(u0 + per_prog, (N // BN) * k_units)
    rm = tl.arange(0, BM)
    cols = tl.arange(0, BN)
    row_ok = rm[:, None] < M
    part = rm[:, None] * BN + cols[None, :]  # [BM, BN] offsets inside one partial tile
    if FLAT:
        acc = tl.zeros((BM, BN), tl.float32)
        acc_up = tl.zeros((BM, BN), tl.float32)
        seg_lo = u0
        for u in tl.range(u0, u_end, num_stages=STAGES):
            t = u // k_units
            rn = t * BN + cols
            rk = (u - t * k_units) * BK + tl.arange(0, BK)
            xt = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :], mask=row_ok, other=0.0)
            wp = w_ptr + rn[:, None].to(tl.int64) * stride_w + rk[None, :]
            acc = tl.dot(xt, tl.trans(tl.load(wp)), acc)
            if SILU_MUL:
                acc_up = tl.dot(xt, tl.trans(tl.load(wp + N.to(tl.int64) * stride_w)), acc_up)
            if (u == (t + 1) * k_units - 1) | (u == u_end - 1):
                _segment_done(acc, acc_up, t, seg_lo, u + 1, u0, p, per_prog, k_units, x_ptr, y_ptr, ws_ptr,
                              cnt_ptr, rm, rn, row_ok, part, stride_y, BM, BN, MAXC, SILU_MUL)
                acc = tl.zeros((BM, BN), tl.float32)
                acc_up = tl.zeros((BM, BN), tl.float32)
                seg_lo = u + 1
    else:
        u = u0
        while u < u_end:
            t = u // k_units  # the column block
            seg_end = tl.minimum(u_end, (t + 1) * k_units)
            rn = t * BN + cols
            rk = (u - t * k_units) * BK + tl.arange(0, BK)
            xp = x_ptr + rm[:, None] * stride_x + rk[None, :]  # [BM, BK] tile of x
            wp = w_ptr + rn[:, None].to(tl.int64) * stride_w + rk[None, :]  # [BN, BK] tile of W
            upp = wp + N.to(tl.int64) * stride_w  # SILU_MUL: the matching rows of the up half
            acc, acc_up = _k_sums(xp, wp, upp, row_ok, u, seg_end, 1, BM, BN, BK, STAGES, SILU_MUL)
            _segment_done(acc, acc_up, t, u, seg_end, u0, p, per_prog, k_units, x_ptr, y_ptr, ws_ptr, cnt_ptr,
                          rm, rn, row_ok, part, stride_y, BM, BN, MAXC, SILU_MUL)
            u = seg_end


def streamk_config(m: int, n: int, k: int, silu_mul: bool, programs: int) -> StreamKConfig | None:
    """The launch for an [m, k] x [n, k]^T decode product (n: I for silu_mul) on `programs` SMs:
    batches of 17-64 rows (as skinny_gemm.decode_config), not LM heads (n >= 65536)."""
    if not 16 < m <= 64 or n >= 65536:
        return None
    cfg = StreamKConfig(64, 64, programs, 4) if silu_mul else StreamKConfig(64, 128, programs, 5)
    return cfg if cfg.fits(m, n, k) else None


def streamk_linear(x: torch.Tensor, w: torch.Tensor, cfg: StreamKConfig, silu_mul: bool = False,
                   out_dtype: torch.dtype | None = None, tickets: torch.Tensor | None = None) -> torch.Tensor:
    """See the module docstring. tickets: int32 [>= N / cfg.bn], zero: the caller's counters, left
    zero again (made here when None, a fill per call)."""
    m, k = x.shape
    n = w.shape[0] // 2 if silu_mul else w.shape[0]
    if m > 64 or x.stride(1) != 1 or w.stride(1) != 1 or w.shape[1] != k or not cfg.fits(m, n, k):
        raise ValueError(f"expected x [M <= 64, K] and w [N, K] with contiguous rows that {cfg} divides, got "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    bm = max(16, triton.next_power_of_2(m))
    blocks = n // cfg.bn
    if tickets is None:
        tickets = torch.zeros(blocks, device=x.device, dtype=torch.int32)
    if tickets.numel() < blocks or tickets.dtype != torch.int32:
        raise ValueError(f"tickets: expected int32 [>= {blocks}], got {tickets.dtype} {tuple(tickets.shape)}")
    units = blocks * (k // cfg.bk)
    programs = min(cfg.programs, units)
    per_prog = -(-units // programs)
    y = torch.empty(m, n, device=x.device, dtype=out_dtype or x.dtype)
    ws = torch.empty(programs * 2 * (2 if silu_mul else 1) * bm * cfg.bn, device=x.device, dtype=torch.float32)
    k_units = k // cfg.bk
    _streamk_kernel[(-(-units // per_prog),)](
        x, w, y, ws, tickets, m, k, x.stride(0), w.stride(0), y.stride(0), n, per_prog,
        BM=bm, BN=cfg.bn, BK=cfg.bk, STAGES=cfg.stages, MAXC=-(-k_units // per_prog) + 1, FLAT=cfg.flat,
        SILU_MUL=silu_mul, PDL=pdl_on(),
        num_warps=cfg.warps, **launch_options())
    return y
