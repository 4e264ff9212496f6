"""TorchAttentionBackend: the AttentionBackend contract in plain torch (SDPA); the CPU path.

Decode (every extend_len == 1), one SDPA call for the whole batch:

    kv_idx = req_to_token[:, :L]                  # [bs, L], L = max seq_len; padding -> slot 0
    K = k_buffer[layer][kv_idx]                   # [bs, L, Hkv, D], masked where pos >= seq_len
    q: [bs, Hq, D] -> [bs, Hkv, G, D]             # G = Hq / Hkv query heads per KV head
    out = SDPA(q, K^T, V^T, mask [bs, 1, 1, L])   # [bs, Hkv, G, D] -> [bs, Hq * D]

Extend (prefill, possibly after a cached prefix): one SDPA call per sequence, its new queries
against the keys of positions 0 .. seq_len-1; a fresh prefill (prefix 0) uses the new k/v
directly with is_causal, a prefix-cached one reads the pool and uses an explicit causal mask
aligned to the bottom right (query j sits at position prefix_len + j).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from .attention import AttentionBackend

if TYPE_CHECKING:
    from ..forward_batch import ForwardBatch
    from ..mem.kv_pool import KVPool


@dataclass(frozen=True)
class _SeqSlice:
    q_start: int
    q_end: int
    prefix_len: int
    seq_len: int
    kv_idx: torch.Tensor  # [seq_len] pool slots of this sequence
    mask: Optional[torch.Tensor]  # [extend_len, seq_len] bool, True = attend; None when prefix_len == 0


@dataclass(frozen=True)
class _DecodeMeta:
    kv_idx: torch.Tensor  # [bs, L] pool slots
    mask: Optional[torch.Tensor]  # [bs, 1, 1, L] bool, True = attend; None when no padding


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def __init__(self):
        self._meta_fb: Optional["ForwardBatch"] = None
        self._decode: Optional[_DecodeMeta] = None
        self._seqs: list[_SeqSlice] = []
        self._num_decode = 0  # leading single-token sequences served by the batched decode path

    # ------------------------------------------------------------------ metadata
    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        self._meta_fb = fb
        # A mixed batch lists its decodes first (the scheduler's order): those leading
        # single-token sequences take the batched decode path, the rest go one by one.
        ext = fb.extend_lens.tolist()
        self._num_decode = len(ext) if fb.is_decode else next(
            (i for i, n in enumerate(ext) if n != 1), len(ext))
        nd = self._num_decode
        self._decode = self._decode_meta(fb.req_to_token[:nd], fb.seq_lens[:nd]) if nd else None
        self._seqs = [] if fb.is_decode else self._extend_meta(fb)[nd:]

    @staticmethod
    def _decode_meta(req_to_token: torch.Tensor, seq_lens_t: torch.Tensor) -> _DecodeMeta:
        seq_lens = seq_lens_t.tolist()
        max_len = max(seq_lens)
        device = req_to_token.device
        kv_idx = req_to_token[:, :max_len]
        mask = None
        if min(seq_lens) != max_len:
            lens = seq_lens_t.to(device)
            mask = (torch.arange(max_len, device=device)[None, :] < lens[:, None])[:, None, None, :]
        return _DecodeMeta(kv_idx=kv_idx, mask=mask)

    @staticmethod
    def _extend_meta(fb: "ForwardBatch") -> list[_SeqSlice]:
        device = fb.req_to_token.device
        out, start = [], 0
        for i, (prefix_len, extend_len, seq_len) in enumerate(
                zip(fb.prefix_lens.tolist(), fb.extend_lens.tolist(), fb.seq_lens.tolist())):
            assert prefix_len + extend_len == seq_len, (
                f"seq {i}: prefix_len {prefix_len} + extend_len {extend_len} != seq_len {seq_len}")
            kv_idx = fb.req_to_token[i, :seq_len]
            mask = None
            if prefix_len > 0:
                q_pos = prefix_len + torch.arange(extend_len, device=device)  # [E]
                mask = torch.arange(seq_len, device=device)[None, :] <= q_pos[:, None]  # [E, S]
            out.append(_SeqSlice(start, start + extend_len, prefix_len, seq_len, kv_idx, mask))
            start += extend_len
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                fb: "ForwardBatch", kv_pool: "KVPool") -> torch.Tensor:
        if self._meta_fb is not fb:
            self.init_forward_metadata(fb)
        k_cache, v_cache = self._store_kv(k, v, layer_id, fb, kv_pool)  # [num_slots + 1, Hkv, D]
        if fb.is_decode:
            return self._forward_decode(q, k_cache, v_cache)
        out = self._forward_extend(q, k, v, k_cache, v_cache)
        nd = self._num_decode
        if nd:
            out[:nd] = self._forward_decode(q[:nd], k_cache, v_cache)
        return out

    def _forward_decode(self, q, k_cache, v_cache) -> torch.Tensor:
        meta = self._decode
        bs, num_heads, head_dim = q.shape
        num_kv_heads = k_cache.shape[1]
        keys = k_cache[meta.kv_idx].transpose(1, 2)  # [bs, Hkv, L, D]
        values = v_cache[meta.kv_idx].transpose(1, 2)  # [bs, Hkv, L, D]
        q4 = q.view(bs, num_kv_heads, num_heads // num_kv_heads, head_dim)  # [bs, Hkv, G, D]
        out = F.scaled_dot_product_attention(q4, keys.to(q.dtype), values.to(q.dtype),
                                             attn_mask=meta.mask)  # [bs, Hkv, G, D]
        return out.reshape(bs, num_heads * head_dim)

    def _forward_extend(self, q, k, v, k_cache, v_cache) -> torch.Tensor:
        num_tokens, num_heads, head_dim = q.shape
        is_gqa = num_heads != k.shape[1]
        out = q.new_empty(num_tokens, num_heads * head_dim)
        for s in self._seqs:
            if s.q_end == s.q_start:
                continue
            q_i = q[s.q_start:s.q_end].transpose(0, 1)  # [Hq, E, D]
            if s.prefix_len == 0 and k_cache.dtype == q.dtype:
                k_i = k[s.q_start:s.q_end].transpose(0, 1)  # [Hkv, E, D]
                v_i = v[s.q_start:s.q_end].transpose(0, 1)
                o = F.scaled_dot_product_attention(q_i, k_i, v_i, is_causal=True, enable_gqa=is_gqa)
            else:
                k_i = k_cache[s.kv_idx].transpose(0, 1).to(q.dtype)  # [Hkv, S, D]
                v_i = v_cache[s.kv_idx].transpose(0, 1).to(q.dtype)
                o = F.scaled_dot_product_attention(q_i, k_i, v_i, attn_mask=s.mask,
                                                   is_causal=s.mask is None, enable_gqa=is_gqa)
            out[s.q_start:s.q_end] = o.transpose(0, 1).reshape(-1, num_heads * head_dim)  # [E, Hq*D]
        return out
