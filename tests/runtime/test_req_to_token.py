"""The device-side KV slot table and the batch builder that writes it: rows handed out and given
back, new tokens' slots written in one store, prefixes synced after a cache hand-over, pending
(in-flight) tokens taken from the previous step's token tensor."""
from __future__ import annotations

import pytest
import torch

from sgl_lang.runtime.batch_builder import build_forward_batch
from sgl_lang.runtime.mem.req_to_token import ReqToTokenTable, TableFull
from sgl_lang.runtime.request import Req
from sgl_lang.runtime.sampling_params import SamplingParams
from sgl_lang.runtime.scheduler import ScheduledBatch
from sgl_lang.runtime.step_output import StepHandle


def _req(rid: str, prompt: list[int], max_new_tokens: int = 8) -> Req:
    return Req(rid=rid, prompt_ids=prompt, params=SamplingParams(max_new_tokens=max_new_tokens))


def _batch(reqs: list[Req], slots: list[list[int]], prefix_lens: list[int]) -> ScheduledBatch:
    """What Scheduler.schedule builds: per req its new tokens' KV slots, back to back."""
    return ScheduledBatch(reqs, prefix_lens, [len(s) for s in slots],
                          torch.tensor([x for s in slots for x in s], dtype=torch.int64))


def test_rows_are_handed_out_and_back_and_exhaustion_is_a_named_error():
    table = ReqToTokenTable(2, 16, torch.device("cpu"))
    a, b = table.alloc_row(), table.alloc_row()
    assert {a, b} == {0, 1} and table.num_free_rows == 0
    with pytest.raises(TableFull, match="2 request rows"):
        table.alloc_row()
    table.free_row(a)
    assert table.alloc_row() == a


def test_prefill_then_decode_rows_hold_every_slot():
    table = ReqToTokenTable(4, 32, torch.device("cpu"))
    r1, r2 = _req("a", [5, 6, 7]), _req("b", [9, 10])
    for r in (r1, r2):
        r.extend_len = len(r.prompt_ids)
    slots1, slots2 = [11, 12, 13], [21, 22]
    fb, sample_rows, _, sample_idx, _ = build_forward_batch(
        _batch([r1, r2], [slots1, slots2], [0, 0]), None, table, torch.device("cpu"))
    assert fb.input_ids.tolist() == [5, 6, 7, 9, 10]
    assert fb.positions.tolist() == [0, 1, 2, 0, 1]
    assert fb.req_to_token[0, :3].tolist() == [11, 12, 13] and fb.req_to_token[1, :2].tolist() == [21, 22]
    assert sample_rows == [0, 1] and fb.logits_indices[sample_idx].tolist() == [2, 4]
    for r, s in ((r1, slots1), (r2, slots2)):  # what Scheduler.commit does
        r.append_kv(s)
        r.kv_len += r.extend_len
        r.extend_len = 0
    # decode: r1 read its token back (3), r2's token is still in flight (row 1 of prev's tensor)
    r1.output_ids.append(3)
    r2.num_pending, r2.pending_row = 1, 1
    prev = StepHandle(batch=None, sampling=[0, 1], next_tokens=torch.tensor([3, 44]))
    r1.extend_len = r2.extend_len = 1
    fb = build_forward_batch(_batch([r1, r2], [[14], [23]], [3, 2]), prev, table, torch.device("cpu")).fb
    assert fb.is_decode and fb.input_ids.tolist() == [3, 44]
    # width: the longest sequence rounded up to 16 slots (one row-stride specialisation for the
    # attention kernels), at most the table's width
    assert fb.req_to_token.shape == (2, 16) and fb.req_to_token[0, :4].tolist() == [11, 12, 13, 14]
    assert fb.req_to_token[1, :3].tolist() == [21, 22, 23]
    assert fb.seq_lens.tolist() == [4, 3]


def test_a_replaced_prefix_is_rewritten_before_the_next_step():
    table = ReqToTokenTable(2, 16, torch.device("cpu"))
    r = _req("a", [1, 2, 3, 4])
    r.extend_len = 4
    build_forward_batch(_batch([r], [[5, 6, 7, 8]], [0]), None, table, torch.device("cpu"))
    # the scheduler hands the computed prefix to the radix cache, which answers with its own slots
    r.kv_indices = torch.tensor([50, 60, 70, 80])
    r.kv_len = 4
    assert r.table_len == 0  # the setter marks the row stale
    r.output_ids.append(9)
    r.extend_len = 1
    fb = build_forward_batch(_batch([r], [[90]], [4]), None, table, torch.device("cpu")).fb
    assert fb.req_to_token[0, :5].tolist() == [50, 60, 70, 80, 90]


def test_unknown_tokens_without_a_previous_step_are_refused():
    table = ReqToTokenTable(2, 16, torch.device("cpu"))
    r = _req("a", [1, 2, 3])
    r.num_pending, r.pending_row = 1, 0  # claims a token in flight, but no step is given
    r.extend_len = 4
    with pytest.raises(RuntimeError, match="not known"):
        build_forward_batch(_batch([r], [[5, 6, 7, 8]], [0]), None, table, torch.device("cpu"))


def test_rows_are_whole_multiples_of_16_slots_wide():
    """The attention kernels specialise on req_to_token's row stride: the table and every gathered
    batch are ROW_ALIGN (16) slots wide at a time, never wider than the table."""
    table = ReqToTokenTable(3, 8193, torch.device("cpu"))  # context 8,192 + 1
    assert table.width == 8208 and table.data.shape == (3, 8208)
    rows = torch.tensor([2, 0])
    assert table.gather(rows, 1).shape == (2, 16) and table.gather(rows, 16).shape == (2, 16)
    assert table.gather(rows, 17).shape == (2, 32) and table.gather(rows, 8193).shape == (2, 8208)
