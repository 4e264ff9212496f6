"""SGLang's native routes on a real server: /generate (single, batch, n, stream, logprobs,
input_ids, max_new_tokens=0) and the info / cache / metrics routes."""
import json

import pytest

from conftest import wait_idle

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "max_new_tokens": 6}


def _sse(resp) -> list:
    events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_generate_single_and_batch(http):
    one = http.post("/generate", json={"text": "The capital of France is", "sampling_params": GREEDY}).json()
    assert isinstance(one["text"], str) and len(one["output_ids"]) == one["meta_info"]["completion_tokens"]
    meta = one["meta_info"]
    assert meta["finish_reason"]["type"] in ("length", "stop") and meta["prompt_tokens"] == 5
    batch = http.post("/generate", json={"text": ["The capital of France is", "1, 2, 3,"],
                                         "sampling_params": GREEDY}).json()
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0]["text"] == one["text"]  # greedy: same prompt, same answer inside a batch
    per_prompt = http.post("/generate", json={"text": ["A", "B"], "sampling_params": [
        {"max_new_tokens": 1}, {"max_new_tokens": 3, "ignore_eos": True}]}).json()
    assert [o["meta_info"]["completion_tokens"] for o in per_prompt] == [1, 3]
    n = http.post("/generate", json={"text": "Hi", "sampling_params": {"n": 3, "max_new_tokens": 2}}).json()
    assert isinstance(n, list) and len(n) == 3


def test_generate_input_ids_and_prefill_only(http):
    ids = http.post("/generate", json={"text": "Hello there", "sampling_params": {"max_new_tokens": 0}}).json()
    assert ids["text"] == "" and ids["output_ids"] == [] and ids["meta_info"]["completion_tokens"] == 0
    by_text = http.post("/generate", json={"text": "1, 2, 3,", "sampling_params": GREEDY, "return_logprob": True,
                                           "logprob_start_len": 0}).json()
    ids = [e[1] for e in by_text["meta_info"]["input_token_logprobs"]]
    tokens = http.post("/generate", json={"input_ids": ids, "sampling_params": GREEDY}).json()
    assert tokens["meta_info"]["prompt_tokens"] == len(ids) == by_text["meta_info"]["prompt_tokens"]
    assert tokens["text"] == by_text["text"]
    batch = http.post("/generate", json={"input_ids": [ids, ids[:3]], "sampling_params": GREEDY}).json()
    assert [o["meta_info"]["prompt_tokens"] for o in batch] == [len(ids), 3]


def test_generate_logprobs(http):
    out = http.post("/generate", json={"text": "1, 2, 3,", "sampling_params": GREEDY, "return_logprob": True,
                                       "logprob_start_len": 0, "top_logprobs_num": 2,
                                       "return_text_in_logprobs": True}).json()
    meta = out["meta_info"]
    inp, outp = meta["input_token_logprobs"], meta["output_token_logprobs"]
    assert len(inp) == meta["prompt_tokens"] and inp[0][0] is None and all(e[0] <= 0 for e in inp[1:])
    assert len(outp) == meta["completion_tokens"] and [e[1] for e in outp] == out["output_ids"]
    assert "".join(e[2] for e in inp) == "1, 2, 3,"
    assert all(len(row) == 2 for row in meta["output_top_logprobs"])
    # greedy: the sampled token is the top-1 alternative
    assert all(row[0][1] == e[1] for row, e in zip(meta["output_top_logprobs"], outp))
    no_text = http.post("/generate", json={"text": "1, 2,", "sampling_params": GREEDY,
                                           "return_logprob": True}).json()
    assert all(e[2] is None for e in no_text["meta_info"]["output_token_logprobs"])


def test_generate_stream_is_cumulative(http):
    body = {"text": "Count: 1, 2, 3,", "sampling_params": {"max_new_tokens": 6, "temperature": 0,
                                                            "ignore_eos": True}, "stream": True}
    with http.stream("POST", "/generate", json=body) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = _sse(resp)
    texts = [e["text"] for e in events]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert events[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 6}
    whole = http.post("/generate", json={**body, "stream": False}).json()
    assert texts[-1] == whole["text"]
    with http.stream("POST", "/generate", json={**body, "text": ["A", "B"]}) as resp:
        batch_events = _sse(resp)
    assert {e["index"] for e in batch_events} == {0, 1}


def test_info_routes(http, server_url):
    import httpx
    assert httpx.get(server_url + "/health").status_code == 200  # no API key needed
    assert http.get("/health_generate").status_code == 200
    info = http.get("/get_model_info").json()
    assert info["is_generation"] and "smollm" in info["model_path"].lower() and info["chat_template"]
    assert http.get("/model_info").json() == info
    server = http.get("/get_server_info").json()
    assert server["api_key"] == "<set>" and server["max_running_requests"] >= 1
    assert http.get("/server_info").json()["internal_states"][0]["kv_pool_total"] > 0
    wait_idle(http)
    assert http.post("/flush_cache").status_code == 200
    assert http.get("/get_server_info").json()["internal_states"][0]["cached_tokens"] == 0


def test_metrics_and_cached_tokens(http):
    prompt = "A long shared context that the radix cache should keep. " * 4
    http.post("/generate", json={"text": prompt + "First", "sampling_params": {"max_new_tokens": 1}})
    second = http.post("/generate", json={"text": prompt + "Second", "sampling_params": {"max_new_tokens": 1}})
    assert second.json()["meta_info"]["cached_tokens"] >= 40
    text = http.get("/metrics").text
    for name in ("sgl_lang:num_requests_total", "sgl_lang:prompt_tokens_total", "sgl_lang:generation_tokens_total",
                 "sgl_lang:cache_hit_rate", "sgl_lang:kv_pool_usage", "sgl_lang:http_requests_total"):
        assert name in text
    line = next(l for l in text.splitlines() if l.startswith("sgl_lang:cached_tokens_total"))
    assert float(line.split()[-1]) >= 40
