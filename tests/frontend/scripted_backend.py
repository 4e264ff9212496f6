"""ScriptedBackend: a test double of the Backend protocol.

It answers from a script, deterministically, and honours what a request asks where it can:
a regex or json_schema constraint (by building a matching string), stop strings (trimmed),
max_new_tokens (counted in whitespace-separated words, for unconstrained text). Every call is
recorded in `calls` as (kind, value object) so tests can assert on what the interpreter sent.
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Callable, Optional, Union

try:  # Python 3.11+
    import re._parser as sre_parse
    import re._constants as sre
except ImportError:  # pragma: no cover
    import sre_parse
    import sre_constants as sre

from sgl_lang.backend.base import (Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult,
                                   StreamChunk)
from sgl_lang.chat_template import ChatTemplate, get_chat_template


class ScriptedFailure(RuntimeError):
    """Raised by the backend when a prompt contains its `fail_when` marker."""


# ---- strings that satisfy a constraint ------------------------------------------------------

def _class_char(items) -> str:
    """A character accepted by an IN set: its first literal / range start / category."""
    negate = any(op == sre.NEGATE for op, _ in items)
    if negate:
        banned = {chr(v) for op, v in items if op == sre.LITERAL}
        return next(c for c in "xa0 " if c not in banned)
    for op, av in items:
        if op == sre.LITERAL:
            return chr(av)
        if op == sre.RANGE:
            return chr(av[0])
        if op == sre.CATEGORY:
            return {sre.CATEGORY_DIGIT: "7", sre.CATEGORY_SPACE: " "}.get(av, "a")
    return "a"


def _sample(parsed) -> str:
    out = []
    for op, av in parsed:
        if op == sre.LITERAL:
            out.append(chr(av))
        elif op == sre.NOT_LITERAL:
            out.append("x" if chr(av) != "x" else "y")
        elif op == sre.ANY:
            out.append("a")
        elif op == sre.IN:
            out.append(_class_char(av))
        elif op == sre.BRANCH:
            out.append(_sample(av[1][0]))
        elif op == sre.SUBPATTERN:
            out.append(_sample(av[-1]))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            count = lo if lo > 0 else (1 if hi > 1 else 0)  # x? -> absent, x* -> once
            out.append(_sample(sub) * count)
        elif op in (sre.AT, sre.GROUPREF):
            continue
        else:
            raise NotImplementedError(f"ScriptedBackend cannot sample regex op {op}")
    return "".join(out)


def sample_regex(pattern: str) -> str:
    """A short string that fullmatches `pattern` (first branch, minimum non-zero repeats)."""
    text = _sample(sre_parse.parse(pattern))
    assert re.fullmatch(pattern, text), (pattern, text)
    return text


def sample_json(schema: dict) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: sample_json(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample_json(schema.get("items", {"type": "string"}))] * max(1, schema.get("minItems", 1))
    return {"string": "abc", "integer": 7, "number": 1.5, "boolean": True, "null": None}[kind]


# ---- the backend ----------------------------------------------------------------------------

class ScriptedBackend(Backend):
    def __init__(self, *, replies: Union[dict[str, str], Callable[[GenerateRequest], str], None] = None,
                 default_reply: str = "scripted answer", scores: Optional[dict[str, float]] = None,
                 template: Union[str, ChatTemplate] = "chatml", supports_score: bool = True,
                 chunk_size: int = 4, stream_delay: float = 0.0, delay: float = 0.0,
                 fail_when: Optional[str] = None):
        self.replies = replies or {}
        self.default_reply = default_reply
        self.scores = scores or {}
        self.template = get_chat_template(template) if isinstance(template, str) else template
        self.supports_score = supports_score
        self.chunk_size = chunk_size
        self.stream_delay = stream_delay
        self.delay = delay
        self.fail_when = fail_when
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    # -- recording helpers for tests
    def _record(self, kind: str, value: Any) -> None:
        with self._lock:
            self.calls.append((kind, value))

    def requests(self, kind: str) -> list:
        with self._lock:
            return [v for k, v in self.calls if k == kind]

    # -- protocol
    def get_chat_template(self) -> ChatTemplate:
        return self.template

    def _reply_for(self, req: GenerateRequest) -> str:
        if callable(self.replies):
            return self.replies(req)
        best, best_at = self.default_reply, -1
        for key, reply in self.replies.items():  # the key seen latest in the prompt wins
            at = req.text.rfind(key)
            if at > best_at:
                best, best_at = reply, at
        return best

    def _complete(self, req: GenerateRequest) -> tuple[str, dict]:
        if self.fail_when is not None and self.fail_when in req.text:
            raise ScriptedFailure(f"scripted failure: prompt contains {self.fail_when!r}")
        if self.delay:
            time.sleep(self.delay)
        p = req.params
        text = self._reply_for(req)
        finish = {"type": "stop", "matched": None}
        if p.regex is not None:
            if not re.fullmatch(p.regex, text):
                text = sample_regex(p.regex)
        elif p.json_schema is not None:
            try:
                json.loads(text)
            except ValueError:
                text = json.dumps(sample_json(json.loads(p.json_schema)))
        for stop in p.stop or ():  # a server checks stops on constrained output too
            if stop and stop in text:
                text = text[:text.index(stop)]
                finish = {"type": "stop", "matched": stop}
        if p.regex is None and p.json_schema is None:
            words = re.findall(r"\S+\s*", text)
            limit = p.max_new_tokens if p.max_new_tokens is not None else 128
            if len(words) > limit:
                text = "".join(words[:limit])
                finish = {"type": "length", "length": limit}
        meta = {"prompt_tokens": len(req.text.split()), "completion_tokens": len(text.split()),
                "cached_tokens": 0, "finish_reason": finish}
        return text, meta

    def generate(self, req: GenerateRequest) -> GenerateResult:
        self._record("generate", req)
        text, meta = self._complete(req)
        return GenerateResult(text, meta)

    def generate_stream(self, req: GenerateRequest):
        self._record("generate_stream", req)
        text, meta = self._complete(req)
        for i in range(0, len(text), self.chunk_size):
            if self.stream_delay:
                time.sleep(self.stream_delay)
            yield StreamChunk(text[i:i + self.chunk_size], {"completion_tokens": i // self.chunk_size + 1})
        yield StreamChunk("", meta)

    def score(self, req: ScoreRequest) -> ScoreResult:
        self._record("score", req)
        if self.fail_when is not None and self.fail_when in req.text:
            raise ScriptedFailure(f"scripted failure: prompt contains {self.fail_when!r}")
        lps = [self.scores.get(c, -5.0) for c in req.choices]
        entries = [[[lp, i, c]] for i, (lp, c) in enumerate(zip(lps, req.choices))]
        uncond = [[[None, i, c]] for i, c in enumerate(req.choices)] if req.need_unconditional else None
        return ScoreResult(input_token_logprobs=entries, output_token_logprobs=[[] for _ in req.choices],
                           normalized_prompt_logprobs=lps, unconditional_token_logprobs=uncond,
                           meta_info={"scored_by": "scripted"})

    def cache_prefix(self, text: str) -> None:
        self._record("cache_prefix", text)

    def flush_cache(self) -> bool:
        self._record("flush_cache", None)
        return True

    def get_server_info(self) -> dict:
        return {"backend": "scripted", "template": self.template.name}
