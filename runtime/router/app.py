"""create_router_app: the router's HTTP front.

Generation routes (/generate, /v1/completions, /v1/chat/completions) go to the worker the policy
picks; /flush_cache and /get_server_info fan out to every healthy worker; /health answers for the
router itself (200 while any worker is healthy); every other route is forwarded to the
least-loaded healthy worker as is (/v1/models, /get_model_info, /health_generate, ...)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Optional

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ..server.api_error import ApiError
from .config import RouterConfig
from .dispatcher import Dispatcher, forwarded_headers
from .policy import make_policy
from .request_key import GENERATE_ROUTES, routing_keys
from .worker import WorkerSet

logger = logging.getLogger("sgl_lang.router")


class Router:
    """Everything one router process holds: workers, policy, HTTP client, dispatcher."""

    def __init__(self, config: RouterConfig):
        self.config = config
        self.policy = make_policy(config)
        self.workers = WorkerSet(config.worker_urls, on_recovered=self.policy.forget)
        timeout = httpx.Timeout(config.request_timeout_s, connect=config.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits)
        self.dispatcher = Dispatcher(self.workers, self.policy, self.client, config.max_retries)

    def state(self) -> dict:
        return {"policy": self.policy.name, "workers": [w.snapshot() for w in self.workers],
                "decisions": dict(self.dispatcher.decisions)}


def create_router_app(config: RouterConfig) -> FastAPI:
    router = Router(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await router.workers.check_all(router.client, config.health_check_timeout_s)
        task = asyncio.create_task(router.workers.run_health_checks(
            router.client, config.health_check_interval_s, config.health_check_timeout_s))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await router.client.aclose()

    app = FastAPI(title="sgl-lang router", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.router = router

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.get("/health")
    async def health():
        if router.workers.healthy():
            return JSONResponse({})
        raise ApiError(503, "no healthy worker: " + "; ".join(f"{w.url}: {w.last_error}" for w in router.workers),
                       type="server_error", code="no_healthy_worker")

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache(request: Request):
        results = await _fan_out(router, request.method, "/flush_cache", forwarded_headers(request.headers))
        failed = [(w, r) for w, r in results if not isinstance(r, httpx.Response) or r.status_code != 200]
        for w, r in results:
            if (w, r) not in failed:
                router.policy.forget(w.index)
        if failed:
            details = "; ".join(f"{w.url}: {_describe(r)}" for w, r in failed)
            code = 400 if all(isinstance(r, httpx.Response) and r.status_code == 400 for _, r in failed) else 503
            raise ApiError(code, f"Cache not flushed on {len(failed)} of {len(results)} workers: {details}",
                           code="cache_busy" if code == 400 else "worker_error", type="server_error")
        return PlainTextResponse("Cache flushed.\n")

    @app.get("/get_server_info")
    @app.get("/server_info")
    async def server_info(request: Request):
        results = await _fan_out(router, "GET", "/get_server_info", forwarded_headers(request.headers))
        infos = [(w, r.json()) for w, r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        if not infos:
            failures = "; ".join(f"{w.url}: {_describe(r)}" for w, r in results) or "no healthy worker"
            raise ApiError(503, f"no worker answered /get_server_info: {failures}", type="server_error")
        info = dict(infos[0][1])
        info["internal_states"] = [dict(st, worker_url=w.url) for w, i in infos for st in i.get("internal_states", [])]
        states = info["internal_states"]
        prompt = sum(st.get("prompt_tokens_total", 0) for st in states)
        cached = sum(st.get("cached_prompt_tokens_total", 0) for st in states)
        info["router"] = dict(router.state(), cache_hit_rate=cached / max(1, prompt),
                              prompt_tokens_total=prompt, cached_prompt_tokens_total=cached)
        info["dp_size"] = len(router.workers.workers)
        return JSONResponse(info)

    @app.get("/router_info")
    async def router_info():
        return JSONResponse(router.state())

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def proxy(path: str, request: Request):
        path = "/" + path
        body = await request.body()
        payload = _json_or_none(body) if path in GENERATE_ROUTES else None
        keys = routing_keys(path, payload)
        is_stream = bool(payload.get("stream")) if isinstance(payload, dict) else False
        if request.url.query:
            path = f"{path}?{request.url.query}"
        return await router.dispatcher.forward(request.method, path, body, forwarded_headers(request.headers),
                                               keys, is_stream)

    return app


async def _fan_out(router: Router, method: str, path: str, headers: dict) -> list:
    """[(worker, httpx.Response | exception)] from every healthy worker, asked at once."""
    workers = router.workers.healthy()

    async def ask(w):
        try:
            return await router.client.request(method, w.url + path, headers=headers)
        except httpx.TransportError as e:
            router.workers.mark_failed(w, f"{type(e).__name__}: {e}")
            return e

    return list(zip(workers, await asyncio.gather(*(ask(w) for w in workers))))


def _describe(result) -> str:
    if isinstance(result, httpx.Response):
        return f"HTTP {result.status_code} {result.text.strip()[:200]}"
    return f"{type(result).__name__}: {result}"


def _json_or_none(body: bytes) -> Optional[dict]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # the worker will answer with the proper 400
        return None
    return value if isinstance(value, dict) else None
