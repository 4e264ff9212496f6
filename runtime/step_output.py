"""What one model step hands back: RunnerOutput (per request, read back on the host) and
StepHandle (a launched step the device may still be running; the overlap scheduler keeps one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .scheduled_batch import ScheduledBatch


@dataclass
class RunnerOutput:
    # per req of the batch (None where the req did not sample this step)
    next_token_ids: list[Optional[int]]
    next_token_logprobs: list[Optional[float]]
    next_top_logprobs: list[Optional[list]]  # [(logprob, token_id), ...] per sampling req
    # per req: input logprobs computed this step, [(logprob, token_id)], and top-k lists (empty: none)
    input_logprobs: list[list] = field(default_factory=list)
    input_top_logprobs: list[list] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> "RunnerOutput":
        """n requests, none of which sampled or computed input logprobs this step."""
        return cls([None] * n, [None] * n, [None] * n, [[] for _ in range(n)], [[] for _ in range(n)])


@dataclass
class StepHandle:
    """A launched step: the device may still be running it. collect() turns it into a RunnerOutput.

    next_tokens: [num_sampling] int64 on the device, row j = the token of sampling[j]; the next
    step reads the tokens of requests still in flight from it (see Req.pending_row)."""
    batch: ScheduledBatch
    sampling: list[int]  # indices into batch.reqs of the requests that sampled, in row order
    next_tokens: Optional[torch.Tensor] = None
    host_tokens: Optional[torch.Tensor] = None  # [num_sampling] int64 (pinned on CUDA), filled async
    host_logprobs: Optional[torch.Tensor] = None  # [num_sampling] float32, filled async
    ready: Optional[torch.cuda.Event] = None  # recorded after the copies to the host
    output: Optional[RunnerOutput] = None  # set when the step had to be read back at launch

    @property
    def sampled_reqs(self) -> list:
        """The reqs that sampled, in row order (batch.reqs itself when all did)."""
        reqs = self.batch.reqs
        return reqs if len(self.sampling) == len(reqs) else [reqs[i] for i in self.sampling]

    @property
    def can_defer(self) -> bool:
        """Its read-back may wait while the next step launches."""
        return self.output is None
