"""Worker: one replica behind the router (its URL, health and load), and WorkerSet, which owns
them all and runs the health checks.

A worker is marked unhealthy when a request to it fails at the transport level or its /health
check fails; unhealthy workers get no requests until a later health check passes again, at which
point the policy is told to forget its cache (it probably restarted)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import httpx

logger = logging.getLogger("sgl_lang.router")


@dataclass
class Worker:
    index: int
    url: str
    is_healthy: bool = True
    in_flight: int = 0
    num_requests: int = 0
    num_failures: int = 0
    last_error: Optional[str] = None
    unhealthy_since: Optional[float] = None

    def snapshot(self) -> dict:
        return {"index": self.index, "url": self.url, "is_healthy": self.is_healthy,
                "in_flight": self.in_flight, "num_requests": self.num_requests,
                "num_failures": self.num_failures, "last_error": self.last_error}


class NoHealthyWorker(RuntimeError):
    """Every worker is unhealthy (or was already tried for this request)."""


class WorkerSet:
    def __init__(self, urls, on_recovered: Callable[[int], None] = lambda i: None):
        self.workers = [Worker(i, url.rstrip("/")) for i, url in enumerate(urls)]
        self.on_recovered = on_recovered

    def __iter__(self):
        return iter(self.workers)

    def __getitem__(self, index: int) -> Worker:
        return self.workers[index]

    def healthy(self) -> list[Worker]:
        return [w for w in self.workers if w.is_healthy]

    def loads(self, exclude=()) -> dict[int, int]:
        """Healthy workers not in `exclude` -> requests in flight. Raises NoHealthyWorker if none."""
        loads = {w.index: w.in_flight for w in self.workers if w.is_healthy and w.index not in exclude}
        if not loads:
            states = "; ".join(f"{w.url}: {'tried' if w.index in exclude else (w.last_error or 'unhealthy')}"
                               for w in self.workers)
            raise NoHealthyWorker(f"no healthy worker available ({states})")
        return loads

    def mark_failed(self, worker: Worker, error: str) -> None:
        worker.num_failures += 1
        worker.last_error = error
        if worker.is_healthy:
            logger.warning("worker %s marked unhealthy: %s", worker.url, error)
            worker.is_healthy = False
            worker.unhealthy_since = time.time()

    def mark_healthy(self, worker: Worker) -> None:
        if not worker.is_healthy:
            logger.warning("worker %s is healthy again after %.1fs", worker.url,
                           time.time() - (worker.unhealthy_since or time.time()))
            worker.is_healthy = True
            worker.unhealthy_since = None
            self.on_recovered(worker.index)

    async def check_all(self, client, timeout: float) -> None:
        """GET /health on every worker at once and update their states."""
        async def check(worker: Worker) -> None:
            try:
                resp = await client.get(worker.url + "/health", timeout=timeout)
            except httpx.HTTPError as e:  # refused, reset, timed out: unhealthy, with the reason kept
                self.mark_failed(worker, f"health check failed: {type(e).__name__}: {e}")
                return
            if resp.status_code == 200:
                self.mark_healthy(worker)
            else:
                self.mark_failed(worker, f"health check returned HTTP {resp.status_code}")

        await asyncio.gather(*(check(w) for w in self.workers))

    async def run_health_checks(self, client, interval: float, timeout: float) -> None:
        """Forever: check every `interval` seconds (cancelled when the router stops)."""
        while True:
            await self.check_all(client, timeout)
            await asyncio.sleep(interval)
