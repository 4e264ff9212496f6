"""PrefillGraphRunner: single-sequence prefill (extend) forwards replayed from CUDA graphs.

A small model's prefill is bound by the host: on an H200 a 512-token SmolLM2-135M prefill spent
~11 ms launching ~300 kernels eagerly (0.4 ms per decoder layer; profile_ttft) for ~1 ms of GPU
work. A batch of one sequence has the same kernels for every prompt whose token count pads to
the same bucket, so each bucket is captured once and replayed: the host then queues a few
copies and one graph.

    static buffers (max_tokens rows; the graph of bucket g reads rows [:g])
        input_ids, positions, out_cache_loc   [max_tokens] int64
        req_to_token                          [1, max_context_len] int64 (tail stale: attention
                                              reads only the first prefix_len + extend_len)
        extend_meta                           [3, 1] int32: q start (0), prefix_len, extend_len
    graph g:  hidden[g] = model(fb_g, pool, attn)   # [g, hidden]; rows >= extend_len are padding

Padding rows hold token 0 at position 0 and store their KV into the dummy slot 0; the extend
attention kernel reads the real extend_len from extend_meta, so it neither computes nor writes
their rows and no real row ever sees them. The LM head runs eagerly on the rows that need logits.

A big model's long prefill is bound by the GPU instead, where a graph saves nothing and padding
costs compute: after capture each bucket, smallest first, is timed replayed and eager (synchronised,
best of 3), and the graphs are kept only up to the first bucket whose replay is not clearly faster.

Only attention backends with `bind_static_extend` (triton) can be captured; the model must be a
single rank (tensor-parallel prefills stay eager).
"""
from __future__ import annotations

import logging
import time

import torch

from .forward_batch import ForwardBatch

logger = logging.getLogger("sgl_lang.runtime")
_KEEP_BELOW = 0.9  # a bucket's replay must take under this share of its eager forward


def prefill_buckets(max_tokens: int) -> list[int]:
    """Token counts captured: multiples of 16 up to 128, then four steps per doubling (160, 192,
    224, 256, 320, ...: padding under a quarter of the tokens), ending at max_tokens itself."""
    sizes, step, size = [], 16, 16
    while size < max_tokens:
        sizes.append(size)
        if size >= 8 * step:  # 128 = 8 * 16, 256 = 8 * 32, ...
            step *= 2
        size += step
    sizes.append(max_tokens)
    return sizes


class PrefillGraphRunner:
    def __init__(self, model, attn, pool, max_tokens: int, max_context_len: int,
                 device: torch.device):
        if not hasattr(attn, "bind_static_extend"):
            raise ValueError(f"attention backend {attn.name!r} cannot capture a prefill graph")
        self.model, self.attn, self.pool = model, attn, pool
        self.max_tokens = max_tokens
        self.max_context_len = max_context_len
        self.buckets = prefill_buckets(max_tokens)
        i64 = dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_tokens, **i64)
        self.positions = torch.zeros(max_tokens, **i64)
        self.out_cache_loc = torch.zeros(max_tokens, **i64)
        self.req_to_token = torch.zeros(1, max_context_len, **i64)
        self.extend_meta = torch.zeros(3, 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.hidden: dict[int, torch.Tensor] = {}  # bucket -> its output [g, hidden]
        self.timings: dict[int, tuple[float, float]] = {}  # bucket -> (eager s, replay s)
        self._capture_all(device)
        self._keep_faster_buckets(device)

    def _static_batch(self, g: int, device: torch.device) -> ForwardBatch:
        return ForwardBatch(
            input_ids=self.input_ids[:g], positions=self.positions[:g],
            out_cache_loc=self.out_cache_loc[:g], req_to_token=self.req_to_token,
            seq_lens=torch.tensor([g]), prefix_lens=torch.zeros(1, dtype=torch.int64),
            extend_lens=torch.tensor([g]), is_decode=False,
            logits_indices=torch.tensor([g - 1], device=device))

    def _run(self, fb: ForwardBatch) -> torch.Tensor:
        meta = self.extend_meta
        self.attn.bind_static_extend(fb, meta[0], meta[1], meta[2], fb.num_tokens)
        return self.model(fb, self.pool, self.attn)

    @torch.inference_mode()
    def _capture_all(self, device: torch.device) -> None:
        mempool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(device)
        for g in reversed(self.buckets):  # largest first: smaller graphs reuse its memory
            fb = self._static_batch(g, device)
            self.extend_meta.copy_(torch.tensor([[0], [0], [g]], dtype=torch.int32))
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: Triton compiles, cuBLAS picks its kernels
                    self._run(fb)
            torch.cuda.current_stream(device).wait_stream(stream)
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=mempool, stream=stream):
                self.hidden[g] = self._run(fb)
            self.graphs[g] = graph
        torch.cuda.synchronize(device)

    @torch.inference_mode()
    def _keep_faster_buckets(self, device: torch.device) -> None:
        def best_of_3(fn) -> float:
            times = []
            for _ in range(3):
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            return min(times)

        kept = []
        for g in self.buckets:
            fb = self._static_batch(g, device)
            self.extend_meta.copy_(torch.tensor([[0], [0], [g]], dtype=torch.int32))
            eager, replay = best_of_3(lambda: self._run(fb)), best_of_3(self.graphs[g].replay)
            self.timings[g] = (eager, replay)
            if replay >= _KEEP_BELOW * eager:
                break
            kept.append(g)
        for g in self.buckets[len(kept):]:
            del self.graphs[g], self.hidden[g]
        self.buckets = kept
        self.max_tokens = kept[-1] if kept else 0
        logger.info("prefill CUDA graphs up to %d tokens (%d buckets)", self.max_tokens, len(kept))
        torch.cuda.synchronize(device)

    def can_run(self, fb: ForwardBatch) -> bool:
        return (not fb.is_decode and fb.batch_size == 1 and 0 < fb.num_tokens <= self.max_tokens
                and fb.req_to_token.shape[1] <= self.max_context_len)

    def run(self, fb: ForwardBatch) -> torch.Tensor:
        """Prefill the one sequence of fb; -> hidden [fb.num_tokens, hidden] (a view of the
        graph's output, valid until the next replay of that bucket)."""
        n = fb.num_tokens
        g = next(s for s in self.buckets if s >= n)
        self.input_ids[:n].copy_(fb.input_ids, non_blocking=True)
        self.positions[:n].copy_(fb.positions, non_blocking=True)
        self.out_cache_loc[:n].copy_(fb.out_cache_loc, non_blocking=True)
        if g > n:  # padding rows: token 0 at position 0, KV into the dummy slot 0
            self.input_ids[n:g].zero_()
            self.positions[n:g].zero_()
            self.out_cache_loc[n:g].zero_()
        width = fb.req_to_token.shape[1]
        self.req_to_token[:, :width].copy_(fb.req_to_token, non_blocking=True)
        # pinned, so the copy is queued without waiting (torch keeps the block until it is done)
        meta = torch.tensor([[0], [int(fb.prefix_lens[0])], [n]], dtype=torch.int32).pin_memory()
        self.extend_meta.copy_(meta, non_blocking=True)
        self.graphs[g].replay()
        return self.hidden[g][:n]
