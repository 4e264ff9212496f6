"""OpenAI request bodies (completions, chat completions) as pydantic models, with SGLang's extra
fields (top_k, min_p, regex, ebnf, json_schema, ...), and their translation into the engine's
sampling-params dict. Unknown fields are refused with a 400 naming them."""
from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from .api_error import bad_request

MAX_N = 64

# engine message names -> the OpenAI names a client sent
RENAMES = {"sampling_params.max_new_tokens": "max_tokens", "sampling_params.min_new_tokens": "min_tokens",
           "sampling_params.": ""}


Number = Union[StrictInt, StrictFloat]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[dict] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None


class StreamOptions(_Strict):
    include_usage: Optional[bool] = False
    continuous_usage_stats: Optional[bool] = False


class _Sampling(_Strict):
    """Fields shared by both routes."""
    model: Optional[StrictStr] = None
    n: StrictInt = 1
    stop: Optional[Union[StrictStr, list[StrictStr]]] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[Number] = None
    top_p: Optional[Number] = None
    seed: Optional[StrictInt] = None
    frequency_penalty: Optional[Number] = None
    presence_penalty: Optional[Number] = None
    logit_bias: Optional[dict[str, float]] = None
    user: Optional[str] = None
    response_format: Optional[ResponseFormat] = None
    # SGLang extras
    top_k: Optional[StrictInt] = None
    min_p: Optional[Number] = None
    min_tokens: Optional[StrictInt] = None
    repetition_penalty: Optional[Number] = None
    stop_token_ids: Optional[list[StrictInt]] = None
    ignore_eos: Optional[StrictBool] = None
    skip_special_tokens: Optional[StrictBool] = None
    no_stop_trim: Optional[StrictBool] = None
    regex: Optional[StrictStr] = None
    ebnf: Optional[StrictStr] = None
    rid: Optional[str] = None

    def base_sampling(self, max_new_tokens: Optional[int]) -> dict:
        """The engine sampling dict for one sample of this request (validated by the engine)."""
        if not 1 <= self.n <= MAX_N:
            raise bad_request(f"n: must be in [1, {MAX_N}], got {self.n}", param="n")
        if self.logit_bias:
            raise bad_request("logit_bias: not supported by this server", param="logit_bias")
        sp: dict[str, Any] = {}
        for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "top_k",
                     "min_p", "repetition_penalty", "ignore_eos", "skip_special_tokens", "no_stop_trim",
                     "regex", "ebnf"):
            value = getattr(self, name)
            if value is not None:
                sp[name] = value
        if self.min_tokens is not None:
            sp["min_new_tokens"] = self.min_tokens
        if max_new_tokens is not None:
            sp["max_new_tokens"] = max_new_tokens
        if self.stop is not None:
            sp["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.stop_token_ids is not None:
            sp["stop_token_ids"] = list(self.stop_token_ids)
        schema = self.response_format_schema()
        if schema is not None:
            sp["json_schema"] = schema
        return sp

    def response_format_schema(self) -> Optional[str]:
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return json.dumps({"type": "object"})
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise bad_request("response_format.json_schema.schema: required when type is json_schema",
                              param="response_format.json_schema.schema")
        return json.dumps(fmt.json_schema.schema_)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    max_tokens: Optional[StrictInt] = 16
    logprobs: Optional[StrictInt] = None
    echo: StrictBool = False
    suffix: Optional[str] = None
    best_of: Optional[StrictInt] = None
    json_schema: Optional[StrictStr] = None

    def prompts(self) -> list:
        """Each prompt: a str or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("prompt: must not be empty", param="prompt")
        if isinstance(p[0], int):
            return [p]
        return list(p)

    def sampling(self) -> dict:
        if self.suffix:
            raise bad_request("suffix: not supported by this server", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request("best_of: only best_of == n is supported", param="best_of")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad_request(f"logprobs: must be in [0, 20], got {self.logprobs}", param="logprobs")
        sp = self.base_sampling(self.max_tokens)
        if self.json_schema:
            if "json_schema" in sp:
                raise bad_request("json_schema: give either json_schema or response_format", param="json_schema")
            sp["json_schema"] = self.json_schema
        return sp


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ... are accepted and unused
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[StrictStr, list[ContentPart]]] = None

    def text(self, where: str) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise bad_request(f"{where}.content[{j}].type: only text parts are supported, got {part.type!r}",
                                  param=f"{where}.content")
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_tokens: Optional[StrictInt] = None
    max_completion_tokens: Optional[StrictInt] = None
    logprobs: StrictBool = False
    top_logprobs: Optional[StrictInt] = None
    tools: Optional[list] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    continue_final_message: StrictBool = False
    chat_template_kwargs: Optional[dict] = None

    def sampling(self) -> dict:
        if self.tools:
            raise bad_request("tools: tool calling is not supported by this server", param="tools")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= 20:
            raise bad_request(f"top_logprobs: must be in [0, 20], got {self.top_logprobs}", param="top_logprobs")
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return self.base_sampling(limit)

    def message_dicts(self) -> list[dict]:
        if not self.messages:
            raise bad_request("messages: must not be empty", param="messages")
        out = []
        for i, m in enumerate(self.messages):
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text(f"messages[{i}]")})
        return out
