"""build_forward_batch: a ScheduledBatch -> the ForwardBatch tensors of one step, on the device.

Per request it decides which logits rows are needed (the sampling row, input-logprob rows), writes
the new tokens' KV slots into the device-side slot table (mem/req_to_token.py), and takes a token
still in flight (overlap scheduling) from the previous step's token tensor on the device. All
host-built indices travel in ONE copy from pinned memory.
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional

import torch

from .forward_batch import ForwardBatch
from .mem.req_to_token import ReqToTokenTable
from .request import Req
from .scheduled_batch import ScheduledBatch
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


class HostIndices(NamedTuple):
    """The indices of one step built on the host (they travel to the device in one copy)."""
    table_rows: list[int]  # per req: its row of the slot table
    positions: list[int]  # per token
    input_ids: list[int]  # per token; 0 where the token is taken from prev.next_tokens
    logits_idx: list[int]  # per logits row: the flat token index it is computed from
    seq_lens: list[int]  # per req: prefix_len + extend_len
    sample_rows: list[int]  # per req: the logits row it samples from, -1 when it does not sample
    input_rows: list[list[int]]  # per req: the logits rows of its input logprobs
    patch_from: list[int]  # rows of prev.next_tokens ...
    patch_at: list[int]  # ... copied to these flat token indices


def build_forward_batch(batch: ScheduledBatch, prev: Optional[StepHandle], table: ReqToTokenTable,
                        device: torch.device) -> PreparedBatch:
    """The ForwardBatch of one step plus which logits rows each req samples from or reads input
    logprobs from. A req whose last token is still in flight (overlap) gets it from
    prev.next_tokens on the device."""
    host_idx = plain_decode_indices(batch)
    if host_idx is None:
        host_idx = general_indices(batch, prev, table)
    table_rows, pos, ids, logits_idx, seq_lens, sample_rows, input_rows, patch_from, patch_at = host_idx
    bs, num_tokens = len(batch.reqs), len(pos)
    ext = batch.extend_lens
    is_decode = num_tokens == bs
    sample_idx = [r for r in sample_rows if r >= 0]
    # Every host-built index goes to the device in ONE copy from pinned memory: a copy from
    # pageable memory may wait for the device to finish the step still running (overlap).
    parts = [table_rows, pos, ids, logits_idx, ext, seq_lens, batch.prefix_lens, sample_idx,
             patch_from, patch_at]
    ints: list[int] = []
    for part in parts:
        ints += part
    packed = bytearray(struct.pack(f"{len(ints)}q", *ints))  # (3x faster than array.extend)
    pieces = [torch.frombuffer(packed, dtype=torch.int64), batch.out_cache_loc]
    if device.type == "cuda":  # joined straight into pinned memory
        host = torch.cat(pieces, out=torch.empty(len(ints) + num_tokens, dtype=torch.int64, pin_memory=True))
    else:
        host = torch.cat(pieces)
    flat = host.to(device, non_blocking=True)
    (rows_dev, positions, input_ids, logits_indices, ext_dev, seq_lens_dev, _, sample_idx_dev,
     src, dst, out_cache_loc) = flat.split([len(x) for x in parts] + [num_tokens])
    lengths_at = bs + 2 * num_tokens + len(logits_idx)  # where ext, seq_lens, prefix_lens start
    ext_cpu, seq_lens_cpu, prefix_lens_cpu = host[lengths_at:lengths_at + 3 * bs].view(3, bs)  # [bs] each
    token_rows = rows_dev if is_decode else torch.repeat_interleave(rows_dev, ext_dev, output_size=num_tokens)
    table.write_tokens(token_rows, positions, out_cache_loc)  # [T] each
    if len(patch_at) == num_tokens and patch_from == list(range(num_tokens)):
        # (overlap, steady decode) every token is the previous step's, row for row
        tokens = prev.next_tokens
        input_ids = tokens if len(tokens) == num_tokens else tokens[:num_tokens]
    elif patch_at:
        input_ids = input_ids.clone()
        input_ids.index_copy_(0, dst, prev.next_tokens.index_select(0, src))
    fb = ForwardBatch(
        input_ids=input_ids,  # [T]
        positions=positions,  # [T]
        out_cache_loc=out_cache_loc,  # [T]
        req_to_token=table.gather(rows_dev, max(seq_lens)),  # [bs, max seq_len rounded up to 16]
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


def plain_decode_indices(batch: ScheduledBatch) -> Optional[HostIndices]:
    """general_indices of a steady decode step, where every req decodes one token and samples
    the next from a table row that is up to date, and either every req's last token is still
    in flight or none is; built without the general per-req branches. None for any other batch
    (general_indices then builds it)."""
    reqs, prefix_lens = batch.reqs, batch.prefix_lens
    bs = len(reqs)
    if len(batch.out_cache_loc) != bs:
        return None  # some req extends more than one token
    num_pending = 0
    for req, prefix_len in zip(reqs, prefix_lens):
        # general_indices' plain-decode branch with a sample and no prefix to write, its tests
        # inlined (num_output_tokens, seq_len, wants_sample): this loop runs for every req and step
        num_output = len(req.output_ids) + req.num_pending
        if (req.table_row < 0 or req.table_len < prefix_len or req.logprob_start_len >= 0
                or req.finish_reason is not None or num_output >= req.params.max_new_tokens
                or len(req.prompt_ids) + num_output != prefix_len + 1):
            return None
        # (harmless if a later req sends the batch to general_indices: it writes no prefix for
        # this req either way, and sets the same table_len)
        req.table_len = prefix_len + 1
        num_pending += req.num_pending > 0
    rows = list(range(bs))  # token j is req j, sampled at logits row j
    if num_pending == bs:  # (overlap) every input token is in prev.next_tokens
        ids, patch_at, patch_from = [0] * bs, rows, [req.pending_row for req in reqs]
    elif num_pending == 0:
        ids = [req.output_ids[-1] if req.output_ids else req.prompt_ids[-1] for req in reqs]
        patch_at, patch_from = [], []
    else:
        return None
    return HostIndices([req.table_row for req in reqs], list(prefix_lens), ids, rows,
                        [p + 1 for p in prefix_lens], rows, [[] for _ in range(bs)],
                        patch_from, patch_at)


def general_indices(batch: ScheduledBatch, prev: Optional[StepHandle],
                    table: ReqToTokenTable) -> HostIndices:
    """Per req: its table row (taken, and its prefix written, when not up to date), its tokens
    and positions, and which logits rows it samples from or reads input logprobs from."""
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
    return HostIndices(table_rows, pos, ids, logits_idx, seq_lens, sample_rows, input_rows,
                        patch_from, patch_at)
