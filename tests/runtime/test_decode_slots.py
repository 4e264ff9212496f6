"""Decode KV slots taken in per-request runs (runtime/mem/decode_slots.py, `decode_slot_run`):
the allocator on its own (runs are contiguous, one slot per request per step, given back whole,
one slot each when the pool is short), and engines with runs on the real default model (fp32):
the same outputs as without runs, with and without overlap, and every slot accounted for
afterwards (check_integrity); retraction under a small pool with runs is in test_engine.py."""
from __future__ import annotations

import pytest
import torch

from sgl_lang.runtime.engine import Engine
from sgl_lang.runtime.mem.decode_slots import DecodeSlotRuns
from sgl_lang.runtime.mem.kv_pool import KVPool
from sgl_lang.runtime.request import Req
from sgl_lang.runtime.sampling_params import SamplingParams


def _req(i: int, max_new: int = 100) -> Req:
    return Req(rid=str(i), prompt_ids=[1, 2, 3], params=SamplingParams(max_new_tokens=max_new))


def test_runs_are_contiguous_and_given_back():
    pool = KVPool(1000, 1, 1, 4, torch.float32, "cpu")
    runs = DecodeSlotRuns(pool, 8, max_context_len=4096)
    reqs = [_req(i) for i in range(3)] + [_req(3, max_new=2)]
    steps = [runs.take(reqs).tolist() for _ in range(5)]
    for j, r in enumerate(reqs[:3]):
        mine = [s[j] for s in steps]
        assert mine == list(range(mine[0], mine[0] + 5)), mine  # one run, ascending
    assert len({x for s in steps for x in s}) == 20  # no slot handed out twice
    # the request that may generate only 2 more tokens takes runs of 2 (its output does not grow
    # here): 3 runs for 5 steps, one slot left
    assert runs.held(reqs[:3]) == 3 * 3 and runs.held(reqs[3:]) == 1
    assert pool.num_free == 1000 - 3 * 8 - 3 * 2
    for r in reqs:
        runs.give_back(r)
    assert runs.held(reqs) == 0 and pool.num_free == 1000 - 20


def test_short_pool_takes_one_slot_each_then_none():
    pool = KVPool(20, 1, 1, 4, torch.float32, "cpu")
    runs = DecodeSlotRuns(pool, 16, max_context_len=4096)
    reqs = [_req(i) for i in range(4)]
    first = runs.take(reqs)  # 4 runs of 16 do not fit 4 times over: one slot each
    assert first.numel() == 4 and runs.held(reqs) == 0 and pool.num_free == 16
    pool.alloc(14)
    assert runs.take(reqs) is None  # 2 free slots for 4 requests
    with pytest.raises(ValueError, match="at least 2"):
        DecodeSlotRuns(pool, 1, 4096)


QUESTIONS = ["What is the capital of France?", "Name three colors.", "Count from one to ten.",
             "Write a haiku about rain.", "What is 2+2?", "Say hello in Spanish."]


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_engine_with_runs_matches_and_accounts(engine_fp32, chat, overlap):
    tok = engine_fp32.tokenizer
    ids = [tok.encode(chat(tok, q)) for q in QUESTIONS]
    params = [{"temperature": 0, "max_new_tokens": n, "ignore_eos": True} for n in (1, 5, 17, 32, 40, 24)]
    ref = engine_fp32.generate(input_ids=ids, sampling_params=params)
    eng = Engine(dtype="float32", max_total_tokens=4096, decode_slot_run=16, overlap_schedule=overlap)
    try:
        outs = eng.generate(input_ids=ids, sampling_params=params)
        assert [o["output_ids"] for o in outs] == [o["output_ids"] for o in ref]
        eng.check_integrity()
        assert eng.scheduler.pool.num_free + eng.scheduler.cache.evictable_size == 4096
        # the 40-token request's generated tokens sit in runs of contiguous slots (the tree keeps
        # its KV): at most one jump per run of 16, against a jump at every token without runs
        prompt, out = ids[4], outs[4]["output_ids"]
        slots = eng.scheduler.cache.match_prefix(prompt + out[:-1]).indices[len(prompt):].tolist()
        assert len(slots) == 39
        jumps = sum(b != a + 1 for a, b in zip(slots, slots[1:]))
        assert jumps <= 3, slots
    finally:
        eng.shutdown()


def test_bad_flags_are_refused():
    from sgl_lang.runtime.config import ConfigError, EngineConfig
    with pytest.raises(ConfigError, match="decode_slot_run"):
        EngineConfig(decode_slot_run=-1)
    with pytest.raises(ConfigError, match="decode_gemm"):
        EngineConfig(decode_gemm="cutlass")
