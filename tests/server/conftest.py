"""A REAL server process (`python -m sgl_lang.launch_server`, default model) on a free loopback
port, shared by every test of this folder; it runs with an API key and a small body limit so the
guard paths are exercised too."""
import os
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # program_suite

API_KEY = "test-key"
MAX_REQUEST_BYTES = 256 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url():
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    port = _free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sgl_lang_server_{port}.log"), "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgl_lang.launch_server", "--host", "127.0.0.1", "--port", str(port),
         "--api-key", API_KEY, "--max-request-bytes", str(MAX_REQUEST_BYTES), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                is_up = httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.TransportError:  # not listening yet
                is_up = False
            if is_up:
                break
            if time.time() > deadline:
                pytest.fail("server did not become healthy in 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
