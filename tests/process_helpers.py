"""Shared by the tests that start real processes (server, router, reliability): a free loopback
port, a child process logging to a file, and the wait for its /health route."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Sequence

import httpx

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_path(name: str, port: int) -> str:
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sgl_lang_{name}_{port}.log")


def spawn_module(module: str, args: Sequence[str], log_file: str) -> subprocess.Popen:
    """`python -m module *args` from the repository root, output to log_file, no hub access."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_file, "w") as log:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)


def tail(log_file: str, n: int = 3000) -> str:
    with open(log_file) as f:
        return f.read()[-n:]


def wait_healthy(proc: subprocess.Popen, url: str, log_file: str, timeout: float, what: str = "server") -> None:
    """Return once GET url/health answers 200; raise RuntimeError with the log's tail if the
    process exits first or `timeout` seconds pass (the process is then killed)."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log_file)}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} not healthy after {timeout} s:\n{tail(log_file)}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_expecting_error(client: httpx.Client, path: str, body, status: int, words) -> dict:
    """POST body (a dict as JSON, or raw bytes) and check the error: its HTTP status, an OpenAI-style
    {"error": {"message", "type", ...}} body whose message names every one of `words`."""
    if isinstance(body, bytes):
        resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        resp = client.post(path, json=body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    for word in words:
        assert word in err["message"], (word, err)
    assert err["type"]
    return err
