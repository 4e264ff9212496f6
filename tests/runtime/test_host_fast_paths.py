"""The steady-decode fast paths of the host step give exactly what the general paths give:
batch_builder.plain_decode_indices vs general_indices, Scheduler.commit of a decode batch vs
append_kv, OutputProcessor's plain-token path vs _process_one; and a whole engine run with the
fast paths turned off matches one with them on."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from sgl_lang.runtime import batch_builder
from sgl_lang.runtime.batch_builder import build_forward_batch, general_indices, plain_decode_indices
from sgl_lang.runtime.mem.req_to_token import ReqToTokenTable
from sgl_lang.runtime.output_processor import OutputProcessor
from sgl_lang.runtime.request import Req
from sgl_lang.runtime.sampling_params import SamplingParams
from sgl_lang.runtime.scheduler import ScheduledBatch, Scheduler
from sgl_lang.runtime.step_output import RunnerOutput, StepHandle


def _decode_req(rng: random.Random, j: int, table: ReqToTokenTable, all_pending: bool) -> tuple[Req, int]:
    """A running req about to decode (mostly), with now and then one thing that makes it not a
    plain sampling decode; returns it and its prefix_len."""
    prompt = [rng.randrange(1, 100) for _ in range(rng.randint(1, 6))]
    req = Req(rid=f"r{j}", prompt_ids=prompt, params=SamplingParams(max_new_tokens=rng.randint(1, 8)))
    req.output_ids = [rng.randrange(1, 100) for _ in range(rng.randint(0, req.params.max_new_tokens - 1))]
    req.num_pending = 1 if all_pending else rng.choice((0, 0, 0, 1))
    req.pending_row = j if rng.random() < 0.9 else rng.randrange(64)
    prefix_len = req.seq_len - 1
    req.kv_indices = torch.arange(100 * j + 1, 100 * j + 1 + prefix_len)
    req.kv_len = prefix_len
    req.table_row = table.alloc_row()
    req.table_len = prefix_len
    odd = rng.random()
    if odd < 0.03:
        req.table_len = max(0, prefix_len - 1)  # a stale row: its prefix is written first
    elif odd < 0.06:
        req.table_row, req.table_len = -1, 0  # no row yet
    elif odd < 0.08:
        req.logprob_start_len, req.return_logprob = 0, True
    elif odd < 0.10:
        req.finish({"type": "abort", "message": "x"})
    elif odd < 0.12:
        prefix_len = max(prefix_len - 1, 0)  # two tokens to compute (given one: not a decode)
    elif odd < 0.14:
        req.num_pending, req.output_ids = 0, req.output_ids + [5] * (req.params.max_new_tokens - len(req.output_ids))
        prefix_len = req.seq_len - 1  # no budget left: no sample
    return req, prefix_len


@pytest.mark.parametrize("seed", range(40))
def test_plain_decode_indices_equal_general_indices(seed):
    rng = random.Random(seed)
    bs = rng.choice((1, 2, 5, 16))
    table = ReqToTokenTable(2 * bs + 2, 64, torch.device("cpu"))
    all_pending = rng.random() < 0.5
    made = [_decode_req(rng, j, table, all_pending) for j in range(bs)]
    reqs = [r for r, _ in made]
    batch = ScheduledBatch(reqs, [p for _, p in made], [1] * bs, torch.arange(1000, 1000 + bs))
    twin = copy.deepcopy(batch)
    twin_table = copy.deepcopy(table)
    prev = StepHandle(batch=None, sampling=list(range(64)), next_tokens=torch.arange(64))
    fast = plain_decode_indices(batch)
    general = general_indices(twin, prev, twin_table)
    if fast is None:  # then the general path runs on this batch, from the same state
        general_again = general_indices(batch, prev, table)
        assert general_again == general
    else:
        assert fast == general
    assert [r.table_len for r in batch.reqs] == [r.table_len for r in twin.reqs]
    assert torch.equal(table.data, twin_table.data)


def test_plain_decode_indices_cover_steady_decodes():
    """The fast path takes the steady cases: all in flight (overlap) and none in flight."""
    for all_pending in (True, False):
        table = ReqToTokenTable(8, 64, torch.device("cpu"))
        reqs = []
        for j in range(4):
            r = Req(rid=str(j), prompt_ids=[1, 2, 3], params=SamplingParams(max_new_tokens=8))
            r.output_ids = [7]
            r.num_pending, r.pending_row = (1, j) if all_pending else (0, -1)
            r.kv_len = r.seq_len - 1
            r.table_row, r.table_len = table.alloc_row(), r.kv_len
            reqs.append(r)
        batch = ScheduledBatch(reqs, [r.kv_len for r in reqs], [1] * 4, torch.arange(10, 14))
        assert plain_decode_indices(batch) is not None


@pytest.mark.parametrize("overlap", [True, False])
def test_forward_batch_of_a_steady_decode_is_the_same_either_path(overlap, monkeypatch):
    def steady(table):
        reqs = []
        for j in range(6):
            r = Req(rid=str(j), prompt_ids=[1, 2, 3 + j], params=SamplingParams(max_new_tokens=8))
            r.output_ids = [7, 8 + j][:j % 3]
            r.num_pending, r.pending_row = (1, j) if overlap else (0, -1)
            r.kv_indices = torch.arange(10 * j + 1, 10 * j + r.seq_len)
            r.kv_len = r.seq_len - 1
            r.table_row, r.table_len = table.alloc_row(), 0
            reqs.append(r)
        return ScheduledBatch(reqs, [r.kv_len for r in reqs], [1] * 6, torch.arange(100, 106))

    prev = StepHandle(batch=None, sampling=list(range(6)), next_tokens=torch.arange(50, 56))
    results = []
    for use_fast in (True, False):
        if not use_fast:
            monkeypatch.setattr(batch_builder, "plain_decode_indices", lambda batch: None)
        table = ReqToTokenTable(8, 32, torch.device("cpu"))
        batch = steady(table)
        build_forward_batch(batch, prev, table, torch.device("cpu"))  # writes the prefixes
        for r in batch.reqs:  # the next step of the same batch, one token further
            r.append_kv([r.kv_len + 1000])
            r.kv_len += 1
            if not overlap:
                r.output_ids.append(9)
        batch = ScheduledBatch(batch.reqs, [r.kv_len for r in batch.reqs], [1] * 6, torch.arange(200, 206))
        results.append(build_forward_batch(batch, prev, table, torch.device("cpu")))
    fast, general = results
    for name in ("input_ids", "positions", "out_cache_loc", "req_to_token", "seq_lens", "prefix_lens",
                 "extend_lens", "logits_indices", "seq_lens_device"):
        assert torch.equal(getattr(fast.fb, name), getattr(general.fb, name)), name
    assert fast.fb.is_decode and general.fb.is_decode
    assert (fast.sample_rows, fast.input_rows, fast.is_every_row_sampled) == \
        (general.sample_rows, general.input_rows, general.is_every_row_sampled)
    assert torch.equal(fast.sample_idx, general.sample_idx)


def test_commit_of_a_decode_batch_appends_one_slot_each():
    sched = Scheduler.__new__(Scheduler)  # commit touches only the batch
    reqs = [Req(rid=str(j), prompt_ids=[1], params=SamplingParams()) for j in range(3)]
    for j, r in enumerate(reqs):
        r.append_kv(list(range(j)))
        r.kv_len, r.extend_len = j, 1
    sched.commit(ScheduledBatch(reqs, [0, 1, 2], [1, 1, 1], torch.tensor([7, 8, 9])))
    assert [list(r.kv_slots) for r in reqs] == [[7], [0, 8], [0, 1, 9]]
    assert [(r.kv_len, r.extend_len) for r in reqs] == [(1, 0), (2, 0), (3, 0)]


@pytest.fixture(scope="module")
def tokenizer():
    from sgl_lang.runtime.default_model import default_model_dir
    from sgl_lang.runtime.models.loader import load_tokenizer
    return load_tokenizer(default_model_dir())


@pytest.mark.parametrize("seed", range(12))
def test_plain_token_path_equals_the_general_path(tokenizer, seed):
    """Random requests (stop ids, EOS, stop strings, streaming, length and context limits, a
    tokenizer that fails) fed the same random tokens through process() and through
    _process_one for every request."""
    rng = random.Random(seed)
    eos = (0, 2)
    vocab = [0, 2, 11, 13, 198, 260, 314, 1000, 2000, 3000, 30, 31, 32]

    def make(emitted):
        proc = OutputProcessor(tokenizer, eos, max_context_len=rng_ctx)
        reqs = []
        for j in range(8):
            params = SamplingParams(max_new_tokens=rngs[j].randint(1, 12),
                                    stop_token_ids=tuple(rngs[j].sample(vocab, 1)) if j % 3 == 0 else (),
                                    stop=["a", "\n\n"] if j % 4 == 1 else [],
                                    ignore_eos=j % 5 == 2)
            req = Req(rid=str(j), prompt_ids=[1] * rngs[j].randint(1, 6), params=params, stream=j % 2 == 1)
            req.detok = proc.new_detokenizer(req)
            req.on_output = lambda o, j=j: emitted.append((j, o.text, o.output_ids, o.finished,
                                                           o.meta_info["finish_reason"], o.error))
            reqs.append(req)
        return proc, reqs

    rng_ctx = rng.randint(8, 20)
    streams = [(random.Random(seed * 100 + j)) for j in range(8)]
    rngs = [random.Random(seed * 1000 + j) for j in range(8)]
    fast_out, general_out = [], []
    proc_f, reqs_f = make(fast_out)
    rngs = [random.Random(seed * 1000 + j) for j in range(8)]
    proc_g, reqs_g = make(general_out)
    for step in range(14):
        tokens = [s.choice(vocab) for s in streams]
        for proc, reqs, general in ((proc_f, reqs_f, False), (proc_g, reqs_g, True)):
            if seed % 3 == 0 and step == 5:  # the tokenizer fails on req 3: only it ends
                reqs[3].detok.add_token = _raise
            batch = ScheduledBatch(reqs, [0] * 8, [1] * 8, torch.zeros(8, dtype=torch.int64))
            out = RunnerOutput(list(tokens), [0.0] * 8, [None] * 8)
            if general:
                for i, req in enumerate(reqs):
                    if not req.is_finished:
                        proc._process_one(batch, out, i, req)
            else:
                proc.process(batch, out)
    assert fast_out == general_out
    for a, b in zip(reqs_f, reqs_g):
        assert (a.output_ids, a.finish_reason, a.error, a.detok.text) == \
            (b.output_ids, b.finish_reason, b.error, b.detok.text)


def _raise(token):
    raise ValueError(f"cannot decode {token}")


@pytest.fixture(scope="module")
def overlap_engine():
    from sgl_lang.runtime.engine import Engine
    eng = Engine(dtype="float32", max_total_tokens=4096, overlap_schedule="on")
    yield eng
    eng.shutdown()


def _general_process(self, batch, out):
    for i, req in enumerate(batch.reqs):
        if not req.is_finished:
            self._process_one(batch, out, i, req)


@pytest.mark.parametrize("overlap", [False, True])
def test_an_engine_run_is_the_same_without_the_fast_paths(engine_fp32, overlap_engine, chat, overlap,
                                                          monkeypatch):
    engine = overlap_engine if overlap else engine_fp32
    tok = engine.tokenizer
    questions = ["What is the capital of France?", "Name three colors.", "Count from one to ten.",
                 "Write a haiku about rain.", "What is 2+2?", "Say hello in Spanish."]
    prompts = [chat(tok, q) for q in questions]
    params = [{"temperature": 0, "max_new_tokens": n} for n in (1, 5, 17, 24, 30, 12)]
    params[2]["stop"] = ["4."]
    params[3].update(temperature=0.8, top_p=0.9, seed=11)
    params[4]["stop_token_ids"] = [tok.encode(",", add_special_tokens=False)[0]]
    fast = engine.generate(prompts, params)
    fast_stream = list(engine.generate(prompts[1], params[1], stream=True))
    monkeypatch.setattr(batch_builder, "plain_decode_indices", lambda batch: None)
    monkeypatch.setattr(OutputProcessor, "process", _general_process)
    general = engine.generate(prompts, params)
    general_stream = list(engine.generate(prompts[1], params[1], stream=True))

    def strip(outs):
        return [(o["text"], o["output_ids"], o["meta_info"]["finish_reason"]) for o in outs]
    assert strip(fast) == strip(general)
    assert [o["text"] for o in fast_stream] == [o["text"] for o in general_stream]
    engine.check_integrity()


def test_sample_facts_are_kept_only_for_the_same_requests():
    from sgl_lang.runtime.model_runner import ModelRunner
    from sgl_lang.runtime.sampling_batch import sample_facts
    runner = ModelRunner.__new__(ModelRunner)  # _facts_of uses only its own memory
    runner._facts = ([], sample_facts([]))
    greedy = [Req(rid=str(j), prompt_ids=[1], params=SamplingParams(temperature=0)) for j in range(3)]
    penalised = Req(rid="p", prompt_ids=[1], params=SamplingParams(frequency_penalty=0.5, min_new_tokens=2))
    assert runner._facts_of(greedy) == (False, True, False)
    mixed = greedy[:2] + [penalised]
    assert runner._facts_of(mixed) == (True, False, True) == sample_facts(mixed)
    assert runner._facts_of(list(greedy)) == (False, True, False)  # an equal list of the same reqs
    twins = [Req(rid=str(j), prompt_ids=[1], params=SamplingParams(temperature=0.7)) for j in range(3)]
    assert runner._facts_of(twins) == sample_facts(twins) == (False, False, False)
