"""Logprobs of prompt tokens (input logprobs): each scored row's log-softmax at the prompt's next
token, and optionally the top ones, read back to the host for the step's requests."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .sampler import top_logprobs

if TYPE_CHECKING:
    from .scheduled_batch import ScheduledBatch


def prompt_logprobs(batch: "ScheduledBatch", logits: torch.Tensor, input_rows: list[list[int]]):
    """Per request of the step: its prompt tokens' logprobs [(logprob, token id)] and, when it
    asks for them, the top ones at each position. logits: [rows, vocab] of the step's logits rows;
    input_rows[i]: the rows of request i whose next prompt token is scored (none: no logprobs)."""
    in_lp: list[list] = [[] for _ in batch.reqs]
    in_top: list[list] = [[] for _ in batch.reqs]
    if not any(input_rows):
        return in_lp, in_top
    all_rows = [r for rows in input_rows for r in rows]
    lsm = torch.log_softmax(logits[all_rows].float(), dim=-1)  # [n, vocab]
    cursor = 0
    for i, (req, rows) in enumerate(zip(batch.reqs, input_rows)):
        if not rows:
            continue
        first_pos = max(batch.prefix_lens[i], req.logprob_start_len)
        targets = torch.tensor(req.prompt_ids[first_pos + 1:first_pos + 1 + len(rows)],
                               dtype=torch.int64, device=lsm.device)
        part = lsm[cursor:cursor + len(rows)]
        vals = part.gather(1, targets[:, None])[:, 0].tolist()
        in_lp[i] = list(zip(vals, targets.tolist()))
        if req.top_logprobs_num > 0:
            tv, ti = top_logprobs(part, req.top_logprobs_num)
            in_top[i] = [list(zip(a, b)) for a, b in zip(tv.tolist(), ti.tolist())]
        cursor += len(rows)
    return in_lp, in_top
