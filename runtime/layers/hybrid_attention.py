"""HybridAttentionBackend: one backend for prefill and mixed batches, another for decode batches
(EngineConfig.prefill_attention_backend / decode_attention_backend, as SGLang's flags of those
names), e.g. flashinfer's prefill kernel with the triton decode kernel and its CUDA graphs.

A batch goes to the decode backend when fb.is_decode, else to the prefill backend; each keeps its
own per-batch metadata. CUDA-graph capture hooks are those of the backend that runs that kind of
batch: `bind_static_decode` exists only when the decode backend has it, `bind_static_extend` only
when the prefill backend has it (the graph runners test for them with hasattr).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .attention import AttentionBackend

if TYPE_CHECKING:
    from ..forward_batch import ForwardBatch
    from ..mem.kv_pool import KVPool


class HybridAttentionBackend(AttentionBackend):
    def __init__(self, prefill: AttentionBackend, decode: AttentionBackend):
        self.prefill, self.decode = prefill, decode
        self.name = f"{prefill.name} (prefill) + {decode.name} (decode)"
        if hasattr(decode, "bind_static_decode"):
            self.bind_static_decode = decode.bind_static_decode
        if hasattr(decode, "before_decode_replay"):
            self.before_decode_replay = decode.before_decode_replay
        if hasattr(prefill, "bind_static_extend"):
            self.bind_static_extend = prefill.bind_static_extend

    def warm_up(self, kv_pool: "KVPool", num_q_heads: int, max_rows: int, eager_decode_rows=()) -> None:
        """Each side's start-up compiles (TritonAttentionBackend.warm_up): prefill and mixed
        batches on the prefill backend, eager decode batches on the decode backend."""
        if hasattr(self.prefill, "warm_up"):
            self.prefill.warm_up(kv_pool, num_q_heads, max_rows, ())
        if hasattr(self.decode, "warm_up"):
            self.decode.warm_up(kv_pool, num_q_heads, 0, eager_decode_rows)

    def _of(self, fb: "ForwardBatch") -> AttentionBackend:
        return self.decode if fb.is_decode else self.prefill

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        self._of(fb).init_forward_metadata(fb)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                fb: "ForwardBatch", kv_pool: "KVPool") -> torch.Tensor:
        return self._of(fb).forward(q, k, v, layer_id, fb, kv_pool)

    def forward_rope(self, qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                     layer_id: int, fb: "ForwardBatch", kv_pool: "KVPool", qk_norm=None) -> torch.Tensor:
        return self._of(fb).forward_rope(qk, v, cos, sin_signed, layer_id, fb, kv_pool, qk_norm)
