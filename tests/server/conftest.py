"""A REAL server process (`python -m sgl_lang.launch_server`, default model) on a free loopback
port, shared by every test of this folder; it runs with an API key and a small body limit so the
guard paths are exercised too."""
import os
import sys
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # program_suite

API_KEY = "test-key"
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture(scope="session")
def server_url():
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from process_helpers import free_port, log_path, spawn_module, stop, wait_healthy
    port = free_port()
    log = log_path("server", port)
    proc = spawn_module("sgl_lang.launch_server", ["--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
                                                   "--max-request-bytes", str(MAX_REQUEST_BYTES),
                                                   "--log-level", "warning"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(proc, url, log, timeout=120)
        except RuntimeError as e:
            pytest.fail(str(e))
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def http(server_url):
    import httpx
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
        yield c


def wait_idle(http, timeout: float = 30.0) -> dict:
    """The engine's stats once nothing runs; asserts the KV accounting balances."""
    deadline = time.time() + timeout
    while True:
        st = http.get("/get_server_info").json()["internal_states"][0]
        if st["num_running_reqs"] == 0 and st["num_waiting_reqs"] == 0:
            assert st["kv_pool_free"] + st["cached_tokens"] == st["kv_pool_total"], st
            return st
        assert time.time() < deadline, f"server not idle after {timeout}s: {st}"
        time.sleep(0.1)
