"""A Triton GEMM for decode-sized batches: y [M, N] = x [M, K] @ W [N, K]^T with M <= 64.

    skinny_linear(x, w, cfg, silu_mul=False, out_dtype=None) -> y
        x: [M, K] bf16/fp16, rows contiguous    w: [N, K] (silu_mul: [gate; up], [2I, K])
        y: [M, N] (silu_mul: [M, I] = silu(x @ gate^T) * (x @ up^T)), out_dtype or x's dtype;
           the products are rounded to x's dtype first, as F.linear(x, w).to(out_dtype) rounds
    decode_config(m, n, k, silu_mul=False) -> GemmConfig or None (cuBLAS is as fast)

Decode GEMMs read every weight once per step and do M multiply-adds per weight, so they are
bound by the weight read; what matters is keeping every SM streaming. Grid (N / BN, SPLIT): each
program reads a [BN, K / SPLIT] slab of W in [BN, BK] tiles (num_stages in flight) and the whole
[M, K / SPLIT] slice of x; with SPLIT > 1 the programs of a column block store float32 partial
sums and the last one to finish (a ticket counter per block) adds them and writes y. With silu_mul a program reads the matching rows of both halves and
writes the gated activation, so the [M, 2I] product never goes to memory. A config with tma=True
loads its x and W tiles through host tensor descriptors (Hopper's TMA engine copies whole tiles
to shared memory, with no per-element addresses in registers); the pointer kernel runs instead where the
device is older than sm_90 or a base or row stride is not 16-byte aligned.
benchmarks/bench_decode_gemm.py compares the configs with cuBLAS (H200 figures in docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .pdl import launch_options, pdl_on, wait_for_inputs


@dataclass(frozen=True)
class GemmConfig:
    bn: int  # output columns per program
    bk: int  # reduction depth of one tile
    split: int  # programs sharing one column block's reduction
    stages: int  # tiles in flight
    warps: int = 4
    tma: bool = False  # tiles of x and W through Hopper's TMA (host tensor descriptors), sm_90+

    def fits(self, m: int, n: int, k: int) -> bool:
        return m <= 64 and n % self.bn == 0 and k % (self.bk * self.split) == 0

    def __str__(self) -> str:
        return f"{self.bn}x{self.bk} split {self.split} st {self.stages} w {self.warps}" + (" tma" if self.tma else "")


CONFIGS = [GemmConfig(bn, bk, split, st) for bn in (64, 128) for bk in (128, 256)
           for split in (1, 2, 4) for st in (3, 5)] + [GemmConfig(32, 256, s, 5) for s in (1, 2)] + [
    GemmConfig(32, 128, 1, st) for st in (5, 6, 8)] + [GemmConfig(32, 64, 1, 8)] + [
    GemmConfig(128, 128, 1, 3, 8), GemmConfig(128, 64, 1, 6, 4), GemmConfig(64, 64, 2, 8, 4)]
# SiLU-mul epilogue: two weight tiles per stage (gate and up rows)
FUSED_CONFIGS = [GemmConfig(bn, bk, 1, st, w) for bn, bk, st, w in (
    (32, 128, 4, 4), (32, 256, 3, 4), (64, 64, 4, 4), (64, 128, 3, 4), (64, 128, 3, 8), (32, 128, 6, 4),
    (64, 64, 6, 4))]


@triton.jit
def _k_sums(xp, wp, up, row_ok, lo, hi, step: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, STAGES: tl.constexpr, SILU_MUL: tl.constexpr):
    """float32 [BM, BN] sums of x @ W^T (and x @ Wup^T) over the K tiles of one loop of lo..hi by
    step, starting at the tile pointers xp [BM, BK], wp / up [BN, BK] (STAGES tiles in flight)."""
    acc = tl.zeros((BM, BN), tl.float32)
    acc_up = tl.zeros((BM, BN), tl.float32)
    for _ in tl.range(lo, hi, step, num_stages=STAGES):
        xt = tl.load(xp, mask=row_ok, other=0.0)
        acc = tl.dot(xt, tl.trans(tl.load(wp)), acc)
        if SILU_MUL:
            acc_up = tl.dot(xt, tl.trans(tl.load(up)), acc_up)
            up += BK
        xp += BK
        wp += BK
    return acc, acc_up


@triton.jit
def _gated(acc, acc_up, dt, SILU_MUL: tl.constexpr):
    """SILU_MUL: silu(gate) * up from the float32 sums, rounded to dt as the unfused path rounds
    (GEMM out, silu(gate), the product); else acc."""
    if SILU_MUL:
        g = acc.to(dt).to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
        acc = act * acc_up.to(dt).to(tl.float32)
    return acc


@triton.jit
def _finish(acc, y_ptr, ws_ptr, cnt_ptr, rm, rn, row_ok, pid_n, pid_k, N, stride_y, BM: tl.constexpr,
            BN: tl.constexpr, SPLIT: tl.constexpr, dt: tl.constexpr):
    """Write a program's float32 [BM, BN] sums (rows rm, columns rn) to y, rounded to dt first;
    with SPLIT > 1 through the workspace and the column block's ticket."""
    yp = y_ptr + rm[:, None] * stride_y + rn[None, :]
    if SPLIT == 1:
        tl.store(yp, acc.to(dt).to(y_ptr.dtype.element_ty), mask=row_ok)
    else:
        # every program stores its partial sum (workspace [SPLIT, BM, N] float32); the last of a
        # column block's programs to take a ticket adds them in split order, writes y and resets
        # the ticket counter for the next call (no zero-fill, no second launch)
        tl.store(ws_ptr + (pid_k * BM + rm[:, None]) * N + rn[None, :], acc)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel")
        if ticket == SPLIT - 1:
            tot = tl.zeros((BM, BN), tl.float32)
            for j in tl.static_range(SPLIT):
                tot += tl.load(ws_ptr + (j * BM + rm[:, None]) * N + rn[None, :], volatile=True)
            tl.store(yp, tot.to(dt).to(y_ptr.dtype.element_ty), mask=row_ok)
            tl.atomic_xchg(cnt_ptr + pid_n, 0)


@triton.jit
def _skinny_gemm_kernel(x_ptr, w_ptr, y_ptr, ws_ptr, cnt_ptr, M, K, stride_x, stride_w, stride_y, N,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT: tl.constexpr,
                        STAGES: tl.constexpr, SILU_MUL: tl.constexpr, PDL: tl.constexpr):
    wait_for_inputs(PDL)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    k_len = K // SPLIT
    rk = pid_k * k_len + tl.arange(0, BK)
    xp = x_ptr + rm[:, None] * stride_x + rk[None, :]  # [BM, BK] tile of x
    wp = w_ptr + rn[:, None].to(tl.int64) * stride_w + rk[None, :]  # [BN, BK] tile of W
    up = wp + N.to(tl.int64) * stride_w  # SILU_MUL: the matching rows of the up half (N = I)
    row_ok = rm[:, None] < M
    acc, acc_up = _k_sums(xp, wp, up, row_ok, 0, k_len, BK, BM, BN, BK, STAGES, SILU_MUL)
    dt = x_ptr.dtype.element_ty
    acc = _gated(acc, acc_up, dt, SILU_MUL)
    _finish(acc, y_ptr, ws_ptr, cnt_ptr, rm, rn, row_ok, pid_n, pid_k, N, stride_y, BM, BN, SPLIT, dt)


@triton.jit
def _skinny_gemm_tma_kernel(x_desc, w_desc, y_ptr, ws_ptr, cnt_ptr, M, K, stride_y, N,
                            BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT: tl.constexpr,
                            STAGES: tl.constexpr, SILU_MUL: tl.constexpr, PDL: tl.constexpr):
    """_skinny_gemm_kernel with its tiles loaded by TMA: x_desc over x [M, K] in [BM, BK] boxes
    (rows past M read as zeros), w_desc over W [N or 2I, K] in [BN, BK] boxes."""
    wait_for_inputs(PDL)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    n0 = pid_n * BN
    k_len = K // SPLIT
    k0 = pid_k * k_len
    acc = tl.zeros((BM, BN), tl.float32)
    acc_up = tl.zeros((BM, BN), tl.float32)
    for k in tl.range(k0, k0 + k_len, BK, num_stages=STAGES):
        xt = x_desc.load([0, k])  # [BM, BK]
        acc = tl.dot(xt, tl.trans(w_desc.load([n0, k])), acc)  # W tile [BN, BK]
        if SILU_MUL:
            acc_up = tl.dot(xt, tl.trans(w_desc.load([n0 + N, k])), acc_up)
    dt = x_desc.dtype  # (x's element type)
    acc = _gated(acc, acc_up, dt, SILU_MUL)
    rm = tl.arange(0, BM)
    rn = n0 + tl.arange(0, BN)
    _finish(acc, y_ptr, ws_ptr, cnt_ptr, rm, rn, rm[:, None] < M, pid_n, pid_k, N, stride_y, BM, BN, SPLIT, dt)


def decode_config(m: int, n: int, k: int, silu_mul: bool = False) -> GemmConfig | None:
    """The launch for an [m, k] x [n, k]^T product (n: the output width, I for silu_mul), or None
    where cuBLAS was as fast in benchmarks/bench_decode_gemm.py (H200, Llama-3.1-8B shapes):
    batches of 17-64 rows only; at 16 and below cuBLAS's own skinny kernels win or tie. The
    square o_proj alone is no faster than cuBLAS, but inside a decode graph under PDL a Triton
    launch lets its neighbours overlap it (cuBLAS's kernels break that chain)."""
    if not 16 < m <= 64 or k % 256 or n % 128:
        return None
    if silu_mul:
        cfg = GemmConfig(64, 128, 1, 4, tma=True)
    elif n >= 65536:  # an LM head
        cfg = GemmConfig(128, 128, 1, 4, tma=True)
    elif k >= 2 * n:  # a down projection: few column blocks, a long reduction
        cfg = GemmConfig(64, 128, 2, 5)
    elif n > k:  # qkv-like
        cfg = GemmConfig(64, 128, 1, 6, tma=True)
    elif n >= 4096:  # o_proj-like, wide enough for a program per 32 columns to fill an H200's SMs
        cfg = GemmConfig(32, 128, 1, 6, tma=True)
    else:
        return None
    return cfg if cfg.fits(m, n, k) else None


_TMA_DEVICES: dict = {}


def _tma_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    """TMA needs sm_90+ (the interpreter takes CPU tensors), 16-byte aligned bases and row strides."""
    if x.is_cuda:
        cap = _TMA_DEVICES.get(x.device)
        if cap is None:
            cap = _TMA_DEVICES[x.device] = torch.cuda.get_device_capability(x.device)[0] >= 9
        if not cap:
            return False
    return all(t.data_ptr() % 16 == 0 and t.stride(0) * t.element_size() % 16 == 0 for t in (x, w))


def skinny_linear(x: torch.Tensor, w: torch.Tensor, cfg: GemmConfig, silu_mul: bool = False,
                  out_dtype: torch.dtype | None = None, tickets: torch.Tensor | None = None) -> torch.Tensor:
    """See the module docstring. tickets: int32 [>= N / cfg.bn], zero, for split > 1: the
    caller's counters, left zero again (made here when None, a fill per call)."""
    m, k = x.shape
    n = w.shape[0] // 2 if silu_mul else w.shape[0]
    if m > 64 or x.stride(1) != 1 or w.stride(1) != 1 or w.shape[1] != k:
        raise ValueError(f"expected x [M <= 64, K] and w [N, K] with contiguous rows, got "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    if silu_mul and cfg.split != 1:
        raise ValueError("silu_mul needs split 1")
    bm = max(16, triton.next_power_of_2(m))
    out_dtype = out_dtype or x.dtype
    y = torch.empty(m, n, device=x.device, dtype=out_dtype)
    ws = y  # (unused when split == 1)
    if cfg.split > 1:
        ws = torch.empty(cfg.split, bm, n, device=x.device, dtype=torch.float32)  # partial sums
        if tickets is None:
            tickets = torch.zeros(n // cfg.bn, device=x.device, dtype=torch.int32)
        if tickets.numel() < n // cfg.bn or tickets.dtype != torch.int32:
            raise ValueError(f"tickets: expected int32 [>= {n // cfg.bn}], got {tickets.dtype} {tuple(tickets.shape)}")
    cnt = tickets if tickets is not None else y
    consts = dict(BM=bm, BN=cfg.bn, BK=cfg.bk, SPLIT=cfg.split, STAGES=cfg.stages, SILU_MUL=silu_mul,
                  PDL=pdl_on(), num_warps=cfg.warps, **launch_options())
    if cfg.tma and _tma_ok(x, w):
        from triton.tools.tensor_descriptor import TensorDescriptor
        _skinny_gemm_tma_kernel[(n // cfg.bn, cfg.split)](
            TensorDescriptor.from_tensor(x, [bm, cfg.bk]), TensorDescriptor.from_tensor(w, [cfg.bn, cfg.bk]),
            y, ws, cnt, m, k, y.stride(0), n, **consts)
    else:
        _skinny_gemm_kernel[(n // cfg.bn, cfg.split)](
            x, w, y, ws, cnt, m, k, x.stride(0), w.stride(0), y.stride(0), n, **consts)
    return y
