"""create_app: the FastAPI application around one Engine.

Request path:  ServerGuard (size limit, API key, concurrency cap, per-route counts)
            -> route (native_routes / openai_routes) -> EngineClient -> Engine (one loop that
               batches every client's requests together)
Every error leaves as `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_error import ApiError, from_validation_error
from .args import ServerArgs
from .native_routes import router as native_router
from .openai_routes import router as openai_router
from .openapi_schema import install_openapi
from .server_state import ServerState

logger = logging.getLogger("sgl_lang.server")

_GENERATION_ROUTES = ("/generate", "/v1/completions", "/v1/chat/completions")
_OPEN_ROUTES = ("/health",)


class ServerGuard:
    """Pure ASGI middleware (it keeps streaming and disconnect detection intact, which
    BaseHTTPMiddleware does not)."""

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        args = self.state.args
        status_box = [0]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            error = self._check(scope, path, args)
            if error is not None:
                return await error.response()(scope, receive, send_counted)
            limit = args.max_request_bytes
            received = [0]

            async def receive_limited():
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > limit:  # a chunked body with no Content-Length
                        raise _too_large(limit)
                return message

            is_generation = path in _GENERATION_ROUTES
            if is_generation and self.in_flight >= args.max_concurrent_requests:
                err = ApiError(503, f"server busy: {self.in_flight} requests in flight (max_concurrent_requests="
                                    f"{args.max_concurrent_requests}); retry later", type="server_error")
                return await err.response()(scope, receive, send_counted)
            self.in_flight += is_generation
            try:
                await self.app(scope, receive_limited, send_counted)
            except asyncio.CancelledError:
                if not self.state.is_shutting_down:
                    raise
                # graceful shutdown ran out of time: the stream was cut (its engine request aborted)
                logger.warning("in-flight request to %s cut by shutdown", path)
            finally:
                self.in_flight -= is_generation
        finally:
            self.state.metrics.count_request(path if _is_known(path) else "other", status_box[0])

    def _check(self, scope, path: str, args: ServerArgs):
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > args.max_request_bytes:
            return _too_large(args.max_request_bytes)
        if args.api_key and path not in _OPEN_ROUTES:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            token = auth[7:] if auth.lower().startswith("bearer ") else headers.get(b"x-api-key", b"").decode("latin-1")
            if not hmac.compare_digest(token.encode(), args.api_key.encode()):
                return ApiError(401, "invalid or missing API key: send `Authorization: Bearer <key>`",
                                type="authentication_error", code="invalid_api_key")
        return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds max_request_bytes={limit}", code="request_too_large")


def _is_known(path: str) -> bool:
    return path in _GENERATION_ROUTES or path.startswith(("/v1/models", "/health", "/get_", "/model_info",
                                                          "/server_info", "/flush_cache", "/metrics",
                                                          "/openapi.json"))


def create_app(engine, args: ServerArgs = ServerArgs()) -> FastAPI:
    """The ASGI app serving `engine`. The caller owns the engine (and shuts it down)."""
    app = FastAPI(title="sgl-lang server", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    state = ServerState(engine, args)
    app.state.server = state
    app.add_middleware(ServerGuard, state=state)
    app.include_router(native_router)
    app.include_router(openai_router)
    install_openapi(app)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        return from_validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return ApiError(exc.status_code, message, code=exc.status_code).response()

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return ApiError(500, f"internal server error: {type(exc).__name__}: {exc}", type="server_error").response()

    return app
