"""OpenAI: runs programs against any OpenAI-compatible endpoint with the `openai` package.

Chat models get the completed turns as `messages` (a gen must sit inside an assistant turn);
completion models get the program text. Constraints: `json_schema` goes as `response_format` (chat)
or the `json_schema` extra field (completions); `regex` / `ebnf` and SGLang's sampling extras go as
extra body fields, understood by our server, SGLang and (partly) vLLM. A server that refuses a field
raises UnsupportedFeature naming it; a server that silently ignores a regex is caught by checking
the output. `select` is scored: see `openai_select.py` (and docs/server.md) for the methods.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..errors import BackendError, UnsupportedFeature
from ..ir import GenParams
from .base import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, StreamChunk
from .openai_select import check_output, score_chat, score_completion

# extras sent only when they differ from the default, so a plain OpenAI server never sees them
_EXTRA_DEFAULTS = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "ignore_eos": False}


# how servers word "I do not know / support this field" (ours, OpenAI, vLLM/pydantic)
_REFUSAL_WORDS = ("unknown field", "unrecognized", "not supported", "unsupported", "extra inputs",
                  "not permitted", "extra_forbidden")


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def reset(self) -> None:
        self.prompt_tokens = self.completion_tokens = 0


class OpenAI(Backend):
    def __init__(self, model_name: str, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 is_chat_model: Optional[bool] = None, chat_template=None, **client_kwargs: Any):
        try:
            import openai
        except ImportError:
            raise ImportError("sgl.OpenAI needs the openai package: pip install openai") from None
        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", **client_kwargs)
        self.model_name = model_name
        self.is_chat_model = (model_name != "gpt-3.5-turbo-instruct") if is_chat_model is None else is_chat_model
        from ..chat_template import get_chat_template, get_chat_template_by_model_path
        if isinstance(chat_template, str):
            chat_template = get_chat_template(chat_template)
        self.chat_template = chat_template or get_chat_template_by_model_path(model_name)
        self.token_usage = TokenUsage()
        self._usage_lock = threading.Lock()

    @property
    def endpoint(self) -> "OpenAI":
        return self

    def get_chat_template(self):
        return self.chat_template

    # ---- request building ----------------------------------------------------------------------
    def _kwargs(self, p: GenParams) -> tuple[dict, dict]:
        """(standard keyword arguments, extra_body) for one gen."""
        kw: dict[str, Any] = {"model": self.model_name}
        limit_name = "max_completion_tokens" if self.model_name.startswith(("o1", "o3")) else "max_tokens"
        if p.max_new_tokens is not None:
            kw[limit_name] = p.max_new_tokens
        for name in ("temperature", "top_p", "n", "seed", "frequency_penalty", "presence_penalty"):
            value = getattr(p, name)
            if value is not None:
                kw[name] = value
        if p.stop:
            kw["stop"] = list(p.stop)
        extra: dict[str, Any] = {}
        for name, default in _EXTRA_DEFAULTS.items():
            value = getattr(p, name)
            if value is not None and value != default:
                extra[name] = value
        if p.min_new_tokens:
            extra["min_tokens"] = p.min_new_tokens
        if p.stop_token_ids:
            extra["stop_token_ids"] = list(p.stop_token_ids)
        for name in ("regex", "ebnf"):
            if getattr(p, name):
                extra[name] = getattr(p, name)
        if p.json_schema:
            if self.is_chat_model:
                import json
                kw["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "output", "schema": json.loads(p.json_schema)}}
            else:
                extra["json_schema"] = p.json_schema
        if p.return_logprob:
            extra_lp = p.top_logprobs_num or 0
            if self.is_chat_model:
                kw["logprobs"], kw["top_logprobs"] = True, extra_lp
            else:
                kw["logprobs"] = extra_lp
        return kw, extra

    def _messages(self, req: GenerateRequest) -> list[dict]:
        if not req.is_in_assistant_turn:
            raise UnsupportedFeature(
                f"chat model {self.model_name!r}: gen/select must come right after an assistant turn begins "
                f"(inside sgl.assistant(...)); use a completion model (is_chat_model=False) for raw text")
        return [{"role": m.role, "content": m.content} for m in req.messages]

    def call(self, *, chat: bool, extra: dict, **kw: Any):
        """One API call; refusals of the extras we sent become UnsupportedFeature."""
        api = self.client.chat.completions if chat else self.client.completions
        try:
            out = api.create(extra_body=extra or None, **kw)
        except self._openai.BadRequestError as e:
            sent = list(extra) + [k for k in ("response_format", "logprobs", "top_logprobs", "echo") if k in kw]
            message = str(e)
            refused = [k for k in sent if k in message]
            if refused and any(w in message.lower() for w in _REFUSAL_WORDS):
                raise UnsupportedFeature(f"the server at {self.client.base_url} refused {refused}: {e}") from None
            raise BackendError(f"OpenAI API ({self.client.base_url}): {e}") from None
        except self._openai.OpenAIError as e:
            raise BackendError(f"OpenAI API ({self.client.base_url}): {e}") from None
        usage = getattr(out, "usage", None)
        if usage is not None:
            with self._usage_lock:
                self.token_usage.prompt_tokens += usage.prompt_tokens or 0
                self.token_usage.completion_tokens += usage.completion_tokens or 0
        return out

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, req: GenerateRequest) -> GenerateResult:
        kw, extra = self._kwargs(req.params)
        if self.is_chat_model:
            out = self.call(chat=True, extra=extra, messages=self._messages(req), **kw)
            texts = [c.message.content or "" for c in out.choices]
        else:
            out = self.call(chat=False, extra=extra, prompt=req.text, **kw)
            texts = [c.text for c in out.choices]
        for choice, text in zip(out.choices, texts):
            check_output(req.params, text, choice, self.client.base_url)
        meta = _meta(out)
        return GenerateResult(texts if len(texts) > 1 else texts[0], meta)

    def generate_stream(self, req: GenerateRequest) -> Iterator[StreamChunk]:
        kw, extra = self._kwargs(req.params)
        kw.update(stream=True, stream_options={"include_usage": True})
        if self.is_chat_model:
            stream = self.call(chat=True, extra=extra, messages=self._messages(req), **kw)
        else:
            stream = self.call(chat=False, extra=extra, prompt=req.text, **kw)
        text, last = "", None
        for chunk in stream:
            if not chunk.choices:
                if chunk.usage is not None:
                    yield StreamChunk("", {"prompt_tokens": chunk.usage.prompt_tokens,
                                           "completion_tokens": chunk.usage.completion_tokens})
                continue
            choice = chunk.choices[0]
            delta = (choice.delta.content if self.is_chat_model else choice.text) or ""
            text += delta
            last = choice
            meta = {"finish_reason": choice.finish_reason} if choice.finish_reason else {}
            if delta or meta:
                yield StreamChunk(delta, meta)
        if last is not None:
            check_output(req.params, text, last, self.client.base_url)

    def score(self, req: ScoreRequest) -> ScoreResult:
        if self.is_chat_model:
            prefix = self.chat_template.role_prefix_and_suffix["assistant"][0]
            in_turn = bool(prefix) and req.text.endswith(prefix)
            messages = self._messages(GenerateRequest(req.text, req.messages, GenParams(), in_turn))
            return score_chat(self, req, messages)
        return score_completion(self, req)


def _meta(out) -> dict:
    meta: dict[str, Any] = {"id": out.id, "finish_reason": out.choices[0].finish_reason if out.choices else None}
    if out.usage is not None:
        meta["prompt_tokens"] = out.usage.prompt_tokens
        meta["completion_tokens"] = out.usage.completion_tokens
        details = getattr(out.usage, "prompt_tokens_details", None)
        if details is not None and getattr(details, "cached_tokens", None) is not None:
            meta["cached_tokens"] = details.cached_tokens
    return meta
