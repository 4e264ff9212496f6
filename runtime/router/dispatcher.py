"""Dispatcher: forwards one HTTP request to the worker the policy picks, and relays the answer.

    pick worker (policy over healthy workers) -> in_flight += 1 -> forward -> relay -> in_flight -= 1
                 ^                                                    |
                 └──── transport error or 502/503/504: mark, retry ───┘   (max_retries times)

Streams are relayed byte for byte (SSE frames pass through unchanged). The first chunk is read
before the client gets its response headers, so a worker that fails before producing anything is
retried elsewhere; one that fails mid-stream ends the stream with an SSE error event."""
from __future__ import annotations

import json
import logging
from collections import Counter
from typing import AsyncIterator, Optional

import httpx
from fastapi.responses import Response, StreamingResponse

from ..server.api_error import ApiError
from .policy import Policy
from .prefix_tree import Key
from .worker import NoHealthyWorker, Worker, WorkerSet

logger = logging.getLogger("sgl_lang.router")

_RETRY_STATUSES = (502, 503, 504)
_FORWARDED_HEADERS = ("authorization", "x-api-key", "content-type", "accept")


def forwarded_headers(headers) -> dict:
    return {k: v for k, v in headers.items() if k.lower() in _FORWARDED_HEADERS}


def relay(resp: httpx.Response) -> Response:
    return Response(resp.content, status_code=resp.status_code,
                    media_type=resp.headers.get("content-type"))


class Dispatcher:
    def __init__(self, workers: WorkerSet, policy: Policy, client: httpx.AsyncClient, max_retries: int):
        self.workers = workers
        self.policy = policy
        self.client = client
        self.max_retries = max_retries
        self.decisions: Counter = Counter()  # reason -> count

    def pick(self, keys: list[Key], exclude: set[int]) -> Worker:
        """The worker for this request (raises NoHealthyWorker); records the decision."""
        decision = self.policy.choose(keys, self.workers.loads(exclude))
        self.policy.on_routed(keys, decision.worker)
        self.decisions[decision.reason] += 1
        worker = self.workers[decision.worker]
        worker.num_requests += 1
        return worker

    async def forward(self, method: str, path: str, body: bytes, headers: dict,
                      keys: list[Key], stream: bool) -> Response:
        """The worker's answer, relayed. Raises ApiError(503) when no worker could answer."""
        tried: set[int] = set()
        errors: list[str] = []
        busy: Optional[Response] = None  # the last 502/503/504, passed on if nothing better comes
        for _ in range(1 + self.max_retries):
            try:
                worker = self.pick(keys, tried)
            except NoHealthyWorker as e:
                errors.append(str(e))
                break
            tried.add(worker.index)
            call = self._open_stream if stream else self._call
            try:
                response = await call(worker, method, path, body, headers)
            except httpx.TransportError as e:
                message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                self.workers.mark_failed(worker, message)
                errors.append(f"{worker.url}: {message}")
                continue
            if response.status_code in _RETRY_STATUSES:
                errors.append(f"{worker.url}: HTTP {response.status_code}")
                busy = response
                continue
            return response
        if busy is not None:
            return busy
        raise ApiError(503, "no worker could serve the request: " + " | ".join(errors), type="server_error",
                       code="no_healthy_worker")

    async def _call(self, worker: Worker, method: str, path: str, body: bytes, headers: dict) -> Response:
        worker.in_flight += 1
        try:
            return relay(await self.client.request(method, worker.url + path, content=body, headers=headers))
        finally:
            worker.in_flight -= 1

    async def _open_stream(self, worker: Worker, method: str, path: str, body: bytes, headers: dict) -> Response:
        """A StreamingResponse once the worker produced its first chunk; a non-200 answer is read
        in full and relayed as is. Transport errors before the first chunk propagate (retry)."""
        worker.in_flight += 1
        resp = None
        try:
            request = self.client.build_request(method, worker.url + path, content=body, headers=headers)
            resp = await self.client.send(request, stream=True)
            if resp.status_code == 200:
                chunks = resp.aiter_raw()
                first = await anext(chunks, b"")
                # from here the body generator owns the in_flight slot and the upstream response
                return StreamingResponse(self._relay_stream(worker, resp, chunks, first), status_code=200,
                                         media_type=resp.headers.get("content-type"))
            await resp.aread()
        except BaseException:
            worker.in_flight -= 1
            if resp is not None:
                await resp.aclose()
            raise
        worker.in_flight -= 1
        await resp.aclose()
        return relay(resp)

    async def _relay_stream(self, worker: Worker, resp: httpx.Response, chunks: AsyncIterator[bytes],
                            first: bytes) -> AsyncIterator[bytes]:
        """The body generator; it owns the worker's in_flight slot and the upstream response."""
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except httpx.TransportError as e:
            message = f"{type(e).__name__}: {e}"
            self.workers.mark_failed(worker, message)
            err = ApiError(502, f"worker {worker.url} failed mid-stream: {message}", type="server_error")
            yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:  # also when the client disconnects: closing the upstream aborts the worker's request
            worker.in_flight -= 1
            await resp.aclose()
