"""Shared pieces of the GPU kernel benchmarks.

    graph_us(calls, n) -> GPU µs per call of `calls` (which makes n calls), replayed from one CUDA
        graph, best of 3 (no launch overhead: what the kernels cost inside the engine's graphs)
    kv_cache(slots, hkv, d, head_major=False) -> a random [slots, Hkv, D] bf16 cache (or a
        head-major view of one)
    extend_inputs(bs, seq, hq, hkv, d, shuffled, head_major=False) -> the arguments of a fresh prefill of bs prompts
        of seq tokens for kernels/attention_extend.py: (q, k_cache, v_cache, req_to_token,
        q_starts, prefix_lens, extend_lens), KV slots shuffled as a pool hands them out or in order
"""
from __future__ import annotations

import torch


def graph_us(calls, n: int) -> float:
    calls()  # compile outside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        calls()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        calls()
    best = float("inf")
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, 1e3 * start.elapsed_time(end) / n)
    return best


def kv_cache(slots: int, hkv: int, d: int, head_major: bool = False) -> torch.Tensor:
    """[slots, Hkv, D] bf16 random on the GPU: contiguous (a slot's heads together), or head-major
    (a view of a [Hkv, slots, D] buffer: each head's slots together; the kernels take strides)."""
    if not head_major:
        return torch.randn(slots, hkv, d, device="cuda", dtype=torch.bfloat16)
    return torch.randn(hkv, slots, d, device="cuda", dtype=torch.bfloat16).permute(1, 0, 2)


def extend_inputs(bs: int, seq: int, hq: int, hkv: int, d: int, shuffled: bool, head_major: bool = False):
    t = bs * seq
    kc, vc = kv_cache(t + 1, hkv, d, head_major), kv_cache(t + 1, hkv, d, head_major)
    slots = torch.randperm(t, device="cuda") if shuffled else torch.arange(t, device="cuda")
    r2t = (slots + 1).view(bs, seq)  # [bs, seq] (slot 0 is the pool's dummy)
    q = torch.randn(t, hq, d, device="cuda", dtype=torch.bfloat16)  # [T, Hq, D]
    starts = torch.arange(bs, device="cuda", dtype=torch.int32) * seq
    zeros = torch.zeros(bs, device="cuda", dtype=torch.int32)
    ext = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
    return q, kc, vc, r2t, starts, zeros, ext
