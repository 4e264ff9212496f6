"""End to end: `python -m sgl_lang.router --dp-size 2` spawns two real replicas of the default model
(one thread each) and routes to them. Prefix groups keep their cache hits when spread over both
replicas; streaming passes through; stopping the router stops its replicas."""
import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/process_helpers.py

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow

GROUPS = {
    "math": "You are a careful calculator. " + " ".join(f"Q: {i} plus {i + 1}? A: {2 * i + 1}." for i in range(12)),
    "capitals": "Answer with the capital city. " + " ".join(
        f"Q: capital of {c}? A: {a}." for c, a in [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"),
                                                   ("Peru", "Lima"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
                                                   ("Kenya", "Nairobi"), ("Chile", "Santiago")]),
}


@pytest.fixture(scope="module")
def router_url():
    from process_helpers import free_port, log_path, spawn_module, stop, wait_healthy
    port = free_port()
    log = log_path("router", port)
    proc = spawn_module("sgl_lang.router", ["--dp-size", "2", "--port", str(port), "--num-threads", "1",
                                            "--max-total-tokens", "4096", "--context-length", "1024"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log, timeout=240, what="router")  # replicas load before it listens
        yield url, proc
    finally:
        stop(proc, timeout=30)


def _generate(url: str, text: str) -> dict:
    body = {"text": text, "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
    r = httpx.post(url + "/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["meta_info"]


def test_prefix_groups_keep_cache_hits_across_replicas(router_url):
    url, _ = router_url
    metas = {g: [] for g in GROUPS}
    for i in range(3):
        for g, prefix in GROUPS.items():
            metas[g].append(_generate(url, f"{prefix} Q: question {i}? A:"))
    for g, ms in metas.items():
        assert ms[0]["cached_tokens"] < ms[0]["prompt_tokens"] // 2, (g, ms[0])
        for m in ms[1:]:  # later requests of a group found its few-shot prefix cached
            assert m["cached_tokens"] >= 0.8 * m["prompt_tokens"] - 10, (g, m)
    info = httpx.get(url + "/get_server_info", timeout=30).json()
    states = info["internal_states"]
    assert len(states) == 2 and info["dp_size"] == 2
    assert all(st["prompt_tokens_total"] > 0 for st in states), "both replicas got a group"
    assert info["router"]["cache_hit_rate"] > 0.5
    assert info["router"]["decisions"].get("prefix", 0) >= 4


def test_streaming_and_openai_routes_through_router(router_url):
    url, _ = router_url
    body = {"text": "Hello", "stream": True, "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}}
    events = []
    with httpx.stream("POST", url + "/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["meta_info"]["completion_tokens"] == 3
    r = httpx.post(url + "/v1/chat/completions", timeout=60,
                   json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    assert httpx.get(url + "/v1/models", timeout=10).json()["data"]
    r = httpx.post(url + "/generate", json={"text": ""}, timeout=10)
    assert r.status_code == 400 and "error" in r.json()  # the replica's own error comes back as is


def test_stopping_the_router_stops_its_replicas(router_url):
    url, proc = router_url
    replica_urls = [w["url"] for w in httpx.get(url + "/router_info", timeout=10).json()["workers"]]
    proc.terminate()
    proc.wait(timeout=60)
    for replica in replica_urls:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(replica + "/health", timeout=1)
            except httpx.TransportError:
                break
            assert time.time() < deadline, f"replica {replica} still serving after the router stopped"
            time.sleep(0.5)
