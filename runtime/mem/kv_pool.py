"""KVPool: per-layer K and V tensors addressed by token slot, plus a free-slot allocator.

    k_buffer[layer]: [num_slots + 1, num_kv_heads, head_dim]   # slot 0 is the dummy/padding slot
    v_buffer[layer]: same

The pool owns memory; the radix cache only holds slot indices and hands back what to free.
"""
from __future__ import annotations

import torch


class KVPool:
    def __init__(self, num_slots: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        if num_slots <= 0:
            raise ValueError(f"KV pool needs at least one slot, got {num_slots}")
        self.num_slots = num_slots
        self.num_layers = num_layers
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (num_slots + 1, num_kv_heads, head_dim)
        self.k_buffer = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v_buffer = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        # Free list kept on CPU as int64; slots are 1..num_slots.
        self._free = torch.arange(1, num_slots + 1, dtype=torch.int64)
        self._num_free = num_slots

    @staticmethod
    def bytes_per_slot(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def num_free(self) -> int:
        return self._num_free

    def alloc(self, n: int) -> torch.Tensor | None:
        """n free slots as a CPU int64 tensor, or None when fewer than n are free."""
        if n > self._num_free:
            return None
        start = self._num_free - n
        out = self._free[start:self._num_free].clone()
        self._num_free = start
        return out

    def free(self, slots: torch.Tensor) -> None:
        n = int(slots.numel())
        if n == 0:
            return
        assert self._num_free + n <= self.num_slots, "double free in KVPool"
        self._free[self._num_free:self._num_free + n] = slots.to("cpu", torch.int64)
        self._num_free += n

    def reset(self) -> None:
        self._free = torch.arange(1, self.num_slots + 1, dtype=torch.int64)
        self._num_free = self.num_slots
