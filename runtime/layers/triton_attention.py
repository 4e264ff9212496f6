"""TritonAttentionBackend: the AttentionBackend contract with the Triton kernels of
sgl_lang.kernels (the default on CUDA).

    store:   store_kv(k_cache, v_cache, fb.out_cache_loc, k, v)          one launch per layer
             (forward_rope: rope_store_ rotates q and stores the rotated k and v: one launch)
    decode:  decode_attention (split-K over the keys, then a merge)      two launches per layer
             (forward_rope without q/k norms: decode_attention_rope, the rotation and the store
             inside the attention launch: no rope_store_ launch)
    extend:  extend_attention (flash-style over the paged prefix + new tokens); in an eager
             mixed batch the leading one-token sequences (decodes riding with a prefill chunk)
             go through decode_attention instead: the extend kernel would give each one a
             64-row query block with one live row and stream its whole context for it

Per-batch metadata (device copies of the lengths, the split count) is built once per
ForwardBatch. For CUDA graphs the runners bind static device buffers with `bind_static_decode`
(decode batches) or `bind_static_extend` (prefill batches); the captured and replayed
forward then reads the lengths from those buffers and never syncs with the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from sgl_lang.kernels.attention_decode import decode_attention, decode_attention_rope, pick_num_kv_splits
from sgl_lang.kernels.attention_extend import ExtendMetaLayout, extend_attention
from sgl_lang.kernels.attention_store import store_kv
from sgl_lang.kernels.rope_store import rope_store_

from .attention import AttentionBackend

if TYPE_CHECKING:
    from ..forward_batch import ForwardBatch
    from ..mem.kv_pool import KVPool


@dataclass(frozen=True)
class _DecodeMeta:
    seq_lens: torch.Tensor  # [bs] int32 on the device
    num_kv_splits: int


@dataclass(frozen=True)
class _ExtendMeta:
    q_starts: torch.Tensor  # [bs] int32 on the device: first row of each sequence in q
    prefix_lens: torch.Tensor  # [bs] int32 on the device
    extend_lens: torch.Tensor  # [bs] int32 on the device
    blocks: tuple[torch.Tensor, torch.Tensor]  # ([nb], [nb]) int32 on the device: extend_blocks
    # [nd] int32 on the device: key counts of the batch's first nd sequences, which add one token
    # each (attended by decode_attention; the four fields above then describe sequences nd..,
    # whose rows in q start at row nd); None: every sequence through extend_attention
    decode_lens: Optional[torch.Tensor] = None


class TritonAttentionBackend(AttentionBackend):
    name = "triton"
    _write_kv = staticmethod(store_kv)  # the KV store of forward: one launch
    fuse_decode_rope = True  # forward_rope of decode batches: the rotation inside the attention launch

    def __init__(self, num_sms: Optional[int] = None):
        if num_sms is None and torch.cuda.is_available():
            num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        self.num_sms = num_sms or 132
        self._meta_fb: Optional["ForwardBatch"] = None
        self._static_fb: Optional["ForwardBatch"] = None
        self._meta = None

    def bind_static_decode(self, fb: "ForwardBatch", seq_lens: torch.Tensor, num_kv_heads: int) -> None:
        """Use `seq_lens` ([bs] int32 on the device, filled by the caller before each replay) as
        the lengths of decode batch `fb`; init_forward_metadata(fb) then does nothing."""
        self._static_fb = fb
        self._meta_fb = fb
        self._meta = _DecodeMeta(seq_lens, pick_num_kv_splits(fb.batch_size, num_kv_heads, self.num_sms))

    def bind_static_extend(self, fb: "ForwardBatch", q_starts: torch.Tensor, prefix_lens: torch.Tensor,
                           extend_lens: torch.Tensor, blocks: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Use these device tensors (int32, filled by the caller before each replay: [bs] lengths
        and the padded block list of extend_blocks) as the extend metadata of batch `fb`;
        init_forward_metadata(fb) then does nothing."""
        self._static_fb = fb
        self._meta_fb = fb
        self._meta = _ExtendMeta(q_starts, prefix_lens, extend_lens, blocks)

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        if fb is self._static_fb:
            self._meta_fb = fb
            return
        self._meta_fb = fb
        self._static_fb = None
        device = fb.input_ids.device
        if fb.is_decode:
            seq_lens = fb.seq_lens_source.to(device=device, dtype=torch.int32, non_blocking=True)
            self._meta = _DecodeMeta(seq_lens, 0)  # split count fixed on the first layer (needs Hkv)
            return
        extend = fb.extend_lens
        nd = _leading_single_tokens(extend)
        rest = extend[nd:]
        layout = ExtendMetaLayout.for_batch(rest)
        packed = layout.pack(fb.prefix_lens[nd:], rest)  # one int32 buffer: lengths and block list
        if device.type == "cuda":
            packed = packed.pin_memory()  # a pageable source may wait for the running step
        packed = packed.to(device, non_blocking=True)
        decode_lens = None
        if nd:  # the decodes' key counts
            decode_lens = fb.seq_lens_source[:nd].to(device=device, dtype=torch.int32, non_blocking=True)
        self._meta = _ExtendMeta(*layout.views(packed, len(rest)), decode_lens=decode_lens)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                fb: "ForwardBatch", kv_pool: "KVPool") -> torch.Tensor:
        if self._meta_fb is not fb:
            self.init_forward_metadata(fb)
        k_cache, v_cache = self._store_kv(k, v, layer_id, fb, kv_pool)  # [num_slots + 1, Hkv, D]
        return self._attend(q, k_cache, v_cache, fb)

    def forward_rope(self, qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                     layer_id: int, fb: "ForwardBatch", kv_pool: "KVPool", qk_norm=None) -> torch.Tensor:
        """One kernel (norms q and k when qk_norm is given,) rotates q in place and stores the
        rotated keys and the values."""
        if self._meta_fb is not fb:
            self.init_forward_metadata(fb)
        k_cache, v_cache = self._kv_cache(kv_pool, layer_id)  # [num_slots + 1, Hkv, D]
        meta = self._meta
        if isinstance(meta, _DecodeMeta) and qk_norm is None and self.fuse_decode_rope:
            meta = self._decode_meta(fb, k_cache)
            return decode_attention_rope(qk, v, cos, sin_signed, k_cache, v_cache, fb.out_cache_loc,
                                         fb.req_to_token, meta.seq_lens, meta.num_kv_splits)
        norm = None if qk_norm is None else (qk_norm[0].weight, qk_norm[1].weight, qk_norm[0].eps)
        q = rope_store_(qk, v, cos, sin_signed, k_cache, v_cache, fb.out_cache_loc, norm)  # [T, Hq, D]
        return self._attend(q, k_cache, v_cache, fb)

    @torch.inference_mode()
    def warm_up(self, kv_pool: "KVPool", num_q_heads: int, max_rows: int, eager_decode_rows=()) -> None:
        """Compile, at start-up, the kernel specialisations that eager batches of up to max_rows
        sequences can reach (one per decode split count, plus the extend kernel), through the same
        metadata path as a real batch. A mixed step (decodes riding beside a prefill chunk)
        attends its decodes with decode_attention at a split count set by how many there are;
        without this each new count compiled mid-serving (~0.5 s each: five compiles inside the
        offline benchmark's timed run on an H200, 2026-11-29). eager_decode_rows: the decode batch
        sizes that run without a CUDA graph (their fused-RoPE and plain decode launches). Every
        key read and written is the pool's dummy slot 0."""
        from ..forward_batch import ForwardBatch
        from ..mem.req_to_token import ROW_ALIGN
        k_cache, v_cache = self._kv_cache(kv_pool, 0)  # [num_slots + 1, Hkv, D]
        hkv, d = k_cache.shape[1], k_cache.shape[2]
        dev = k_cache.device

        def batch(extend: list[int]) -> "ForwardBatch":
            n, t = len(extend), sum(extend)
            ext = torch.tensor(extend, dtype=torch.int64)
            prefix = (ext == 1).to(torch.int64)  # decodes: one cached key each
            return ForwardBatch(
                input_ids=torch.zeros(t, dtype=torch.int64, device=dev), positions=torch.zeros(t, dtype=torch.int64, device=dev),
                out_cache_loc=torch.zeros(t, dtype=torch.int64, device=dev),
                req_to_token=torch.zeros(n, ROW_ALIGN, dtype=torch.int64, device=dev), seq_lens=prefix + ext,
                prefix_lens=prefix, extend_lens=ext, is_decode=all(e == 1 for e in extend),
                logits_indices=torch.zeros(n, dtype=torch.int64, device=dev))

        def first_rows_per_split(rows) -> list[int]:
            by_split: dict = {}
            for n in rows:
                by_split.setdefault(pick_num_kv_splits(n, hkv, self.num_sms), n)
            return sorted(by_split.values())

        q_of = lambda fb: torch.zeros(len(fb.input_ids), num_q_heads, d, dtype=k_cache.dtype, device=dev)
        for nd in ([0] + first_rows_per_split(range(1, max_rows))) if max_rows else []:  # + a 2-token extend
            fb = batch([1] * nd + [2])
            self.init_forward_metadata(fb)
            self._attend(q_of(fb), k_cache, v_cache, fb)
        for n in first_rows_per_split(eager_decode_rows):
            fb = batch([1] * n)
            self.init_forward_metadata(fb)
            self._attend(q_of(fb), k_cache, v_cache, fb)
            qk = torch.zeros(n, num_q_heads + hkv, d, dtype=k_cache.dtype, device=dev)
            cos = torch.ones(n, 1, d, dtype=k_cache.dtype, device=dev)
            decode_attention_rope(qk, qk[:, :hkv], cos, cos * 0, k_cache, v_cache, fb.out_cache_loc,
                                  fb.req_to_token, self._meta.seq_lens, self._meta.num_kv_splits)
        self._meta_fb = self._meta = None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def _decode_meta(self, fb: "ForwardBatch", k_cache: torch.Tensor) -> _DecodeMeta:
        """The decode metadata, its split count fixed on the first layer (it needs Hkv)."""
        meta = self._meta
        if meta.num_kv_splits == 0:
            meta = self._meta = _DecodeMeta(
                meta.seq_lens, pick_num_kv_splits(fb.batch_size, k_cache.shape[1], self.num_sms))
        return meta

    def _attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                fb: "ForwardBatch") -> torch.Tensor:
        """Attention of q [T, Hq, D] over the cache, whose new tokens are already stored."""
        meta = self._meta
        if isinstance(meta, _DecodeMeta):
            meta = self._decode_meta(fb, k_cache)
            q = q if q.stride(2) == 1 else q.contiguous()
            return decode_attention(q, k_cache, v_cache, fb.req_to_token, meta.seq_lens,
                                    meta.num_kv_splits)
        # the block list sets the grid, so no longest extend length is needed (0)
        if meta.decode_lens is None:
            return extend_attention(q, k_cache, v_cache, fb.req_to_token, meta.q_starts,
                                    meta.prefix_lens, meta.extend_lens, 0, blocks=meta.blocks)
        nd = meta.decode_lens.shape[0]
        out = torch.empty(q.shape[0], q.shape[1] * q.shape[2], dtype=q.dtype, device=q.device)
        decode_attention(q[:nd], k_cache, v_cache, fb.req_to_token[:nd], meta.decode_lens,
                         pick_num_kv_splits(nd, k_cache.shape[1], self.num_sms), out=out[:nd])
        extend_attention(q[nd:], k_cache, v_cache, fb.req_to_token[nd:], meta.q_starts, meta.prefix_lens,
                         meta.extend_lens, 0, out=out[nd:], blocks=meta.blocks)
        return out


def _leading_single_tokens(extend_lens: torch.Tensor) -> int:
    """How many sequences at the front of a batch add one token each ([bs] host ints)."""
    other = (extend_lens != 1).nonzero()
    return int(other[0, 0]) if len(other) else len(extend_lens)
