"""ReqToTokenTable: the KV slots of every running request, kept on the device between steps.

    data: [max_rows, width] int64 on the device; row r = KV slots of the request holding row r,
          positions 0..kv_len-1 valid, the rest stale (attention reads only seq_len columns)

A request takes a row when it first runs and gives it back when the scheduler releases it. Each
step writes only the slots of its new tokens (one indexed store for the whole batch) and gathers
the batch's rows, instead of rebuilding and copying every request's slot list from the host.
Rows are whole multiples of ROW_ALIGN slots wide, in the table and in every gathered batch, so
a batch's row stride is always a multiple of 16: the attention kernels specialise on it, and
one specialisation then serves CUDA graphs and eager batches of any length.
`Req.table_len` counts the leading entries of its row known to match `Req.kv_indices`; the
scheduler sets it to 0 whenever it replaces kv_indices (prefix match, cache hand-over).
"""
from __future__ import annotations

import torch


class TableFull(RuntimeError):
    """More requests run at once than the table has rows (max_running_requests too small)."""


ROW_ALIGN = 16  # slots: every row width is a multiple of this


def aligned_width(num_slots: int) -> int:
    """num_slots rounded up to a multiple of ROW_ALIGN."""
    return -(-num_slots // ROW_ALIGN) * ROW_ALIGN


class ReqToTokenTable:
    def __init__(self, max_rows: int, min_width: int, device: torch.device):
        self.width = aligned_width(min_width)  # >= min_width (the longest sequence + 1)
        self.device = torch.device(device)
        self.data = torch.zeros(max_rows, self.width, dtype=torch.int64, device=self.device)
        self._free = list(range(max_rows - 1, -1, -1))

    @property
    def num_free_rows(self) -> int:
        return len(self._free)

    def alloc_row(self) -> int:
        if not self._free:
            raise TableFull(f"all {self.data.shape[0]} request rows of the KV slot table are in use")
        return self._free.pop()

    def free_row(self, row: int) -> None:
        self._free.append(row)

    def write_prefix(self, row: int, start: int, slots: torch.Tensor) -> None:
        """data[row, start:start+len(slots)] = slots (CPU int64; copied without blocking)."""
        if len(slots):
            if self.device.type == "cuda":
                slots = slots.pin_memory()  # a pageable source may wait for the running step
            self.data[row, start:start + len(slots)].copy_(slots, non_blocking=True)

    def write_tokens(self, rows: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> None:
        """data[rows[t], positions[t]] = slots[t] for every new token t (all [T] int64 on the device)."""
        self.data.index_put_((rows, positions), slots)

    def gather(self, rows: torch.Tensor, longest: int) -> torch.Tensor:
        """[bs] int64 rows on the device -> [bs, W] int64 slot lists of those requests, W =
        longest (their longest sequence) rounded up to ROW_ALIGN."""
        return self.data[:, :min(aligned_width(longest), self.width)].index_select(0, rows)
