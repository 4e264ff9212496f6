"""AttentionBackend: the contract every attention implementation fulfils, and its registry.

Supported names: see ATTENTION_BACKEND_NAMES; `get_attention_backend(name)` imports lazily and
raises UnknownAttentionBackend listing them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional

import torch

from .rotary import apply_rotary

if TYPE_CHECKING:
    from ..forward_batch import ForwardBatch
    from ..mem.kv_pool import KVPool


class UnknownAttentionBackend(ValueError):
    """An attention backend name is not one we provide."""


class AttentionBackend(ABC):
    """Paged causal attention over the KV pool.

    forward(q, k, v, layer_id, fb, kv_pool) -> out
        q: [T, Hq, D]   k, v: [T, Hkv, D]   (T = fb.num_tokens, Hq % Hkv == 0)
        out: [T, Hq * D], same dtype as q

    Semantics, in order:
      1. kv_pool.k_buffer[layer_id][fb.out_cache_loc] = k;  same for v.
      2. For sequence i, its new tokens are rows [start_i, start_i + extend_lens[i]) of q
         (start_i = sum of earlier extend_lens). New token j sits at position prefix_lens[i] + j
         and attends to the keys of its sequence at positions 0 .. prefix_lens[i] + j, read from
         the pool through fb.req_to_token[i, :seq_lens[i]] (causal; the prefix is already cached).
      3. Query head h uses KV head h // (Hq // Hkv) (grouped-query attention);
         scale = 1 / sqrt(D); softmax in at least float32 precision.

    Per-batch bookkeeping (lengths, masks) is computed once per ForwardBatch object, by
    `init_forward_metadata(fb)` or lazily on the first layer; call it again if a batch's tensors
    are changed in place.
    """

    name: str = "abstract"

    def init_forward_metadata(self, fb: "ForwardBatch") -> None:
        """Precompute what every layer of this forward shares. Default: nothing."""

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                fb: "ForwardBatch", kv_pool: "KVPool") -> torch.Tensor:
        ...

    def forward_rope(self, qk: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                     layer_id: int, fb: "ForwardBatch", kv_pool: "KVPool", qk_norm=None) -> torch.Tensor:
        """Rotary embedding of q and k, then forward. qk: [T, Hq + Hkv, D] (query heads, then key
        heads; may be a strided view, which this may rotate in place); v: [T, Hkv, D];
        cos, sin_signed: [T, 1, D] (RotaryEmbedding.cos_sin); qk_norm: None, or Qwen3's per-head
        (q_norm, k_norm) RMSNorm modules, applied before the rotation. Backends may fuse the
        norms and the rotation with the KV store."""
        hkv = v.shape[1]
        if qk_norm is not None:
            q, k = qk.split([qk.shape[1] - hkv, hkv], dim=1)
            q = apply_rotary(qk_norm[0](q), cos, sin_signed)  # [T, Hq, D]
            k = apply_rotary(qk_norm[1](k), cos, sin_signed)  # [T, Hkv, D]
            return self.forward(q, k, v, layer_id, fb, kv_pool)
        if qk.is_cuda:  # one Triton kernel rotating q and k in place
            from sgl_lang.kernels.attention_prologue import rope_
            qk = rope_(qk, cos, sin_signed)
        else:
            qk = apply_rotary(qk, cos, sin_signed)
        q, k = qk.split([qk.shape[1] - hkv, hkv], dim=1)
        return self.forward(q, k, v, layer_id, fb, kv_pool)

    def _store_kv(self, k: torch.Tensor, v: torch.Tensor, layer_id: int, fb: "ForwardBatch",
                  kv_pool: "KVPool") -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the semantics: k, v [T, Hkv, D] into layer layer_id's pool slots
        fb.out_cache_loc. Returns (k_cache, v_cache), each [num_slots + 1, Hkv, D]."""
        k_cache, v_cache = self._kv_cache(kv_pool, layer_id)
        self._write_kv(k_cache, v_cache, fb.out_cache_loc, k, v)
        return k_cache, v_cache

    @staticmethod
    def _kv_cache(kv_pool: "KVPool", layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer layer_id's (k_cache, v_cache), each [num_slots + 1, Hkv, D]."""
        return kv_pool.k_buffer[layer_id], kv_pool.v_buffer[layer_id]

    @staticmethod
    def _write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, loc: torch.Tensor, k: torch.Tensor,
                  v: torch.Tensor) -> None:
        """k_cache[loc] = k; v_cache[loc] = v (cast to the cache dtype). Backends may use a kernel."""
        k_cache[loc] = k.to(k_cache.dtype)
        v_cache[loc] = v.to(v_cache.dtype)


ATTENTION_BACKEND_NAMES = ("torch", "triton", "flashinfer")


def get_attention_backend(name: str, **kwargs) -> AttentionBackend:
    """Build an attention backend by name ("auto": triton when CUDA is available, else torch)."""
    if name == "auto":
        name = "triton" if torch.cuda.is_available() else "torch"
    if name == "torch":
        from .torch_attention import TorchAttentionBackend
        return TorchAttentionBackend(**kwargs)
    if name == "triton":
        from .triton_attention import TritonAttentionBackend
        return TritonAttentionBackend(**kwargs)
    if name == "flashinfer":  # optional: an ImportError saying what to install when it is missing
        from .flashinfer_attention import FlashInferAttentionBackend
        return FlashInferAttentionBackend(**kwargs)
    raise UnknownAttentionBackend(f"unknown attention backend {name!r}; supported: "
                                  f"{ATTENTION_BACKEND_NAMES} (and 'auto')")


def attention_backend_names(attention: str, prefill: Optional[str], decode: Optional[str],
                            device: torch.device) -> tuple[str, str]:
    """(prefill backend, decode backend) of the engine flags attention_backend ("auto": torch on
    CPU, triton on CUDA), prefill_attention_backend and decode_attention_backend (None: the first)."""
    def resolve(name: str) -> str:
        return ("torch" if device.type == "cpu" else "triton") if name == "auto" else name
    return resolve(prefill or attention), resolve(decode or attention)


def build_attention_backend(attention: str, prefill: Optional[str], decode: Optional[str],
                            device: torch.device) -> AttentionBackend:
    """The engine's backend: one by name, or a HybridAttentionBackend when prefill and decode differ."""
    names = attention_backend_names(attention, prefill, decode, device)
    if "flashinfer" in names and device.type != "cuda":
        raise ValueError(f"attention backend 'flashinfer' runs on CUDA devices only, got device {device}")
    if names[0] == names[1]:
        return get_attention_backend(names[0])
    from .hybrid_attention import HybridAttentionBackend
    return HybridAttentionBackend(get_attention_backend(names[0]), get_attention_backend(names[1]))

