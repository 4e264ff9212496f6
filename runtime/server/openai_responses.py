"""Engine outputs -> OpenAI response objects: choices, finish reasons, usage, and both logprob
layouts (legacy completions `{tokens, token_logprobs, top_logprobs, text_offset}` and chat
`{content: [{token, logprob, bytes, top_logprobs}]}`)."""
from __future__ import annotations

import time
import uuid
from typing import Optional, Sequence


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def finish_reason(meta: dict) -> tuple[Optional[str], object]:
    """(OpenAI finish_reason, matched stop string or token id)."""
    fr = meta.get("finish_reason")
    if fr is None:
        return None, None
    return fr.get("type"), fr.get("matched")


def usage(outs: Sequence[dict], n: int) -> dict:
    """Prompt and cached tokens counted once per prompt (every n-th output); completions summed."""
    metas = [o["meta_info"] for o in outs]
    prompt = sum(m["prompt_tokens"] for m in metas[::n])
    cached = sum(m.get("cached_tokens", 0) for m in metas[::n])
    completion = sum(m["completion_tokens"] for m in metas)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _top_dict(row) -> Optional[dict]:
    return None if row is None else {text: lp for lp, _, text in row}


def completion_logprobs(entries: Sequence, tops: Optional[Sequence], start_offset: int = 0) -> dict:
    """Legacy completions layout for token entries (logprob, id, text)."""
    tokens, offsets, pos = [], [], start_offset
    for _, _, text in entries:
        tokens.append(text)
        offsets.append(pos)
        pos += len(text)
    return {"tokens": tokens, "token_logprobs": [lp for lp, _, _ in entries],
            "top_logprobs": [_top_dict(r) for r in tops] if tops is not None else [None] * len(entries),
            "text_offset": offsets}


def merge_completion_logprobs(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def chat_logprobs(entries: Sequence, tops: Optional[Sequence]) -> dict:
    content = []
    for i, (lp, _, text) in enumerate(entries):
        row = tops[i] if tops is not None and i < len(tops) else None
        content.append({"token": text, "logprob": lp, "bytes": list(text.encode()),
                        "top_logprobs": [{"token": t, "logprob": l, "bytes": list(t.encode())}
                                         for l, _, t in (row or [])]})
    return {"content": content}


def echo_logprobs(meta: dict) -> dict:
    """Completions with echo: the prompt's token entries, then the output's."""
    inp = completion_logprobs(meta.get("input_token_logprobs", []), meta.get("input_top_logprobs"))
    end = inp["text_offset"][-1] + len(inp["tokens"][-1]) if inp["tokens"] else 0
    out = completion_logprobs(meta.get("output_token_logprobs", []), meta.get("output_top_logprobs"), end)
    return merge_completion_logprobs(inp, out)


def completion_choice(index: int, out: dict, echo_text: str, with_logprobs: bool, echo: bool) -> dict:
    meta = out["meta_info"]
    reason, matched = finish_reason(meta)
    logprobs = None
    if with_logprobs:
        logprobs = echo_logprobs(meta) if echo else completion_logprobs(
            meta.get("output_token_logprobs", []), meta.get("output_top_logprobs"))
    return {"index": index, "text": (echo_text if echo else "") + out["text"], "logprobs": logprobs,
            "finish_reason": reason, "matched_stop": matched}


def chat_choice(index: int, out: dict, with_logprobs: bool) -> dict:
    meta = out["meta_info"]
    reason, matched = finish_reason(meta)
    logprobs = chat_logprobs(meta.get("output_token_logprobs", []), meta.get("output_top_logprobs")) \
        if with_logprobs else None
    return {"index": index, "message": {"role": "assistant", "content": out["text"]},
            "logprobs": logprobs, "finish_reason": reason, "matched_stop": matched}


class StreamTracker:
    """Per-choice progress of a stream: how much text and how many logprob entries were sent."""

    def __init__(self, num: int):
        self.sent_text = [0] * num
        self.sent_lps = [0] * num
        self.started = [False] * num

    def delta(self, i: int, out: dict) -> tuple[str, list, Optional[list]]:
        """(new text, new output logprob entries, their top rows) since the last call for choice i."""
        text = out["text"]
        new_text = text[self.sent_text[i]:]
        self.sent_text[i] = max(self.sent_text[i], len(text))
        meta = out["meta_info"]
        entries = meta.get("output_token_logprobs", [])
        tops = meta.get("output_top_logprobs")
        start = self.sent_lps[i]
        self.sent_lps[i] = len(entries)
        return new_text, list(entries[start:]), (list(tops[start:]) if tops is not None else None)
