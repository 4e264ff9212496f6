"""CudaGraphRunner: decode steps replayed from CUDA graphs captured once per padded batch size.

A decode forward (one new token per sequence) has the same kernels and shapes for every step of
a given batch size, so it is captured once and replayed: the host then launches one graph
instead of hundreds of kernels. Inputs live in static buffers that are refilled before each
replay; a batch of size bs runs the graph of the smallest captured size >= bs, its extra rows
padded to harmless values (token 0, position 0, KV written to the dummy slot 0, length 1).

    static buffers (max_bs rows; a graph of size g reads rows [:g])
        input_ids, positions, out_cache_loc   [max_bs] int64
        req_to_token                          [max_bs, max_context_len] int64 (row tails stale:
                                              attention reads only the first seq_len columns)
        seq_lens                              [max_bs] int32, bound into the attention backend
    graph g:  logits[g] = model.compute_logits(model(fb_g, pool, attn))   # [g, vocab] float32

Only attention backends with `bind_static_decode` (triton, flashinfer) can be captured; one with
`before_decode_replay` (flashinfer) is called before each replay with the graph's static batch and
the real one.
"""
from __future__ import annotations

from typing import Optional

import torch

from sgl_lang.kernels.pdl import pdl_launches

from .forward_batch import ForwardBatch
from .layers.decode_gemm import DecodeGemmChoice, choose_decode_gemm, set_decode_gemm


class CudaGraphUnsupported(RuntimeError):
    """The attention backend cannot run inside a CUDA graph."""


def capture_batch_sizes(max_bs: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 8 up to max_bs (and max_bs itself)."""
    sizes = [b for b in (1, 2, 4) if b < max_bs] + list(range(8, max_bs + 1, 8))
    if not sizes or sizes[-1] != max_bs:
        sizes.append(max_bs)
    return sizes


class CudaGraphRunner:
    def __init__(self, model, attn, pool, max_bs: int, max_context_len: int, num_kv_heads: int,
                 device: torch.device, sizes: Optional[list[int]] = None, pdl: bool = False):
        if not hasattr(attn, "bind_static_decode"):
            raise CudaGraphUnsupported(f"attention backend {attn.name!r} cannot be captured in a CUDA "
                                       f"graph; use attention_backend='triton' or disable_cuda_graph")
        self.model, self.attn, self.pool = model, attn, pool
        self._before_replay = getattr(attn, "before_decode_replay", None)
        self.max_bs = max_bs
        self.max_context_len = max_context_len
        self.num_kv_heads = num_kv_heads
        self.batch_sizes = sizes or capture_batch_sizes(max_bs)  # (sizes: a trial capture)
        self.pdl = pdl  # Triton kernels captured with programmatic dependent launch (kernels/pdl.py)
        i64 = dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_bs, **i64)
        self.positions = torch.zeros(max_bs, **i64)
        self.out_cache_loc = torch.zeros(max_bs, **i64)
        self.req_to_token = torch.zeros(max_bs, max_context_len, **i64)
        self.seq_lens = torch.ones(max_bs, dtype=torch.int32, device=device)
        self._rows: dict[int, tuple] = {}  # batch size -> (graph size, views of its rows), see _rows_of
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}  # graph size -> its output [g, vocab] f32
        self.batches: dict[int, ForwardBatch] = {}
        self._capture_all(device)

    def _static_batch(self, bs: int, device: torch.device) -> ForwardBatch:
        return ForwardBatch(
            input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            out_cache_loc=self.out_cache_loc[:bs], req_to_token=self.req_to_token[:bs],
            seq_lens=torch.ones(bs, dtype=torch.int64), prefix_lens=torch.zeros(bs, dtype=torch.int64),
            extend_lens=torch.ones(bs, dtype=torch.int64), is_decode=True,
            logits_indices=torch.arange(bs, device=device))

    def _run(self, fb: ForwardBatch) -> torch.Tensor:
        self.attn.bind_static_decode(fb, self.seq_lens[:fb.batch_size], self.num_kv_heads)
        return self.model.compute_logits(self.model(fb, self.pool, self.attn))

    @torch.inference_mode()
    def _capture_all(self, device: torch.device) -> None:
        mempool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(device)
        for bs in reversed(self.batch_sizes):  # largest first: smaller graphs reuse its memory
            fb = self._static_batch(bs, device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                # warm-up: Triton compiles, rotary tables are built; with PDL both launch kinds
                # compile, since eager calls of these shapes (a prefill's logits) launch plainly
                for pdl in (False, self.pdl):
                    with pdl_launches(pdl):
                        self._run(fb)
            torch.cuda.current_stream(device).wait_stream(stream)
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=mempool, stream=stream), pdl_launches(self.pdl):
                self.logits[bs] = self._run(fb)
            self.graphs[bs] = graph
            self.batches[bs] = fb
        torch.cuda.synchronize(device)

    def replay_seconds(self, bs: int, replays: int = 10) -> float:
        """Seconds per replay of graph bs on whatever its static inputs hold (best of 3)."""
        graph = self.graphs[bs]
        graph.replay()
        best = float("inf")
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3 / replays)
        return best

    def can_run(self, fb: ForwardBatch) -> bool:
        return (fb.is_decode and fb.batch_size <= self.max_bs
                and fb.req_to_token.shape[1] <= self.max_context_len)

    def _rows_of(self, bs: int) -> tuple:
        """(g, input_ids, positions, out_cache_loc, req_to_token, seq_lens, logits): the graph size
        a batch of bs runs and the first bs rows of its static buffers and output, made once per
        batch size (each slice is a host-side torch call per step otherwise)."""
        rows = self._rows.get(bs)
        if rows is None:
            g = next(s for s in self.batch_sizes if s >= bs)
            rows = self._rows[bs] = (g, self.input_ids[:bs], self.positions[:bs], self.out_cache_loc[:bs],
                                     self.req_to_token[:bs], self.seq_lens[:bs], self.logits[g][:bs])
        return rows

    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        """Run decode batch fb; -> logits [fb.batch_size, vocab] float32 (a view of the graph's
        output, valid until the next replay)."""
        bs = fb.batch_size
        g, input_ids, positions, out_cache_loc, req_to_token, seq_lens, logits = self._rows_of(bs)
        input_ids.copy_(fb.input_ids, non_blocking=True)
        positions.copy_(fb.positions, non_blocking=True)
        out_cache_loc.copy_(fb.out_cache_loc, non_blocking=True)
        width = fb.req_to_token.shape[1]
        req_to_token[:, :width].copy_(fb.req_to_token, non_blocking=True)
        seq_lens.copy_(fb.seq_lens_source, non_blocking=True)  # device-to-device when prepared there
        if g > bs:  # padding rows: token 0 at position 0, KV into dummy slot 0, one key (slot 0)
            self.input_ids[bs:g].zero_()
            self.positions[bs:g].zero_()
            self.out_cache_loc[bs:g].zero_()
            self.req_to_token[bs:g, 0].zero_()
            self.seq_lens[bs:g].fill_(1)
        if self._before_replay is not None:  # flashinfer: plans this batch's pages into the graph's buffers
            self._before_replay(self.batches[g], fb)
        self.graphs[g].replay()
        return logits


def build_decode_graphs(model, attn, pool, max_bs: int, max_context_len: int, num_kv_heads: int,
                        device: torch.device, decode_gemm: str, eligible: bool, pdl: bool = False
                        ) -> tuple[CudaGraphRunner, Optional[DecodeGemmChoice]]:
    """The decode graphs, captured after choosing cuBLAS or kernels/skinny_gemm.py for the
    decode GEMMs (layers/decode_gemm.py). decode_gemm "auto" times one graph of the largest
    captured batch in 17..64 both ways (static inputs: one key per sequence, so the step is its
    GEMMs); "triton" / "cublas" force it. eligible: a single-rank bf16/fp16 model. pdl: capture
    with programmatic dependent launch."""
    choice = None
    trial = [b for b in capture_batch_sizes(max_bs) if 16 < b <= 64]
    if eligible and decode_gemm == "triton":
        set_decode_gemm(model, True)
    elif eligible and decode_gemm == "auto" and trial:
        def time_graph() -> float:
            runner = CudaGraphRunner(model, attn, pool, max_bs, max_context_len, num_kv_heads, device,
                                     sizes=[trial[-1]], pdl=pdl)
            return runner.replay_seconds(trial[-1])
        choice = choose_decode_gemm(model, time_graph)
    return CudaGraphRunner(model, attn, pool, max_bs, max_context_len, num_kv_heads, device, pdl=pdl), choice
