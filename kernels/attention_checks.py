"""The argument checks and strides that the paged attention wrappers (decode, extend) share.

    q: [rows, Hq, D]    k_cache, v_cache: [num_slots + 1, Hkv, D]    req_to_token: [bs, L]
    Hq % Hkv == 0; the last dimension of each is contiguous (the kernels step it by 1).
"""
from __future__ import annotations

import torch


def check_paged_qkv(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, q_shape: str) -> None:
    """q against the caches: 3-D, one head_dim, Hq % Hkv == 0. q_shape names q's shape in errors."""
    if q.dim() != 3 or k_cache.dim() != 3 or v_cache.shape != k_cache.shape:
        raise ValueError(f"expected q {q_shape} and k/v caches [slots, Hkv, D] of one shape, got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    _, hq, d = q.shape
    if k_cache.shape[2] != d or hq % k_cache.shape[1]:
        raise ValueError(f"expected head_dim {d} and Hq % Hkv == 0, got cache {tuple(k_cache.shape)}")


def check_last_dim_contiguous(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              req_to_token: torch.Tensor) -> None:
    if q.stride(2) != 1 or k_cache.stride(2) != 1 or v_cache.stride(2) != 1 or req_to_token.stride(1) != 1:
        raise ValueError("expected the last dimension of q, the caches and req_to_token contiguous")


def paged_qkv_strides(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, ...]:
    """The row and head strides of q, k_cache and v_cache, in the order the kernels take them."""
    return q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1)
