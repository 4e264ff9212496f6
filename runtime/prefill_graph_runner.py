"""PrefillGraphRunner: prefill (extend) forwards replayed from CUDA graphs, one per token bucket.

A small model's prefill is bound by the host: on an H200 a 512-token SmolLM2-135M prefill spent
~11 ms launching ~300 kernels eagerly (0.4 ms per decoder layer; profile_ttft) for ~1 ms of GPU
work. A prefill's kernels depend only on its token count once the attention grid is a padded
list of blocks (kernels/attention_extend.py), so each bucket of token counts is captured once,
for any batch of up to max_seqs sequences, and replayed: the host then queues one copy of the
batch's lengths, the token copies and one graph.

    static buffers (a graph of bucket g reads rows [:g] and blocks [:nb(g)])
        input_ids, positions, out_cache_loc   [max_tokens] int64
        req_to_token                          [max_seqs, max_context_len] int64 (row tails stale:
                                              attention reads only each sequence's tokens)
        meta                                  int32, ExtendMetaLayout: q start, prefix_len and
                                              extend_len per sequence (0 for absent ones), then
                                              the block list of nb(max_tokens) (sequence -1: no
                                              work); a graph of bucket g reads its first nb(g)
    graph g:  hidden[g] = model(fb_g, pool, attn)   # [g, hidden]; rows past the batch are padding
    nb(g) = cdiv(g, BLOCK_M) + max_seqs            # blocks of any batch of <= g tokens

Padding rows hold token 0 at position 0 and store their KV into the dummy slot 0; attention
computes and writes only the listed blocks of real sequences, so no real row ever sees them. The
LM head runs eagerly on the rows that need logits.

A big model's long prefill is bound by the GPU instead, where a graph saves nothing and padding
costs compute: buckets are captured smallest first, each timed replayed and eager (synchronised,
best of 3, as a batch of prompts of up to 512 tokens), and capture stops at the first bucket whose
replay is not clearly faster.

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
_TIMED_LEN = 512  # tokens per sequence of the batch a bucket is timed with


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
    def __init__(self, model, attn, pool, max_tokens: int, max_seqs: int, max_context_len: int,
                 device: torch.device):
        if not hasattr(attn, "bind_static_extend"):
            raise ValueError(f"attention backend {attn.name!r} cannot capture a prefill graph")
        from sgl_lang.kernels.attention_extend import BLOCK_M, ExtendMetaLayout  # (triton: CUDA only)
        self._block_m = BLOCK_M
        self.model, self.attn, self.pool = model, attn, pool
        self.max_seqs = max_seqs
        self.max_context_len = max_context_len
        self.device = device
        i64 = dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_tokens, **i64)
        self.positions = torch.zeros(max_tokens, **i64)
        self.out_cache_loc = torch.zeros(max_tokens, **i64)
        self.req_to_token = torch.zeros(max_seqs, max_context_len, **i64)
        self.layout = ExtendMetaLayout.of(max_seqs, self._num_blocks(max_tokens))
        self.meta = torch.zeros(self.layout.size, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.hidden: dict[int, torch.Tensor] = {}  # bucket -> its output [g, hidden]
        self.timings: dict[int, tuple[float, float]] = {}  # bucket -> (eager s, replay s)
        self.buckets: list[int] = []  # captured and kept, ascending
        self.max_tokens = 0
        self._capture(prefill_buckets(max_tokens))

    def _num_blocks(self, g: int) -> int:
        return -(-g // self._block_m) + self.max_seqs

    def _static_batch(self, g: int) -> ForwardBatch:
        s = self.max_seqs
        return ForwardBatch(
            input_ids=self.input_ids[:g], positions=self.positions[:g],
            out_cache_loc=self.out_cache_loc[:g], req_to_token=self.req_to_token,
            seq_lens=torch.zeros(s, dtype=torch.int64), prefix_lens=torch.zeros(s, dtype=torch.int64),
            extend_lens=torch.zeros(s, dtype=torch.int64), is_decode=False,
            logits_indices=torch.tensor([g - 1], device=self.device))

    def _run(self, fb: ForwardBatch, g: int) -> torch.Tensor:
        q_starts, prefix_lens, extend_lens, blocks = self.layout.views(self.meta, self.max_seqs,
                                                                       self._num_blocks(g))
        self.attn.bind_static_extend(fb, q_starts, prefix_lens, extend_lens, blocks)
        return self.model(fb, self.pool, self.attn)

    @torch.inference_mode()
    def _capture(self, buckets: list[int]) -> None:
        device = self.device
        mempool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(device)

        def best_of_3(fn) -> float:
            times = []
            for _ in range(3):
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            return min(times)

        # smallest first, so a GPU-bound model stops before its big (slow, memory-hungry) buckets;
        # later graphs reuse what earlier captures freed in the shared pool
        for g in buckets:
            fb = self._static_batch(g)
            # timed (and captured) as a batch of prompts of up to _TIMED_LEN tokens: a long single
            # sequence's attention would call a bucket GPU-bound that batches of prompts are not
            k = min(self.max_seqs, -(-g // _TIMED_LEN))
            extend = torch.full((k,), g // k, dtype=torch.int32)
            extend[:g % k] += 1
            self.meta.copy_(self.layout.pack(torch.zeros(k, dtype=torch.int32), extend))
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                self._run(fb, g)  # warm-up: Triton compiles, cuBLAS picks its kernels
            torch.cuda.current_stream(device).wait_stream(stream)
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=mempool, stream=stream):
                hidden = self._run(fb, g)
            eager, replay = best_of_3(lambda: self._run(fb, g)), best_of_3(graph.replay)
            self.timings[g] = (eager, replay)
            if replay >= _KEEP_BELOW * eager:
                break
            self.graphs[g], self.hidden[g] = graph, hidden
            self.buckets.append(g)
            self.max_tokens = g
        torch.cuda.synchronize(device)
        logger.info("prefill CUDA graphs up to %d tokens (%d buckets)", self.max_tokens, len(self.buckets))

    def can_run(self, fb: ForwardBatch) -> bool:
        return (not fb.is_decode and 1 <= fb.batch_size <= self.max_seqs
                and 0 < fb.num_tokens <= self.max_tokens
                and fb.req_to_token.shape[1] <= self.max_context_len)

    def run(self, fb: ForwardBatch) -> torch.Tensor:
        """Prefill batch fb; -> hidden [fb.num_tokens, hidden] (a view of the graph's output,
        valid until the next replay of that bucket)."""
        n, bs = fb.num_tokens, fb.batch_size
        g = next(s for s in self.buckets if s >= n)
        self.input_ids[:n].copy_(fb.input_ids, non_blocking=True)
        self.positions[:n].copy_(fb.positions, non_blocking=True)
        self.out_cache_loc[:n].copy_(fb.out_cache_loc, non_blocking=True)
        if g > n:  # padding rows: token 0 at position 0, KV into the dummy slot 0
            self.input_ids[n:g].zero_()
            self.positions[n:g].zero_()
            self.out_cache_loc[n:g].zero_()
        width = fb.req_to_token.shape[1]
        self.req_to_token[:bs, :width].copy_(fb.req_to_token, non_blocking=True)
        # pinned, so the copy is queued without waiting (torch keeps the block until it is done)
        self.meta.copy_(self.layout.pack(fb.prefix_lens, fb.extend_lens).pin_memory(), non_blocking=True)
        self.graphs[g].replay()
        return self.hidden[g][:n]
