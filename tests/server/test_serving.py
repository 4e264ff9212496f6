"""Serving behaviour: concurrent clients share batches; a client that disconnects mid-stream
aborts its request and its KV slots come back."""
import json
import threading

import pytest

from conftest import wait_idle

pytestmark = pytest.mark.slow


def _stats(http) -> dict:
    return http.get("/get_server_info").json()["internal_states"][0]


def test_concurrent_clients_are_batched(http):
    wait_idle(http)
    before = _stats(http)
    num_clients, num_tokens = 16, 8
    results = [None] * num_clients

    def client(i):
        body = {"text": f"Client {i} says:", "sampling_params": {"max_new_tokens": num_tokens, "ignore_eos": True}}
        results[i] = http.post("/generate", json=body).json()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(num_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["meta_info"]["completion_tokens"] == num_tokens for r in results)
    after = wait_idle(http)
    steps = after["num_steps"] - before["num_steps"]
    tokens = after["num_generated_tokens"] - before["num_generated_tokens"]
    assert tokens == num_clients * num_tokens
    assert steps <= tokens // 3, (steps, tokens)  # one request at a time would take `tokens` steps


def test_disconnect_mid_stream_frees_kv(http, server_url):
    import httpx
    wait_idle(http)
    before = _stats(http)
    body = {"text": "Tell me a very long story.", "stream": True,
            "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True}}
    with httpx.Client(base_url=server_url, headers=http.headers, timeout=60) as c:
        with c.stream("POST", "/generate", json=body) as resp:
            got = []
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    got.append(json.loads(line[6:]))
                if len(got) >= 3:
                    break
    assert got[-1]["meta_info"]["finish_reason"] is None
    after = wait_idle(http)  # asserts free + cached == total
    assert after["num_generated_tokens"] - before["num_generated_tokens"] < 2000
    metrics = http.get("/metrics").text
    aborted = next(l for l in metrics.splitlines() if l.startswith("sgl_lang:num_aborted_requests_total"))
    assert float(aborted.split()[-1]) >= 1
