"""FlashInferAttentionBackend: the AttentionBackend contract with flashinfer's paged attention
kernels. Optional: `attention_backend="flashinfer"` on CUDA, when the `flashinfer` package
(flashinfer-python) imports; it is not a dependency of sgl-lang.

Each KV pool slot is a flashinfer page of one token: the [num_slots + 1, Hkv, D] caches go in as
[num_slots + 1, 1, Hkv, D] (NHD), and a sequence's pages are the first seq_lens[i] slots of its
req_to_token row.

    store:   kernels/attention_store.store_kv (forward_rope: kernels/rope_store.rope_store_,
             the rotation and the store in one launch)
    decode:  BatchDecodeWithPagedKVCacheWrapper (its tensor-core kernel when a KV head serves
             four or more query heads)
    extend:  BatchPrefillWithPagedKVCacheWrapper, causal over the cached prefix + new tokens

plan() runs once per ForwardBatch, on the first layer (it needs the head counts), from the host's
lengths; the page list is gathered from req_to_token on the device, without a host sync. Every
layer then calls run().

CUDA graphs (decode): `bind_static_decode` marks the graph runner's static batch of g rows; its
first (eager, warm-up) forward plans a graph-mode wrapper of its own (fixed page buffers, one page
list buffer shared by all sizes) for placeholder lengths, and the capture records run() against
those buffers. Before each replay `before_decode_replay` plans the real batch into them (padding
rows: one key, slot 0), so the replay reads this step's pages. Prefills run eagerly.
"""
from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Optional

import torch

from sgl_lang.kernels.attention_store import store_kv
from sgl_lang.kernels.rope_store import rope_store_

from .attention import AttentionBackend

if TYPE_CHECKING:
    from ..forward_batch import ForwardBatch
    from ..mem.kv_pool import KVPool

WORKSPACE_BYTES = 256 << 20  # flashinfer's float workspace (split-KV partial outputs), shared by the wrappers
TENSOR_CORE_GROUP = 4  # decode through the tensor-core kernel from this many query heads per KV head


def import_flashinfer():
    """The flashinfer module, or an ImportError that says what to install."""
    try:
        import flashinfer
    except Exception as e:  # ImportError, or a broken install failing at import
        raise ImportError(f"attention_backend='flashinfer' needs the flashinfer package "
                          f"(pip install flashinfer-python), which does not import here: {e}") from e
    return flashinfer


def page_list(req_to_token: torch.Tensor, seq_lens: torch.Tensor, total: int) -> torch.Tensor:
    """The flat page (slot) list of a batch: req_to_token [bs, L] and seq_lens [bs] ints, both on
    the device, total = sum(seq_lens) (a host int, so nothing waits for the device) ->
    [total] int32 on the device: sequence i's slots 0 .. seq_lens[i] - 1, one sequence after another."""
    dev = req_to_token.device
    lens = seq_lens.to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(len(lens), device=dev), lens, output_size=total)
    starts = torch.cumsum(lens, 0) - lens  # [bs] first page of each sequence
    cols = torch.arange(total, device=dev) - starts[rows]  # position in its sequence
    return req_to_token[rows, cols].to(torch.int32)


class FlashInferAttentionBackend(AttentionBackend):
    name = "flashinfer"
    _write_kv = staticmethod(store_kv)  # the KV store of forward: one launch

    def __init__(self, workspace_bytes: int = WORKSPACE_BYTES):
        self._fi = import_flashinfer()
        self._workspace_bytes = workspace_bytes
        self._workspace: Optional[torch.Tensor] = None  # [workspace_bytes] uint8, made on first use
        self._wrappers: dict = {}  # ("decode", tensor cores) / ("prefill",) -> wrapper
        self._planned_fb: Optional["ForwardBatch"] = None
        self._planned = None  # the wrapper planned for _planned_fb
        # after each plan: its host-to-device copies read a page-locked buffer that the next plan
        # rewrites, so the next plan waits for this (long done by then; the overlapped scheduler
        # plans step N + 1 while step N runs)
        self._plan_copied: Optional[torch.cuda.Event] = None
        self._static: list = []  # (weakref to a bound static decode batch, its batch size): CUDA graphs
        self._graph_pages: Optional[torch.Tensor] = None  # [max_bs * max_context_len] int32, shared
        self._plan_args: dict = {}  # graph batch size -> (hq, hkv, d, plan kwargs) of its capture

    def bind_static_decode(self, fb: "ForwardBatch", seq_lens: torch.Tensor, num_kv_heads: int) -> None:
        """fb: a CUDA-graph runner's static decode batch (its req_to_token [g, L] is the runner's
        buffer). Its forwards use a graph-mode wrapper; nothing is planned here (this also runs
        inside the capture, where plan()'s copies are not allowed)."""
        if self._graph_size(fb) is None:
            self._static.append((weakref.ref(fb), fb.batch_size))
            if self._graph_pages is None or self._graph_pages.numel() < fb.req_to_token.numel():
                self._graph_pages = torch.zeros(fb.req_to_token.numel(), dtype=torch.int32,
                                                device=fb.req_to_token.device)

    def _graph_size(self, fb: "ForwardBatch") -> Optional[int]:
        """The batch size of fb's CUDA graph when fb is a bound static batch, else None."""
        return next((g for ref, g in self._static if ref() is fb), None)

    @torch.inference_mode()  # the graph wrapper's buffers were made in the capture's inference mode
    def before_decode_replay(self, static_fb: "ForwardBatch", fb: "ForwardBatch") -> None:
        """Plan decode batch fb (bs <= g rows) into the graph wrapper of static_fb (g rows) before
        its replay; the rows past bs are padding (one key in slot 0)."""
        self._wait_for_last_plan()
        self._planned = self._plan_graph(static_fb.batch_size, fb.seq_lens, fb.seq_lens_source,
                                         fb.req_to_token)
        self._planned_fb = static_fb
        self._mark_plan(fb.req_to_token.device)

    def _plan_graph(self, g: int, seq_lens: torch.Tensor, lens_source: torch.Tensor,
                    req_to_token: torch.Tensor):
        """Plan the graph wrapper of size g for bs = len(seq_lens) <= g sequences (seq_lens [bs]
        host ints; lens_source, req_to_token [bs, L]: their lengths and slots, to read on the
        device) and padding rows of one key in slot 0; -> the wrapper."""
        hq, hkv, d, common = self._plan_args[g]
        bs, device = len(seq_lens), req_to_token.device
        lens = torch.ones(g, dtype=torch.int64)
        lens[:bs] = seq_lens
        kv_indptr = torch.zeros(g + 1, dtype=torch.int32)
        kv_indptr[1:] = torch.cumsum(lens, 0)
        total = int(kv_indptr[bs])
        pages = torch.zeros(int(kv_indptr[-1]), dtype=torch.int32, device=device)  # padding: slot 0
        pages[:total] = page_list(req_to_token, lens_source.to(device), total)
        w = self._wrapper(("graph", g, hq // hkv >= TENSOR_CORE_GROUP), device)
        w.plan(kv_indptr, pages, torch.ones(g, dtype=torch.int32), hq, hkv, d, 1, **common)
        return w

    def _wait_for_last_plan(self) -> None:
        if self._plan_copied is not None:
            self._plan_copied.synchronize()

    def _mark_plan(self, device: torch.device) -> None:
        """Record when this plan's host-to-device copies are done (see _plan_copied)."""
        if device.type == "cuda":
            self._plan_copied = torch.cuda.Event()
            self._plan_copied.record()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                fb: "ForwardBatch", kv_pool: "KVPool") -> torch.Tensor:
        k_cache, v_cache = self._store_kv(k, v, layer_id, fb, kv_pool)  # [num_slots + 1, Hkv, D]
        return self._attend(q, k_cache, v_cache, fb)

    def forward_rope(self, qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                     layer_id: int, fb: "ForwardBatch", kv_pool: "KVPool", qk_norm=None) -> torch.Tensor:
        k_cache, v_cache = self._kv_cache(kv_pool, layer_id)  # [num_slots + 1, Hkv, D]
        norm = None if qk_norm is None else (qk_norm[0].weight, qk_norm[1].weight, qk_norm[0].eps)
        q = rope_store_(qk, v, cos, sin_signed, k_cache, v_cache, fb.out_cache_loc, norm)  # [T, Hq, D]
        return self._attend(q, k_cache, v_cache, fb)

    def _attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                fb: "ForwardBatch") -> torch.Tensor:
        """Attention of q [T, Hq, D] over the cache, whose new tokens are already stored -> [T, Hq * D]."""
        if self._planned_fb is not fb:
            self._plan(fb, q, k_cache)
        out = self._planned.run(q.contiguous(), (k_cache.unsqueeze(1), v_cache.unsqueeze(1)))  # [T, Hq, D]
        return out.view(q.shape[0], -1)

    def _wrapper(self, key: tuple, device: torch.device):
        w = self._wrappers.get(key)
        if w is None:
            if self._workspace is None:
                self._workspace = torch.empty(self._workspace_bytes, dtype=torch.uint8, device=device)
            if key[0] == "decode":
                w = self._fi.BatchDecodeWithPagedKVCacheWrapper(self._workspace, "NHD", use_tensor_cores=key[1])
            elif key[0] == "graph":  # ("graph", batch size, tensor cores): fixed buffers for a CUDA graph
                g = key[1]
                w = self._fi.BatchDecodeWithPagedKVCacheWrapper(
                    self._workspace, "NHD", use_cuda_graph=True, use_tensor_cores=key[2],
                    paged_kv_indptr_buffer=torch.zeros(g + 1, dtype=torch.int32, device=device),
                    paged_kv_indices_buffer=self._graph_pages,
                    paged_kv_last_page_len_buffer=torch.ones(g, dtype=torch.int32, device=device))
            else:
                w = self._fi.BatchPrefillWithPagedKVCacheWrapper(self._workspace, "NHD")
            self._wrappers[key] = w
        return w

    def _plan(self, fb: "ForwardBatch", q: torch.Tensor, k_cache: torch.Tensor) -> None:
        hq, d, hkv = q.shape[1], q.shape[2], k_cache.shape[1]
        self._wait_for_last_plan()
        seq_lens = fb.seq_lens
        common = dict(q_data_type=q.dtype, kv_data_type=k_cache.dtype, sm_scale=1.0 / math.sqrt(d))
        g = self._graph_size(fb) if fb.is_decode else None
        if g is not None:  # a graph's static batch (its warm-up forward): placeholder lengths
            self._plan_args[g] = (hq, hkv, d, common)
            w = self._plan_graph(g, seq_lens, fb.seq_lens_source, fb.req_to_token)
        else:
            kv_indptr = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
            kv_indptr[1:] = torch.cumsum(seq_lens, 0)
            pages = page_list(fb.req_to_token, fb.seq_lens_source.to(q.device), int(kv_indptr[-1]))
            last_page_len = torch.ones(len(seq_lens), dtype=torch.int32)  # pages of one token: always full
            if fb.is_decode:
                w = self._wrapper(("decode", hq // hkv >= TENSOR_CORE_GROUP), q.device)
                w.plan(kv_indptr, pages, last_page_len, hq, hkv, d, 1, **common)
            else:
                qo_indptr = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
                qo_indptr[1:] = torch.cumsum(fb.extend_lens, 0)
                w = self._wrapper(("prefill",), q.device)
                w.plan(qo_indptr, kv_indptr, pages, last_page_len, hq, hkv, d, 1, causal=True, **common)
        self._mark_plan(q.device)
        self._planned_fb, self._planned = fb, w
