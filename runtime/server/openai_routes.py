"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions (both with SSE streaming, n,
logprobs, usage) and /v1/models."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from . import openai_responses as R
from .api_error import ApiError, bad_request, expect_object, from_validation_error, read_json
from .engine_client import output_error
from .openai_protocol import RENAMES, ChatCompletionRequest, CompletionRequest
from .server_state import ServerState, server_state
from .sse import DONE, merge_streams, sse_event, sse_response

router = APIRouter()


async def _parse(request: Request, model_cls):
    body = expect_object(await read_json(request))
    try:
        req = model_cls.model_validate(body)
    except ValidationError as e:
        raise from_validation_error(e) from None
    server_state(request).check_model(req.model)
    return req


def _model_card(state: ServerState) -> dict:
    return {"id": state.served_model_name, "object": "model", "created": int(state.started_at),
            "owned_by": "sgl-lang", "root": state.model_path, "parent": None,
            "max_model_len": state.engine.max_context_len}


@router.get("/v1/models")
async def list_models(request: Request):
    return JSONResponse({"object": "list", "data": [_model_card(server_state(request))]})


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request):
    state = server_state(request)
    state.check_model(model)
    return JSONResponse(_model_card(state))


# ---- /v1/completions ------------------------------------------------------------------------------

@router.post("/v1/completions")
async def completions(request: Request):
    state = server_state(request)
    req: CompletionRequest = await _parse(request, CompletionRequest)
    sp = req.sampling()
    prompts = [p for p in req.prompts() for _ in range(req.n)]
    if any(isinstance(p, str) and p == "" for p in prompts):
        raise bad_request("prompt: must not be empty", param="prompt")
    vocab_size = state.engine.loaded.vocab_size
    for p in prompts:  # checked before the echo text is decoded from them
        bad = [t for t in p if not 0 <= t < vocab_size] if isinstance(p, list) else []
        if bad:
            raise bad_request(f"prompt: token ids must be in [0, {vocab_size}), got {bad[:5]}", param="prompt")
    kw: dict[str, Any] = {}
    if req.logprobs is not None or req.echo:
        kw = {"return_logprob": req.logprobs is not None, "top_logprobs_num": req.logprobs or 0}
        if req.echo and req.logprobs is not None:
            kw["logprob_start_len"] = 0
    echo_texts = [p if isinstance(p, str) else state.engine.tokenizer.decode(p) for p in prompts]
    with_lp = req.logprobs is not None
    rid, created, model = R.new_id("cmpl"), R.now(), state.served_model_name
    if req.stream:
        streams = await state.client.open_streams(prompts, [sp] * len(prompts), renames=RENAMES, error_prefix="", **kw)
        return sse_response(_completion_stream(streams, req, sp, echo_texts, rid, created, model))
    outs = await state.client.generate(prompts, [sp] * len(prompts), renames=RENAMES, error_prefix="", **kw)
    choices = [R.completion_choice(i, o, echo_texts[i], with_lp, req.echo) for i, o in enumerate(outs)]
    return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": model,
                         "choices": choices, "usage": R.usage(outs, req.n)})


async def _completion_stream(streams, req: CompletionRequest, sp, echo_texts, rid, created, model):
    tracker = R.StreamTracker(len(streams))
    finals: dict[int, dict] = {}
    with_lp = req.logprobs is not None

    def chunk(choices: list) -> bytes:
        return sse_event({"id": rid, "object": "text_completion", "created": created, "model": model,
                          "choices": choices})

    async for i, out in merge_streams(streams):
        err = output_error(out, sp, prefix="")
        if err is not None:
            yield sse_event(err.body())
            continue
        text, entries, tops = tracker.delta(i, out)
        meta = out["meta_info"]
        logprobs = R.completion_logprobs(entries, tops) if with_lp else None
        if req.echo and not tracker.started[i]:
            text = echo_texts[i] + text
            if with_lp:
                inp = R.completion_logprobs(meta.get("input_token_logprobs", []), meta.get("input_top_logprobs"))
                logprobs = R.merge_completion_logprobs(inp, logprobs)
        tracker.started[i] = True
        reason, matched = R.finish_reason(meta)
        if text or reason is not None or logprobs:
            yield chunk([{"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason,
                          "matched_stop": matched}])
        if reason is not None:
            finals[i] = out
    if req.include_usage and len(finals) == len(streams):
        outs = [finals[i] for i in range(len(streams))]
        yield sse_event({"id": rid, "object": "text_completion", "created": created, "model": model,
                         "choices": [], "usage": R.usage(outs, req.n)})
    yield DONE


# ---- /v1/chat/completions -------------------------------------------------------------------------

def _render_chat(state: ServerState, req: ChatCompletionRequest) -> list[int]:
    """Messages -> prompt token ids through the tokenizer's chat template."""
    messages = req.message_dicts()
    tok = state.engine.tokenizer
    if not getattr(tok, "chat_template", None):
        raise ApiError(400, "messages: this model's tokenizer has no chat template; use /v1/completions",
                       param="messages")
    is_continue = req.continue_final_message and messages[-1]["role"] == "assistant"
    from jinja2 import TemplateError
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=not is_continue,
                                       continue_final_message=is_continue, **(req.chat_template_kwargs or {}))
    except (TemplateError, ValueError, TypeError) as e:  # the conversation's shape (e.g. role order)
        raise bad_request(f"messages: the chat template refused this conversation: {e}", param="messages") from None
    return tok.encode(text)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state = server_state(request)
    req: ChatCompletionRequest = await _parse(request, ChatCompletionRequest)
    sp = req.sampling()
    ids = _render_chat(state, req)
    if "max_new_tokens" not in sp:  # OpenAI's default: up to the end of the context window
        sp["max_new_tokens"] = max(1, state.engine.max_context_len - len(ids) - 1)
    prompts = [ids] * req.n
    kw: dict[str, Any] = {}
    if req.logprobs:
        kw = {"return_logprob": True, "top_logprobs_num": req.top_logprobs or 0}
    rid, created, model = R.new_id("chatcmpl"), R.now(), state.served_model_name
    if req.stream:
        streams = await state.client.open_streams(prompts, [sp] * req.n, renames=RENAMES, error_prefix="", **kw)
        return sse_response(_chat_stream(streams, req, sp, rid, created, model))
    outs = await state.client.generate(prompts, [sp] * req.n, renames=RENAMES, error_prefix="", **kw)
    choices = [R.chat_choice(i, o, req.logprobs) for i, o in enumerate(outs)]
    return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": model,
                         "choices": choices, "usage": R.usage(outs, req.n)})


async def _chat_stream(streams, req: ChatCompletionRequest, sp, rid, created, model):
    tracker = R.StreamTracker(len(streams))
    finals: dict[int, dict] = {}

    def chunk(choice: dict) -> bytes:
        return sse_event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "choices": [choice]})

    async for i, out in merge_streams(streams):
        err = output_error(out, sp, prefix="")
        if err is not None:
            yield sse_event(err.body())
            continue
        if not tracker.started[i]:
            tracker.started[i] = True
            yield chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None})
        text, entries, tops = tracker.delta(i, out)
        reason, matched = R.finish_reason(out["meta_info"])
        logprobs = R.chat_logprobs(entries, tops) if req.logprobs and entries else None
        if text or reason is not None or logprobs:
            yield chunk({"index": i, "delta": {"content": text} if text else {}, "logprobs": logprobs,
                         "finish_reason": reason, "matched_stop": matched})
        if reason is not None:
            finals[i] = out
    if req.include_usage and len(finals) == len(streams):
        outs = [finals[i] for i in range(len(streams))]
        yield sse_event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": R.usage(outs, req.n)})
    yield DONE
