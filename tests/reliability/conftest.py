"""Fixtures of the reliability suite: real server processes (shared per session) and an in-process
Engine on the default model with a small KV pool."""
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))  # reliability_helpers
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # benchmarks

from reliability_helpers import ServerProcess  # noqa: E402

CONTEXT_LEN = 256  # main server: small so that no fuzzed request can run for long
MAX_REQUEST_BYTES = 256 * 1024
TINY_POOL = 160  # tokens in the tiny server's KV pool
TINY_MAX_CONCURRENT = 6


@pytest.fixture(scope="session")
def server():
    """The main server: API key, small body limit, 256-token context window."""
    pytest.importorskip("fastapi")
    srv = ServerProcess(["--context-length", str(CONTEXT_LEN), "--max-request-bytes", str(MAX_REQUEST_BYTES),
                         "--graceful-shutdown-timeout", "5"], name="main").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def http(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def tiny_server():
    """A server whose KV pool holds only TINY_POOL tokens and that admits TINY_MAX_CONCURRENT
    requests at once (no API key: the open configuration)."""
    pytest.importorskip("fastapi")
    srv = ServerProcess(["--max-total-tokens", str(TINY_POOL), "--context-length", "128",
                         "--max-concurrent-requests", str(TINY_MAX_CONCURRENT), "--chunked-prefill-size", "64"],
                        api_key=None, name="tiny").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def engine():
    """In-process Engine (background loop) on the default model, 512-token pool."""
    from sgl_lang.runtime.engine import Engine
    eng = Engine(max_total_tokens=512, context_length=256)
    yield eng
    eng.shutdown()
