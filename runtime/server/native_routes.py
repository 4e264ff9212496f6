"""SGLang's native routes: /generate (batch, SSE stream, logprobs), /health, /health_generate,
/get_model_info (/model_info), /get_server_info (/server_info), /flush_cache, /metrics."""
from __future__ import annotations

import dataclasses
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .api_error import ApiError, expect_object, read_json
from .engine_client import output_error
from .native_protocol import parse_generate, strip_logprob_text
from .server_state import server_state
from .sse import DONE, merge_streams, sse_event, sse_response

router = APIRouter()


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(request: Request):
    state = server_state(request)
    req, items = parse_generate(expect_object(await read_json(request)))
    if req.stream:
        streams = await state.client.open_streams(items.prompts, items.sampling, **items.logprob_kwargs)
        return sse_response(_stream_body(streams, items, req.return_text_in_logprobs))
    outs = await state.client.generate(items.prompts, items.sampling, **items.logprob_kwargs)
    if not req.return_text_in_logprobs:
        for out in outs:
            strip_logprob_text(out["meta_info"])
    return JSONResponse(outs if items.is_batch else outs[0])


async def _stream_body(streams, items, with_text: bool):
    """Cumulative events (`text` is everything so far), each tagged with `index` in a batch."""
    async for i, out in merge_streams(streams):
        err = output_error(out, items.sampling[i])
        if err is not None:
            yield sse_event(err.body())
            continue
        if not with_text:
            strip_logprob_text(out["meta_info"])
        if items.is_batch:
            out["index"] = i
        yield sse_event(out)
    yield DONE


@router.get("/health")
async def health():
    return JSONResponse({})


@router.get("/health_generate")
async def health_generate(request: Request):
    state = server_state(request)
    try:
        await state.client.generate([[0]], [{"max_new_tokens": 1, "temperature": 0}])
    except ApiError as e:
        raise ApiError(503, f"health check generation failed: {e.message}", type="server_error") from None
    return JSONResponse({})


@router.get("/get_model_info")
@router.get("/model_info")
async def model_info(request: Request):
    state = server_state(request)
    eng = state.engine
    tok = eng.tokenizer
    return JSONResponse({
        "model_path": state.model_path,
        "served_model_name": state.served_model_name,
        "tokenizer_path": eng.config.tokenizer_path or eng.model_dir,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "model_type": getattr(eng.loaded.hf_config, "model_type", None),
        "architectures": getattr(eng.loaded.hf_config, "architectures", None),
        "max_context_length": eng.max_context_len,
        "vocab_size": eng.loaded.vocab_size,
        # the tokenizer's Jinja chat template, so clients can render roles exactly as the model expects
        "chat_template": getattr(tok, "chat_template", None),
        "bos_token": getattr(tok, "bos_token", None),
        "eos_token": getattr(tok, "eos_token", None),
    })


@router.get("/get_server_info")
@router.get("/server_info")
async def server_info(request: Request):
    state = server_state(request)
    info = {k: v for k, v in dataclasses.asdict(state.engine.config).items() if k != "extra"}
    server = dataclasses.asdict(state.args)
    server["api_key"] = None if state.args.api_key is None else "<set>"
    info.update(server)
    info.update({"model_dir": state.engine.model_dir, "served_model_name": state.served_model_name,
                 "internal_states": [await state.client.stats()], "version": _version(),
                 "startup_time": state.started_at, "uptime_s": time.time() - state.started_at})
    return JSONResponse(info)


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request):
    if await server_state(request).client.flush_cache():
        return PlainTextResponse("Cache flushed.\n")
    raise ApiError(400, "Cache not flushed: requests are running; retry when the server is idle.",
                   code="cache_busy")


@router.get("/metrics")
async def metrics(request: Request):
    state = server_state(request)
    text = state.metrics.render(await state.client.stats(), state.served_model_name)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sgl-lang")
    except PackageNotFoundError:
        return "unknown"
