"""build_forward_batch: a ScheduledBatch -> the ForwardBatch tensors of one step, on the device.

Per request it decides which logits rows are needed (the sampling row, input-logprob rows), writes
the new tokens' KV slots into the device-side slot table (mem/req_to_token.py), and takes a token
still in flight (overlap scheduling) from the previous step's token tensor on the device. All
host-built indices travel in ONE copy from pinned memory.
"""
from __future__ import annotations

from array import array
from typing import NamedTuple, Optional

import torch

from .forward_batch import ForwardBatch
from .mem.req_to_token import ReqToTokenTable
from .request import Req
from .scheduler import ScheduledBatch
from .step_output import StepHandle


class PreparedBatch(NamedTuple):
    fb: ForwardBatch
    sample_rows: list[int]  # per req: the logits row it samples from, -1 when it does not sample
    input_rows: list[list[int]]  # per req: the logits rows of its input logprobs
    sample_idx: torch.Tensor  # [num_sampling] int64 on the device: the sampling rows, in req order
    is_every_row_sampled: bool  # sample_idx is arange(num_logits): the logits need no gather


def wants_sample(req: Req) -> bool:
    """Whether this step samples a token for req (it has budget left and has not finished)."""
    return req.num_output_tokens < req.params.max_new_tokens and not req.is_finished


def build_forward_batch(batch: ScheduledBatch, prev: Optional[StepHandle], table: ReqToTokenTable,
                        device: torch.device) -> PreparedBatch:
    """The ForwardBatch of one step plus which logits rows each req samples from or reads input
    logprobs from. A req whose last token is still in flight (overlap) gets it from
    prev.next_tokens on the device."""
    ids, pos, seq_lens = [], [], []
    sample_rows, input_rows = [], []
    logits_idx: list[int] = []
    patch_at, patch_from = [], []  # flat token index <- row of prev.next_tokens
    offset = 0
    table_rows = []
    for req, prefix_len, n in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
        if req.table_row < 0:
            req.table_row, req.table_len = table.alloc_row(), 0
        if req.table_len < prefix_len:  # first step after a prefix match or cache hand-over
            table.write_prefix(req.table_row, req.table_len, req.kv_indices[req.table_len:prefix_len])
        req.table_len = prefix_len + n  # the new slots are written below, for the whole batch
        table_rows.append(req.table_row)
        seq_lens.append(prefix_len + n)
        if n == 1 and req.logprob_start_len < 0 and prefix_len + 1 == req.seq_len:  # plain decode
            if req.num_pending:
                patch_at.append(offset)
                patch_from.append(req.pending_row)
                ids.append(0)
            else:
                ids.append(req.output_ids[-1] if req.output_ids else req.prompt_ids[-1])
            pos.append(prefix_len)
            input_rows.append([])
            if wants_sample(req):
                sample_rows.append(len(logits_idx))
                logits_idx.append(offset)
            else:
                sample_rows.append(-1)
            offset += 1
            continue
        known = req.tokens(prefix_len, prefix_len + n)
        ids.extend(known)
        if len(known) < n:  # the last one is the pending token
            if req.num_pending != 1 or len(known) != n - 1 or prev is None or prev.next_tokens is None:
                raise RuntimeError(f"request {req.rid}: {n - len(known)} tokens of this step are not known")
            patch_at.append(offset + n - 1)
            patch_from.append(req.pending_row)
            ids.append(0)
        pos.extend(range(prefix_len, prefix_len + n))
        # input logprobs: logits at position p score token p+1, for p in [start, prompt_len-2]
        rows = []
        if req.logprob_start_len >= 0:
            lo = max(prefix_len, req.logprob_start_len)
            hi = min(prefix_len + n, len(req.prompt_ids) - 1)
            rows = list(range(len(logits_idx), len(logits_idx) + max(0, hi - lo)))
            logits_idx.extend(offset + p - prefix_len for p in range(lo, hi))
        input_rows.append(rows)
        if prefix_len + n == req.seq_len and wants_sample(req):
            sample_rows.append(len(logits_idx))
            logits_idx.append(offset + n - 1)
        else:
            sample_rows.append(-1)
        offset += n
    bs, num_tokens = len(batch.reqs), len(pos)
    ext = batch.extend_lens
    is_decode = num_tokens == bs
    sample_idx = [r for r in sample_rows if r >= 0]
    # Every host-built index goes to the device in ONE copy from pinned memory: a copy from
    # pageable memory may wait for the device to finish the step still running (overlap).
    parts = [table_rows, pos, ids, logits_idx, ext, seq_lens, batch.prefix_lens, sample_idx,
             patch_from, patch_at]
    ints = array("q")
    for part in parts:
        ints.extend(part)
    host = torch.cat([torch.frombuffer(ints, dtype=torch.int64), batch.out_cache_loc])
    if device.type == "cuda":
        host = host.pin_memory()
    flat = host.to(device, non_blocking=True)
    (rows_dev, positions, input_ids, logits_indices, ext_dev, seq_lens_dev, _, sample_idx_dev,
     src, dst, out_cache_loc) = flat.split([len(x) for x in parts] + [num_tokens])
    lengths_at = bs + 2 * num_tokens + len(logits_idx)  # where ext, seq_lens, prefix_lens start
    ext_cpu, seq_lens_cpu, prefix_lens_cpu = host[lengths_at:lengths_at + 3 * bs].view(3, bs)  # [bs] each
    token_rows = rows_dev if is_decode else torch.repeat_interleave(rows_dev, ext_dev, output_size=num_tokens)
    table.write_tokens(token_rows, positions, out_cache_loc)  # [T] each
    if len(patch_at) == num_tokens and patch_from == list(range(num_tokens)):
        # (overlap, steady decode) every token is the previous step's, row for row
        input_ids = prev.next_tokens[:num_tokens]
    elif patch_at:
        input_ids = input_ids.clone()
        input_ids.index_copy_(0, dst, prev.next_tokens.index_select(0, src))
    fb = ForwardBatch(
        input_ids=input_ids,  # [T]
        positions=positions,  # [T]
        out_cache_loc=out_cache_loc,  # [T]
        req_to_token=table.gather(rows_dev, max(seq_lens)),  # [bs, max seq_len]
        seq_lens=seq_lens_cpu,
        prefix_lens=prefix_lens_cpu,
        extend_lens=ext_cpu,
        is_decode=is_decode,
        logits_indices=logits_indices,  # [num_logits]
        seq_lens_device=seq_lens_dev,  # [bs]
    )
    assert bs == fb.batch_size
    return PreparedBatch(fb, sample_rows, input_rows, sample_idx_dev,
                         is_every_row_sampled=len(sample_idx) == len(logits_idx))
