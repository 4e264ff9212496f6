"""DecodeSlotRuns: decode KV slots handed out in per-request runs of contiguous slots.

A decode step needs one new KV slot per running request. Taken from the pool together, the
batch's requests get consecutive slots, so each request's generated tokens end up `batch size`
slots apart: decode attention then gathers every one of them from a different place (a 128 KB
stride per token at 8B, batch 64). With runs, a request that needs a slot takes `run` contiguous
slots at once (fewer when it cannot generate that many more tokens) and uses them one step after
another, so its generated tokens sit together like its prompt's.

    take(reqs) -> [len(reqs)] int64 CPU slots, one per req (from its run; requests without one
                  left get a new run, or one slot when the pool is short), or None when even
                  single slots do not fit (the scheduler then retracts as it does without runs)
    take_one(req) -> [1] slot from req's run, or None
    give_back(req): the rest of req's run back to the pool (release, retract, abort)
    held(reqs) -> slots in the runs of reqs (allocated, not yet in any request's KV)

The runs live on the requests (Req.slot_run, next slot last).
"""
from __future__ import annotations

from typing import Optional

import torch

from .kv_pool import KVPool


class DecodeSlotRuns:
    def __init__(self, pool: KVPool, run: int, max_context_len: int):
        if run < 2:
            raise ValueError(f"a run needs at least 2 slots, got {run}")
        self.pool = pool
        self.run = run
        self.max_context_len = max_context_len

    def _wanted(self, req) -> int:
        """Slots req can still fill: one per token it may yet generate, within the context."""
        num_output = len(req.output_ids) + req.num_pending
        left = min(req.params.max_new_tokens - num_output,
                   self.max_context_len - len(req.prompt_ids) - num_output + 1)
        return max(1, min(self.run, left))

    def take(self, reqs: list) -> Optional[torch.Tensor]:
        needy = [r for r in reqs if not r.slot_run]
        if needy:
            sizes = [self._wanted(r) for r in needy]
            total = sum(sizes)
            if self.pool.num_free < 4 * total:  # short of room: no runs, one slot each
                sizes, total = [1] * len(needy), len(needy)
            got = self.pool.alloc(total)
            if got is None:
                return None
            flat = got.tolist()  # ascending where the free list is
            start = 0
            for r, n in zip(needy, sizes):
                r.slot_run = flat[start + n - 1:None if start == 0 else start - 1:-1]  # reversed
                start += n
        return torch.tensor([r.slot_run.pop() for r in reqs], dtype=torch.int64)

    def take_one(self, req) -> Optional[torch.Tensor]:
        return torch.tensor([req.slot_run.pop()], dtype=torch.int64) if req.slot_run else None

    def give_back(self, req) -> None:
        if req.slot_run:
            self.pool.free(torch.tensor(req.slot_run, dtype=torch.int64))
            req.slot_run = []

    @staticmethod
    def held(reqs) -> int:
        return sum(len(r.slot_run) for r in reqs)
