"""Faults: client disconnects, grammars that fail or hang, KV pool exhaustion, an engine error in
one request, the concurrency cap. After each, the KV accounting is back at baseline."""
import json
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from conftest import TINY_MAX_CONCURRENT, TINY_POOL
from reliability_helpers import assert_engine_idle, assert_serves

pytestmark = pytest.mark.slow

LONG = {"max_new_tokens": 200, "ignore_eos": True, "temperature": 0}


def _read_events(resp, count: int) -> list:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: {"):
            events.append(json.loads(line[6:]))
            if len(events) >= count:
                break
    return events


@pytest.mark.parametrize("path,body", [
    ("/generate", {"text": "Count to a thousand:", "stream": True, "sampling_params": LONG}),
    ("/generate", {"text": ["One", "Two", "Three"], "stream": True, "sampling_params": LONG}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell a long story."}], "stream": True,
                              "n": 2, "max_tokens": 200, "ignore_eos": True}),
    ("/v1/completions", {"prompt": "Once upon a time", "stream": True, "max_tokens": 200, "ignore_eos": True,
                         "regex": "[a-z ]+"}),
], ids=["generate", "generate-batch", "chat-n2", "completion-regex"])
def test_disconnect_mid_stream_aborts_and_frees(server, http, path, body):
    before = _num_aborted(http)
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as c:
        with c.stream("POST", path, json=body) as resp:
            assert resp.status_code == 200
            assert len(_read_events(resp, 3)) == 3
        # leaving the block closes the connection mid-stream
    st = server.wait_idle()
    assert st["num_running_reqs"] == 0
    assert _num_aborted(http) > before  # counted as aborted, not finished
    assert_serves(http)


def _num_aborted(http) -> float:
    m = re.search(r"^sgl_lang:num_aborted_requests_total\{[^}]*\} ([0-9.]+)$", http.get("/metrics").text, re.M)
    return float(m.group(1))


def test_many_disconnects_at_once(server, http):
    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as c:
            with c.stream("POST", "/generate", json={"text": f"Item {i}:", "stream": True,
                                                      "sampling_params": LONG}) as resp:
                _read_events(resp, 1 + i % 3)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    server.wait_idle()
    assert_serves(http)


# ---- the tiny server: KV exhaustion and the concurrency cap ------------------------------------

def test_kv_pool_exhaustion_retracts_and_finishes_everything(tiny_server):
    prompts = [f"Request number {i}: write the alphabet slowly, letter by letter." for i in range(TINY_MAX_CONCURRENT)]
    n_new = 60
    with tiny_server.client() as c:
        before = tiny_server.stats()

        def one(prompt: str) -> dict:
            resp = c.post("/generate", json={"text": prompt, "sampling_params": {
                "max_new_tokens": n_new, "ignore_eos": True, "temperature": 0}})
            assert resp.status_code == 200, resp.text
            return resp.json()

        with ThreadPoolExecutor(len(prompts)) as pool:
            outs = list(pool.map(one, prompts))
        demand = sum(o["meta_info"]["prompt_tokens"] + n_new for o in outs)
        assert demand > 2 * TINY_POOL  # the pool really was too small for all of them at once
        for out in outs:
            assert out["meta_info"]["finish_reason"]["type"] == "length"
            assert len(out["output_ids"]) == n_new and out["text"]
        st = tiny_server.wait_idle()
        assert st["num_retractions"] > before["num_retractions"]
        assert st["kv_pool_total"] == TINY_POOL
        assert_serves(c)


def test_request_larger_than_the_pool_alone(tiny_server):
    """A request whose prompt + output exceed the whole pool ends with finish_reason length and a
    message, instead of hanging."""
    with tiny_server.client() as c:
        resp = c.post("/generate", json={"input_ids": [5] * 100, "sampling_params": {
            "max_new_tokens": 27, "ignore_eos": True}})
        assert resp.status_code == 200, resp.text
        assert resp.json()["meta_info"]["finish_reason"]["type"] == "length"
        tiny_server.wait_idle()


def test_concurrency_cap_answers_503_then_recovers(tiny_server):
    body = {"text": "Go on:", "stream": True, "sampling_params": {"max_new_tokens": 100, "ignore_eos": True}}
    with httpx.Client(base_url=tiny_server.url, timeout=60, limits=httpx.Limits(max_connections=32)) as c:
        streams = [c.stream("POST", "/generate", json=body) for _ in range(TINY_MAX_CONCURRENT)]
        opened = [s.__enter__() for s in streams]
        try:
            assert all(r.status_code == 200 for r in opened)
            resp = c.post("/generate", json={"text": "one more", "sampling_params": {"max_new_tokens": 1}})
            assert resp.status_code == 503, resp.text
            assert "max_concurrent_requests" in resp.json()["error"]["message"]
            assert c.get("/health").status_code == 200  # health is not a generation route
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        tiny_server.wait_idle()
        assert_serves(c)


# ---- in-process: grammars that hang, engine errors in one request --------------------------------

def _submit(engine, prompt, sp) -> tuple:
    """make_request + add_request; returns (req, outputs list, finished event)."""
    from sgl_lang.runtime.sampling_params import SamplingParams
    req = engine.make_request(prompt, SamplingParams.from_dict(sp))
    outs, done = [], threading.Event()

    def on_output(o):
        outs.append(o)
        if o.finished:
            done.set()
    req.on_output = on_output
    engine.add_request(req)
    return req, outs, done


def test_hung_grammar_compile_blocks_only_its_request(engine, monkeypatch):
    hung: Future = Future()  # never completes
    real = engine.grammar.compile_async
    monkeypatch.setattr(engine.grammar, "compile_async",
                        lambda kind, spec: hung if spec == "hang-forever" else real(kind, spec))
    req, outs, done = _submit(engine, "Hi", {"regex": "hang-forever", "max_new_tokens": 4})
    good = engine.generate(["a", "b"], {"max_new_tokens": 3, "temperature": 0, "regex": "[0-9]+"})
    assert all("error" not in o and o["text"].isdigit() for o in good)
    assert not done.is_set()
    engine.abort(req.rid)
    assert done.wait(30) and outs[-1].meta_info["finish_reason"]["type"] == "abort"
    assert_engine_idle(engine)


def test_grammar_compile_timeout_fails_the_request(engine, monkeypatch):
    """A compile that never finishes fails its request after grammar_compile_timeout_s."""
    import dataclasses
    hung: Future = Future()  # never completes
    real = engine.grammar.compile_async
    monkeypatch.setattr(engine.grammar, "compile_async",
                        lambda kind, spec: hung if spec == "hang-forever" else real(kind, spec))
    monkeypatch.setattr(engine, "config", dataclasses.replace(engine.config, grammar_compile_timeout_s=0.5))
    req, outs, done = _submit(engine, "Hi", {"regex": "hang-forever", "max_new_tokens": 4})
    good = engine.generate("a", {"max_new_tokens": 3, "temperature": 0})
    assert "error" not in good
    assert done.wait(30)
    assert outs[-1].meta_info["finish_reason"]["type"] == "abort"
    assert "timed out" in outs[-1].error
    assert_engine_idle(engine)


class _ExplodingMatcher:
    """A grammar matcher whose library fails mid-decode (a bug or resource limit in it)."""

    def accept_token(self, token_id):
        raise RuntimeError("matcher exploded")

    def fill_bitmask(self, bitmask, row):
        bitmask[row].fill_(-1)

    def rollback(self, n):
        pass

    def is_terminated(self):
        return False

    def is_accepting(self):
        return False

    def jump_forward_string(self):
        return ""

    def error(self):
        return ""


@pytest.fixture
def own_engine():
    """A private engine: this test may kill its loop."""
    from sgl_lang.runtime.engine import Engine
    eng = Engine(max_total_tokens=256, context_length=128)
    yield eng
    eng.shutdown()


def test_engine_error_in_one_request_spares_the_others(own_engine, monkeypatch):
    class Exploding:
        def new_matcher(self):
            return _ExplodingMatcher()

    done_future: Future = Future()
    done_future.set_result(Exploding())
    monkeypatch.setattr(own_engine.grammar, "compile_async", lambda kind, spec: done_future)
    bad = _submit(own_engine, "Hi", {"regex": "x", "max_new_tokens": 4})
    good = own_engine.generate(["a", "b"], {"max_new_tokens": 4, "temperature": 0})
    assert bad[2].wait(30) and bad[1][-1].error
    assert all("error" not in o for o in good), good
    assert own_engine.generate("Hello", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2
    assert_engine_idle(own_engine)
