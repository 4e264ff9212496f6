"""ServerProcess: a real `python -m sgl_lang.launch_server` on a free loopback port, plus the
checks every reliability test ends with (the KV accounting is back at baseline)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/process_helpers.py
from process_helpers import free_port, spawn_module, wait_healthy  # noqa: E402

API_KEY = "reliability-key"


class ServerProcess:
    """Start with `ServerProcess(flags).start()`; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, flags: Sequence[str] = (), api_key: Optional[str] = API_KEY, name: str = "server"):
        self.port = free_port()
        self.api_key = api_key
        self.url = f"http://127.0.0.1:{self.port}"
        self.flags = list(flags) + (["--api-key", api_key] if api_key else [])
        self.log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sgl_lang_{name}_{self.port}.log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def start(self, timeout: float = 180) -> "ServerProcess":
        self.proc = spawn_module("sgl_lang.launch_server", ["--host", "127.0.0.1", "--port", str(self.port),
                                                            "--log-level", "warning", *self.flags], self.log_path)
        wait_healthy(self.proc, self.url, self.log_path, timeout)
        return self

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> Optional[int]:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stats(self) -> dict:
        with self.client(30) as c:
            return c.get("/get_server_info").json()["internal_states"][0]

    def wait_idle(self, timeout: float = 60.0) -> dict:
        """Stats once nothing runs; asserts free + cached == total (nothing locked, nothing leaked)."""
        return wait_idle(self.url, self.headers, timeout)


def wait_idle(url: str, headers: dict, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        while True:
            st = c.get("/get_server_info").json()["internal_states"][0]
            if st["num_running_reqs"] == 0 and st["num_waiting_reqs"] == 0:
                assert st["kv_pool_free"] + st["cached_tokens"] == st["kv_pool_total"], st
                assert st["evictable_tokens"] == st["cached_tokens"], f"cache nodes still locked: {st}"
                return st
            assert time.time() < deadline, f"server not idle after {timeout}s: {st}"
            time.sleep(0.1)


def assert_serves(client: httpx.Client) -> None:
    """The server answers a good request after whatever the test did to it."""
    resp = client.post("/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 2,
                                                                                "temperature": 0}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["meta_info"]["completion_tokens"] >= 1


def assert_engine_idle(engine, timeout: float = 30.0) -> dict:
    """In-process counterpart of wait_idle: check_integrity() plus free + cached == total."""
    deadline = time.time() + timeout
    while True:
        st = engine.get_stats()
        if st["num_running_reqs"] == 0 and st["num_waiting_reqs"] == 0:
            engine.check_integrity()
            assert st["kv_pool_free"] + st["cached_tokens"] == st["kv_pool_total"], st
            assert st["evictable_tokens"] == st["cached_tokens"], f"cache nodes still locked: {st}"
            return st
        assert time.time() < deadline, f"engine not idle after {timeout}s: {st}"
        time.sleep(0.05)
