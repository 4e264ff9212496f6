"""Graceful shutdown: on SIGTERM / SIGINT the server stops accepting, lets short in-flight requests
finish, cuts the long ones when --graceful-shutdown-timeout runs out, and exits with code 0."""
import signal
import threading
import time

import httpx
import pytest

from reliability_helpers import ServerProcess

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown(sig):
    srv = ServerProcess(["--graceful-shutdown-timeout", "3", "--context-length", "512"], name="shutdown").start()
    results: dict = {}
    try:
        def short():
            with srv.client(60) as c:
                results["short"] = c.post("/generate", json={"text": "Hi", "sampling_params": {
                    "max_new_tokens": 8, "ignore_eos": True}}).status_code

        def long_stream():
            events = 0
            try:
                with srv.client(60) as c:
                    with c.stream("POST", "/generate", json={"text": "Go:", "stream": True, "sampling_params": {
                            "max_new_tokens": 500, "ignore_eos": True}}) as resp:
                        for line in resp.iter_lines():
                            events += line.startswith("data: {")
                results["long"] = ("ended", events)
            except httpx.HTTPError as e:  # the server cut the stream at the deadline
                results["long"] = (type(e).__name__, events)

        threads = [threading.Thread(target=long_stream), threading.Thread(target=short)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both are in flight
        srv.signal(sig)
        code = srv.wait(timeout=60)
        for t in threads:
            t.join(30)
    finally:
        srv.kill()
    log = srv.log()
    assert code == 0, log[-3000:]
    assert results["short"] == 200  # finished inside the grace period
    assert results["long"][1] >= 1 and results["long"][1] < 500  # started, then cut at the deadline
    assert "Traceback" not in log, log[-3000:]
    with pytest.raises(httpx.TransportError):  # nothing listens any more
        httpx.get(srv.url + "/health", timeout=2)
