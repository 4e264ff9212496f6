"""Decode attention launch sweep on the GPU: KV splits x keys per loop step x pipeline stages, at
the decode shapes the engine benchmarks run (prints a table; nothing is written to docs/):

    python -m benchmarks.bench_decode_attention            # the sweep, then the merge comparison
    python -m benchmarks.bench_decode_attention --merge    # the merge comparison only
    python -m benchmarks.bench_decode_attention --rope     # rope_store_ + attention vs one launch

Slots are contiguous per sequence (as the pool hands them out to a fresh batch). Each time is GPU
time per call with no launch gaps, as in the engine's captured decode step: 8 calls, each on its
own copy of the KV cache (so the cache is not served from L2), captured in one CUDA graph; replay
time / 8, best of 3. The floor reads K and V once at the measured copy bandwidth.
"""
from __future__ import annotations

import itertools

import json
import os

import torch

from benchmarks.gpu_timing import graph_us, kv_cache
from benchmarks.report import table

# (name, bs, seq, Hq, Hkv, D)
SHAPES = [("smollm2-135m", 64, 768, 9, 3, 64), ("smollm2-135m", 1, 640, 9, 3, 64),
          ("smollm2-135m", 128, 768, 9, 3, 64), ("llama-3.2-1b", 256, 1024, 32, 8, 64),
          ("llama-3.1-8b", 64, 768, 32, 8, 128), ("llama-3.1-8b", 1, 640, 32, 8, 128),
          ("llama-3.1-8b", 16, 2048, 32, 8, 128)]


def _bandwidth() -> float:
    import triton.testing
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3)


def _inputs(bs, seq, hq, hkv, d, copies):
    caches = []
    for _ in range(copies):
        kc = torch.randn(bs * seq + 1, hkv, d, device="cuda", dtype=torch.bfloat16)
        caches.append((kc, torch.randn_like(kc)))
    r2t = (torch.arange(bs * seq, device="cuda") + 1).view(bs, seq)
    q = torch.randn(bs, hq, d, device="cuda", dtype=torch.bfloat16)
    lens = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
    out = torch.empty(bs, hq * d, device="cuda", dtype=torch.bfloat16)
    return caches, r2t, q, lens, out


def sweep(bw: float, copies: int = 8) -> None:
    """Splits x keys per step x stages at every shape; the table and bench_decode_attention.json."""
    from sgl_lang.kernels.attention_decode import decode_attention, pick_num_kv_splits
    rows, best = [], {}
    for name, bs, seq, hq, hkv, d in SHAPES:
        caches, r2t, q, lens, out = _inputs(bs, seq, hq, hkv, d, copies)
        floor = 2 * bs * seq * hkv * d * 2 / bw * 1e6
        picked = pick_num_kv_splits(bs, hkv)
        default_n = 64 if d <= 64 else 32  # the keys per step before 2026-11-28 (now twice that)
        times = {}
        for s in (1, 2, 4, 8, 16, 32):
            for bn in sorted({default_n, 2 * default_n}):
                for st in (2, 3):
                    def calls():
                        for kc, vc in caches:
                            decode_attention(q, kc, vc, r2t, lens, s, out=out, block_n=bn, num_stages=st)
                    times[(s, bn, st)] = graph_us(calls, copies)
        del caches
        key = f"{name} bs={bs} len={seq} H={hq}/{hkv} D={d}"
        top = min(times, key=times.get)
        now = times[(picked, 2 * default_n, 3)]
        best[key] = {"picked": [picked, 2 * default_n, 3, now], "best": [*top, times[top]],
                     "all": {str(k): v for k, v in times.items()}}
        by_s = {s: min(v for k, v in times.items() if k[0] == s) for s in (1, 2, 4, 8, 16, 32)}
        rows.append([key, floor, now, f"S={top[0]} N={top[1]} st={top[2]}: {times[top]:.1f}",
                     " ".join(f"{s}:{v:.1f}" for s, v in by_s.items())])
        print(rows[-1], flush=True)
    print(table(["shape", "KV floor µs", "engine's pick µs", "best (splits, keys/step, stages)",
                 "best µs per split count"], rows))
    with open(os.path.join(os.environ.get("OUT", "."), "bench_decode_attention.json"), "w") as f:
        json.dump(best, f, indent=1)


def loads(bw: float, copies: int = 8) -> None:
    """8B batch 64 (the engine's 3.57 TB/s decode-attention shape): warps x K/V eviction policy x
    keys per step x stages x splits, CUDA-graph µs per layer; the default launch and the best ten."""
    from sgl_lang.kernels.attention_decode import (DEFAULT_KV_EVICT, DEFAULT_NUM_STAGES, decode_attention,
                                                   pick_num_kv_splits)
    name, bs, seq, hq, hkv, d = "llama-3.1-8b", 64, 640, 32, 8, 128
    caches, r2t, q, lens, out = _inputs(bs, seq, hq, hkv, d, copies)
    nbytes = 2 * bs * seq * hkv * d * 2
    default = (4, DEFAULT_KV_EVICT, 64, DEFAULT_NUM_STAGES, pick_num_kv_splits(bs, hkv))
    times = {}
    for launch in itertools.product((4, 8), ("", "evict_first"), (32, 64, 128), (2, 3, 4), (1, 2)):
        warps, evict, bn, st, s = launch

        def calls():
            for kc, vc in caches:
                decode_attention(q, kc, vc, r2t, lens, s, out=out, block_n=bn, num_stages=st, num_warps=warps,
                                 kv_evict=evict)
        try:
            times[launch] = graph_us(calls, copies)
        except Exception as e:  # out of shared memory or registers
            print(launch, type(e).__name__, flush=True)
            continue
        print(launch, f"{times[launch]:.1f}", flush=True)
    del caches
    rows = [[f"{k}{' (default)' if k == default else ''}", f"{v:.1f}", f"{nbytes / v / 1e6:.2f}"]
            for k, v in sorted(times.items(), key=lambda kv: kv[1])[:10]]
    rows.append([f"{default} default", f"{times[default]:.1f}", f"{nbytes / times[default] / 1e6:.2f}"])
    print(f"{name} bs={bs} len={seq}: KV floor {nbytes / bw * 1e6:.1f} µs at the copy rate")
    print(table(["(warps, K/V eviction, keys/step, stages, splits)", "µs per layer", "TB/s"], rows))


def merge(bw: float, copies: int = 8) -> None:
    """At the engine's launch, the split merge in the last program (one launch) vs a second launch."""
    from sgl_lang.kernels.attention_decode import decode_attention, pick_num_kv_splits
    rows = []
    for name, bs, seq, hq, hkv, d in SHAPES:
        s = pick_num_kv_splits(bs, hkv)
        if s == 1:
            continue
        caches, r2t, q, lens, out = _inputs(bs, seq, hq, hkv, d, copies)
        us = {}
        for fused in (True, False):
            def calls():
                for kc, vc in caches:
                    decode_attention(q, kc, vc, r2t, lens, s, out=out, fused_merge=fused)
            us[fused] = graph_us(calls, copies)
        del caches
        rows.append([f"{name} bs={bs} len={seq} H={hq}/{hkv} D={d} S={s}",
                     2 * bs * seq * hkv * d * 2 / bw * 1e6, us[True], us[False]])
    print(table(["shape", "KV floor µs", "merge in the last program µs", "merge launch µs"], rows))


def _slot_layout(kind: str, bs: int, prompt: int, gen: int, run: int = 16) -> torch.Tensor:
    """[bs, prompt + gen] pool slots (1-based) as an engine hands them out: "contiguous" (each
    sequence's tokens together), "interleaved" (prompts contiguous, then one slot per sequence
    per decode step: a sequence's generated tokens bs slots apart, as the engine does), "runs"
    (generated tokens in per-sequence runs of `run`: what per-request runs of contiguous slots
    would give; the engine does not do that), "random"."""
    seq = prompt + gen
    if kind == "contiguous":
        return (torch.arange(bs * seq) + 1).view(bs, seq)
    if kind == "random":
        return (torch.randperm(bs * seq) + 1).view(bs, seq)
    out = torch.empty(bs, seq, dtype=torch.int64)
    out[:, :prompt] = (torch.arange(bs * prompt) + 1).view(bs, prompt)
    j = torch.arange(gen)
    i = torch.arange(bs)[:, None]
    if kind == "interleaved":
        out[:, prompt:] = bs * prompt + 1 + j[None, :] * bs + i
    else:  # runs
        out[:, prompt:] = bs * prompt + 1 + (j[None, :] // run) * bs * run + i * run + j[None, :] % run
    return out


def layouts(bw: float, copies: int = 4, orders: tuple = ("token",)) -> None:
    """Decode attention at the engine's launch over four slot layouts of the same lengths, for
    each cache order in `orders` ("token": [slots, Hkv, D] contiguous, "head": head-major)."""
    from sgl_lang.kernels.attention_decode import decode_attention, pick_num_kv_splits
    rows = []
    for (name, bs, prompt, gen, hq, hkv, d), order in itertools.product(
            (("llama-3.1-8b", 64, 512, 128, 32, 8, 128), ("smollm2-135m", 64, 512, 128, 9, 3, 64)), orders):
        seq = prompt + gen
        caches = []
        for _ in range(copies):
            caches.append((kv_cache(bs * seq + 1, hkv, d, order == "head"),
                           kv_cache(bs * seq + 1, hkv, d, order == "head")))
        q = torch.randn(bs, hq, d, device="cuda", dtype=torch.bfloat16)
        lens = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
        out = torch.empty(bs, hq * d, device="cuda", dtype=torch.bfloat16)
        nbytes = 2 * bs * seq * hkv * d * 2
        s = pick_num_kv_splits(bs, hkv)
        for kind in ("contiguous", "interleaved", "runs", "random"):
            r2t = _slot_layout(kind, bs, prompt, gen).to("cuda")

            def calls():
                for kc, vc in caches:
                    decode_attention(q, kc, vc, r2t, lens, s, out=out)
            us = graph_us(calls, copies)
            rows.append([f"{name} bs={bs} len={seq} H={hq}/{hkv} D={d}", f"{order}-major, {kind}", us,
                         nbytes / us / 1e6, nbytes / bw * 1e6])
            print(rows[-1], flush=True)
        del caches
    print(table(["shape", "slot layout", "µs", "TB/s", "KV floor µs"], rows))


def rope(bw: float, copies: int = 8) -> None:
    """rope_store_ then decode_attention (two launches) vs decode_attention_rope (the rotation and
    the KV store inside the attention launch), each with and without PDL (kernels/pdl.py)."""
    from sgl_lang.kernels.attention_decode import decode_attention, decode_attention_rope, pick_num_kv_splits
    from sgl_lang.kernels.pdl import pdl_launches
    from sgl_lang.kernels.rope_store import rope_store_
    rows = []
    for name, bs, seq, hq, hkv, d in (("llama-3.1-8b", 64, 640, 32, 8, 128), ("smollm2-135m", 64, 640, 9, 3, 64),
                                      ("llama-3.1-8b", 1, 640, 32, 8, 128)):
        caches, r2t, _, lens, out = _inputs(bs, seq, hq, hkv, d, copies)
        qkv = torch.randn(bs, hq + 2 * hkv, d, device="cuda", dtype=torch.bfloat16)
        qk, v = qkv[:, :hq + hkv], qkv[:, hq + hkv:]
        ang = torch.randn(bs, 1, d // 2, device="cuda")
        cos = torch.cat([ang.cos(), ang.cos()], -1).to(torch.bfloat16)
        sin = torch.cat([-ang.sin(), ang.sin()], -1).to(torch.bfloat16)
        loc = r2t[:, -1].contiguous()
        s = pick_num_kv_splits(bs, hkv)

        def two():
            for kc, vc in caches:
                q = rope_store_(qk, v, cos, sin, kc, vc, loc)
                decode_attention(q, kc, vc, r2t, lens, s, out=out)

        def fused():
            for kc, vc in caches:
                decode_attention_rope(qk, v, cos, sin, kc, vc, loc, r2t, lens, s)
        cells = []
        for pdl in (False, True):
            with pdl_launches(pdl):
                cells += [graph_us(two, copies), graph_us(fused, copies)]
        rows.append([f"{name} bs={bs} len={seq}"] + [f"{c:.1f}" for c in cells])
        print(rows[-1], flush=True)
        del caches
    print(table(["shape", "two launches µs", "fused µs", "two, PDL", "fused, PDL"], rows))


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--merge", action="store_true", help="only the merge comparison (seconds)")
    ap.add_argument("--layouts", action="store_true", help="only the slot-layout comparison (seconds)")
    ap.add_argument("--head-major", action="store_true", help="with --layouts: also a head-major cache")
    ap.add_argument("--rope", action="store_true", help="only rope_store_ + attention vs the fused launch")
    ap.add_argument("--loads", action="store_true", help="only 8B bs 64: warps x eviction x keys x stages x splits")
    args = ap.parse_args()
    bw = _bandwidth()
    print(f"{torch.cuda.get_device_name(0)}, copy bandwidth {bw / 1e12:.2f} TB/s")
    if args.rope:
        rope(bw)
        return
    if args.loads:
        loads(bw)
        return
    if args.layouts:
        layouts(bw, orders=("token", "head") if args.head_major else ("token",))
        return
    if not args.merge:
        sweep(bw)
    merge(bw)


if __name__ == "__main__":
    main()
