"""RuntimeEndpoint: drives a server through SGLang's native HTTP API (`/generate`), so it works
against our server and against SGLang's own. Standard library only (urllib).

    generate      POST /generate {text, sampling_params, return_logprob...}
    stream        the same with "stream": true; SSE events with cumulative text (incremental
                  servers are accepted too: see `_delta`)
    select        1) POST /generate {text: context, max_new_tokens: 0}   -> caches the context,
                     reads prompt_tokens
                  2) ONE batched POST /generate {text: [context + choice...], max_new_tokens: 0,
                     return_logprob, return_text_in_logprobs, logprob_start_len: prompt_tokens - 2}
                  3) only for unconditional_likelihood_normalized: POST /generate {input_ids:
                     [each choice's scored tokens]} for their context-free logprobs
    fork          cache_prefix(text) = POST /generate {text, max_new_tokens: 0}
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator, Optional

from ..errors import BackendError
from .base import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, StreamChunk
from .local import logprob_kwargs, sampling_dict


class RuntimeEndpoint(Backend):
    def __init__(self, base_url: str, api_key: Optional[str] = None, chat_template_name: Optional[str] = None,
                 timeout: Optional[float] = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.model_info: dict = self._request("/get_model_info")
        self._chat_template_name = chat_template_name
        self._chat_template = None

    # SGLang's Runtime exposes `.endpoint`; the interpreter unwraps it
    @property
    def endpoint(self) -> "RuntimeEndpoint":
        return self

    def get_model_name(self) -> str:
        return self.model_info.get("model_path") or self.model_info.get("served_model_name") or "default"

    def get_chat_template(self):
        if self._chat_template is None:
            from ..chat_template import get_chat_template, get_chat_template_by_model_path
            from .jinja_template import template_from_model_info
            if self._chat_template_name is not None:
                self._chat_template = get_chat_template(self._chat_template_name)
            else:
                self._chat_template = (template_from_model_info(self.model_info)
                                       or get_chat_template_by_model_path(self.get_model_name()))
        return self._chat_template

    # ---- HTTP --------------------------------------------------------------------------------
    def _open(self, path: str, body: Optional[dict], method: Optional[str]):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                     method=method or ("POST" if data is not None else "GET"))
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            detail = _error_message(e.read().decode(errors="replace"))
            raise BackendError(f"{self.base_url}{path}: HTTP {e.code}: {detail}") from None
        except urllib.error.URLError as e:
            raise BackendError(f"{self.base_url}{path}: cannot connect: {e.reason}") from None

    def _request(self, path: str, body: Optional[dict] = None, method: Optional[str] = None) -> Any:
        with self._open(path, body, method) as resp:
            raw = resp.read().decode()
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    def _events(self, path: str, body: dict) -> Iterator[dict]:
        """SSE `data:` events until `data: [DONE]`; an in-stream error raises BackendError."""
        with self._open(path, body, "POST") as resp:
            for line in resp:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                event = json.loads(payload)
                if "error" in event and "text" not in event:
                    raise BackendError(f"{self.base_url}{path}: {event['error'].get('message', event['error'])}")
                yield event

    # ---- generation --------------------------------------------------------------------------
    def _generate_body(self, req: GenerateRequest) -> dict:
        from ..global_config import global_config
        sp = {"skip_special_tokens": global_config.skip_special_tokens_in_output,
              "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
              **sampling_dict(req.params)}
        if req.params.n and req.params.n > 1:
            sp["n"] = req.params.n
        body = {"text": req.text, "sampling_params": sp, **logprob_kwargs(req.params)}
        if req.params.return_text_in_logprobs is not None:
            body["return_text_in_logprobs"] = req.params.return_text_in_logprobs
        return body

    def generate(self, req: GenerateRequest) -> GenerateResult:
        out = self._request("/generate", self._generate_body(req))
        if isinstance(out, list):  # n > 1
            return GenerateResult([o["text"] for o in out], out[0]["meta_info"])
        _raise_on_error(out, self.base_url)
        return GenerateResult(out["text"], out["meta_info"])

    def generate_stream(self, req: GenerateRequest) -> Iterator[StreamChunk]:
        body = {**self._generate_body(req), "stream": True}
        text, ids = "", []
        for event in self._events("/generate", body):
            _raise_on_error(event, self.base_url)
            delta, text, ids = _delta(text, ids, event)
            yield StreamChunk(delta, event.get("meta_info", {}))

    # ---- select ------------------------------------------------------------------------------
    def score(self, req: ScoreRequest) -> ScoreResult:
        ctx = self._request("/generate", {"text": req.text, "sampling_params": {"max_new_tokens": 0}})
        _raise_on_error(ctx, self.base_url)
        start = max(ctx["meta_info"]["prompt_tokens"] - 2, 0)  # room for a choice that merges tokens
        outs = self._request("/generate", {
            "text": [req.text + c for c in req.choices],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True, "return_text_in_logprobs": True, "logprob_start_len": start})
        input_lps, output_lps, normalized = [], [], []
        for choice, out in zip(req.choices, outs):
            _raise_on_error(out, self.base_url)
            lps = _choice_entries(out["meta_info"]["input_token_logprobs"], choice)
            input_lps.append(lps)
            output_lps.append(out["meta_info"].get("output_token_logprobs", []))
            vals = [e[0] for e in lps if e[0] is not None]
            normalized.append(sum(vals) / len(vals) if vals else 0.0)
        uncond = None
        if req.need_unconditional:
            uo = self._request("/generate", {
                "input_ids": [[e[1] for e in lps] for lps in input_lps],
                "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0,
                "return_text_in_logprobs": True})
            uncond = [o["meta_info"]["input_token_logprobs"] for o in uo]
        return ScoreResult(input_lps, output_lps, normalized, uncond)

    # ---- cache and server --------------------------------------------------------------------
    def cache_prefix(self, text: str) -> None:
        if text:
            _raise_on_error(self._request("/generate", {"text": text, "sampling_params": {"max_new_tokens": 0}}),
                            self.base_url)

    def flush_cache(self) -> bool:
        try:
            self._request("/flush_cache", method="POST")
        except BackendError as e:
            if "HTTP 400" in str(e):  # requests are running; the server refused
                return False
            raise
        return True

    def get_server_info(self) -> dict:
        return self._request("/server_info")


def _choice_entries(entries: list, choice: str) -> list:
    """The trailing logprob entries that spell `choice` (one may also hold the end of the context
    when the tokenizer merged them: token healing). Entries are [logprob, token_id, text]."""
    covered, k = 0, len(entries)
    while k > 0 and covered < len(choice):
        k -= 1
        covered += len(entries[k][2] or "")
    return [tuple(e) for e in entries[max(k, 0):]] or [tuple(entries[-1])]


def _delta(text: str, ids: list, event: dict) -> tuple[str, str, list]:
    """(new text, cumulative text, cumulative ids) from one stream event. A server sends either
    cumulative text (the default) or deltas (--incremental-streaming-output): an event whose
    output_ids extend the ids seen so far and whose text extends the text is cumulative."""
    new_text, new_ids = event.get("text", ""), event.get("output_ids") or []
    if new_ids[:len(ids)] == ids and new_text.startswith(text) and len(new_ids) >= len(ids):
        return new_text[len(text):], new_text, list(new_ids)
    return new_text, text + new_text, ids + list(new_ids)


def _error_message(body: str) -> str:
    """The message of an `{"error": {"message": ...}}` body, else the body itself."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body
    if isinstance(err, dict) and "message" in err:
        return str(err["message"])
    return str(err) if err else body


def _raise_on_error(out: Any, where: str) -> None:
    if isinstance(out, dict) and out.get("error"):
        err = out["error"]
        raise BackendError(f"{where}: {err.get('message', err) if isinstance(err, dict) else err}")
