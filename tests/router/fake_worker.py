"""A model-free stand-in for a server replica (same routes and shapes, canned answers) and a helper
that serves any ASGI app with uvicorn on a free loopback port in a background thread."""
import asyncio
import json
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


class Served:
    def __init__(self, app, port: int = 0):
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            assert self.thread.is_alive(), "server thread died"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def fake_worker(name: str) -> FastAPI:
    """/generate answers `{"text": name, "meta_info": {...}}`; streams 3 cumulative SSE events.
    `app.state.prompts` records each prompt it received; `app.state.healthy` drives /health."""
    app = FastAPI()
    app.state.prompts = []
    app.state.healthy = True
    app.state.busy_flush = False

    @app.get("/health")
    async def health():
        return JSONResponse({}, status_code=200 if app.state.healthy else 503)

    @app.post("/generate")
    async def generate(request: Request):
        body = await request.json()
        app.state.prompts.append(body.get("text"))
        if request.headers.get("authorization") != "Bearer k":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        if body.get("stream"):
            async def events():
                for i in range(3):
                    yield b"data: " + json.dumps({"text": name * (i + 1), "meta_info": {"i": i}}).encode() + b"\n\n"
                    await asyncio.sleep(0.01)
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"text": name, "meta_info": {"prompt_tokens": 1}})

    @app.get("/v1/models")
    async def models():
        return JSONResponse({"object": "list", "data": [{"id": "fake", "owned_by": name}]})

    @app.get("/get_server_info")
    async def server_info():
        return JSONResponse({"served_model_name": "fake", "internal_states": [
            {"prompt_tokens_total": 100, "cached_prompt_tokens_total": 40 if name == "a" else 60}]})

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush():
        if app.state.busy_flush:
            return JSONResponse({"error": {"message": "busy"}}, status_code=400)
        return PlainTextResponse("Cache flushed.\n")

    return app
