"""The router's HTTP front against model-free fake workers: routing, SSE pass-through, fan-out,
failover (a dead worker is skipped and the request retried) and recovery."""
import httpx
import pytest

from fake_worker import Served, fake_worker
from sgl_lang.runtime.router import RouterConfig
from sgl_lang.runtime.router.app import create_router_app

AUTH = {"Authorization": "Bearer k"}
PREFIX = {g: f"Few-shot prompt of group {g}: " + "example; " * 30 for g in "XYZW"}


@pytest.fixture
def cluster():
    apps = [fake_worker("a"), fake_worker("b")]
    workers = [Served(a) for a in apps]
    routers = []

    def start(policy="prefix", extra_urls=(), **kw):
        cfg = RouterConfig(worker_urls=tuple(w.url for w in workers) + tuple(extra_urls), policy=policy,
                           health_check_interval_s=kw.pop("interval", 60.0), **kw)
        served = Served(create_router_app(cfg))
        routers.append(served)
        return httpx.Client(base_url=served.url, headers=AUTH, timeout=20)

    yield apps, workers, start
    for s in routers + workers:
        s.stop()


def _gen(client, text, **kw):
    r = client.post("/generate", json={"text": text, **kw})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def test_prefix_policy_keeps_each_group_on_one_worker(cluster):
    apps, _, start = cluster
    client = start("prefix")
    homes = {}
    for i in range(4):
        for g in "XYZW":
            homes.setdefault(g, set()).add(_gen(client, PREFIX[g] + f"question {i}"))
    assert all(len(h) == 1 for h in homes.values()), homes
    assert {next(iter(h)) for h in homes.values()} == {"a", "b"}  # the groups were spread
    info = client.get("/router_info").json()
    assert info["decisions"] == {"least_load": 4, "prefix": 12}


def test_round_robin_alternates(cluster):
    _, _, start = cluster
    client = start("round_robin")
    assert [_gen(client, PREFIX["X"]) for _ in range(4)] == ["a", "b", "a", "b"]


def test_stream_passes_through_and_errors_are_relayed(cluster):
    _, _, start = cluster
    client = start("round_robin")
    with client.stream("POST", "/generate", json={"text": "hi", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = b"".join(r.iter_raw())
    assert body.count(b"data: ") == 4 and body.endswith(b"data: [DONE]\n\n")
    assert b'"text": "aaa"' in body
    r = client.post("/generate", json={"text": "hi"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401  # a worker's 4xx comes back unchanged, not retried
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake"
    assert client.get("/router_info").json()["workers"][0]["in_flight"] == 0


def test_dead_worker_is_skipped_and_request_retried(cluster):
    apps, workers, start = cluster
    dead_url = "http://127.0.0.1:9"  # discard port: connection refused
    client = start("round_robin", extra_urls=(dead_url,))
    results = [_gen(client, f"p{i}") for i in range(6)]  # the retry hides the dead worker
    assert set(results) == {"a", "b"}
    state = client.get("/router_info").json()["workers"]
    assert state[2]["is_healthy"] is False and "Connect" in state[2]["last_error"]
    assert client.get("/health").status_code == 200
    # streaming requests fail over as well, since nothing was streamed yet
    workers[0].stop()
    with client.stream("POST", "/generate", json={"text": "s", "stream": True}) as r:
        assert b'"text": "bbb"' in b"".join(r.iter_raw())
    workers[1].stop()
    r = client.post("/generate", json={"text": "x"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_healthy_worker" and "no healthy worker" in err["message"]
    assert client.get("/health").status_code == 503


def test_unhealthy_worker_recovers(cluster):
    apps, _, start = cluster
    apps[1].state.healthy = False
    client = start("round_robin", interval=0.1)
    assert {_gen(client, "p") for _ in range(4)} == {"a"}
    apps[1].state.healthy = True
    import time
    deadline = time.time() + 10
    while not client.get("/router_info").json()["workers"][1]["is_healthy"]:
        assert time.time() < deadline
        time.sleep(0.05)
    assert {_gen(client, "p") for _ in range(4)} == {"a", "b"}


def test_fan_out_routes(cluster):
    apps, _, start = cluster
    client = start("prefix")
    _gen(client, PREFIX["X"])
    info = client.get("/get_server_info").json()
    assert info["dp_size"] == 2 and len(info["internal_states"]) == 2
    assert info["router"]["cache_hit_rate"] == pytest.approx(0.5)
    assert {st["worker_url"] for st in info["internal_states"]} == {w["url"] for w in info["router"]["workers"]}
    assert client.post("/flush_cache").status_code == 200
    # a flush forgets the routing memory: the next request is routed by load again
    _gen(client, PREFIX["X"])
    assert client.get("/router_info").json()["decisions"] == {"least_load": 2}
    apps[0].state.busy_flush = True
    r = client.post("/flush_cache")
    assert r.status_code == 400 and "1 of 2 workers" in r.json()["error"]["message"]
