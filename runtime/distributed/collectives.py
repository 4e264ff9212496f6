"""The collectives of a tensor-parallel forward, and what happens when one fails.

    all_reduce(t)             sum over ranks, in place        (row-parallel layers, embedding)
    all_gather(t) -> [tp*..]  ranks' tensors concatenated on the last dim   (LM head logits)
    broadcast(t, group)       rank 0's tensor to every rank   (batch_broadcast)

A failed collective usually means a peer died (gloo raises "connection closed by peer"). Rank 0
registers a failure check (`set_failure_check`) that turns such an error into a TPWorkerDied
naming the rank; the original error is chained.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist

_failure_check: Optional[Callable[[], None]] = None


def set_failure_check(check: Optional[Callable[[], None]]) -> None:
    """check() is called when a collective raises; it raises a clearer error (or returns)."""
    global _failure_check
    _failure_check = check


def _on_error(err: BaseException) -> None:
    if _failure_check is not None:
        try:
            _failure_check()
        except BaseException as named:
            raise named from err


def all_reduce(t: torch.Tensor) -> None:
    try:
        dist.all_reduce(t)
    except RuntimeError as e:
        _on_error(e)
        raise


def all_gather(t: torch.Tensor, tp_size: int) -> torch.Tensor:
    """t: [n, m] on every rank -> [n, tp_size * m], rank r's tensor in columns [r*m, (r+1)*m)."""
    parts = [torch.empty_like(t) for _ in range(tp_size)]
    try:
        dist.all_gather(parts, t)
    except RuntimeError as e:
        _on_error(e)
        raise
    return torch.cat(parts, dim=-1)


def broadcast(t: torch.Tensor, group=None) -> None:
    """Rank 0's `t` into every rank's `t` (same shape and dtype everywhere)."""
    try:
        dist.broadcast(t, src=0, group=group)
    except RuntimeError as e:
        _on_error(e)
        raise
