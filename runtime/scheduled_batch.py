"""ScheduledBatch: what the scheduler hands the model runner for one step (scheduler.py makes it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .request import Req


@dataclass
class ScheduledBatch:
    reqs: list[Req]  # in batch order
    prefix_lens: list[int]  # per req: kv_len before this step
    extend_lens: list[int]  # per req: tokens it adds this step
    out_cache_loc: torch.Tensor  # [sum(extend_lens)] int64 CPU: KV slots of the new tokens, req after req

    @property
    def num_tokens(self) -> int:
        return len(self.out_cache_loc)
