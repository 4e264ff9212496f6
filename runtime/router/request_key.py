"""routing_keys: what a request's cache-relevant prefix looks like to the router.

A key is the prompt as the worker will see it, or close to it: text for `/generate {text}` and
`/v1/completions {prompt: str}`, token ids for `input_ids` / token prompts, and for chat the
messages flattened as `role\\ncontent\\n` (the worker applies its chat template, which only adds
fixed markers around the same text, so shared conversation prefixes stay shared prefixes).
A batch gives one key per prompt; a body the router cannot read gives no key (least-load then).
"""
from __future__ import annotations

from typing import Any, Optional

from .prefix_tree import Key

GENERATE_ROUTES = ("/generate", "/v1/completions", "/v1/chat/completions")


def routing_keys(path: str, body: Optional[dict]) -> list[Key]:
    if not isinstance(body, dict):
        return []
    if path == "/generate":
        if body.get("text") is not None:
            return _prompts(body["text"])
        return _prompts(body.get("input_ids"))
    if path == "/v1/completions":
        return _prompts(body.get("prompt"))
    if path == "/v1/chat/completions":
        text = _chat_text(body.get("messages"))
        return [text] if text else []
    return []


def _prompts(value: Any) -> list[Key]:
    """str | list[str] | list[int] | list[list[int]] -> keys; anything else -> []."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return []
    if all(isinstance(v, int) for v in value):
        return [value]
    return [v for v in value if isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, int) for t in v))]


def _chat_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role', '')}\n{content or ''}\n")
    return "".join(parts)
