"""`select` and constraint checks for the OpenAI backend.

Completion models — prompt scoring: ONE call `completions.create(prompt=[text + choice, ...],
echo=True, logprobs=0, max_tokens=0)`; a choice's entries are the echoed tokens that overlap the
choice's characters (so a token merged across the boundary counts, as in token healing). The
score is their mean logprob, as SGLang's RuntimeEndpoint computes it.

Chat models (SGLang refuses these) — the assistant's reply cannot be pre-filled, so:
  1. constrained choice: ask for the reply with `regex` = the alternation of the choices,
     temperature 0 and logprobs. The server decodes greedily inside the choices, which is
     greedy-token selection over them; the chosen choice's score is its mean token logprob and
     the others get -inf (they were pruned by the greedy walk).
  2. where the server refuses `regex`: one-token look-ahead. Ask for 1 token with top_logprobs=20
     and score each choice by the best logprob among the top tokens that are a prefix of it (or
     it of them). Choices that share their first token tie; the first wins.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import UnsupportedFeature
from ..ir import GenParams
from .base import ScoreRequest, ScoreResult

_REGEX_META = set("\\.^$*+?{}[]|()")


def escape_literal(text: str) -> str:
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)


def check_output(params: GenParams, text: str, choice: Any, where: Any) -> None:
    """A server that ignored a regex (an extra field it does not know) is caught here. Checked only
    when generation stopped on its own (not on a stop string or the length limit)."""
    if not params.regex or getattr(choice, "finish_reason", None) != "stop":
        return
    extra = getattr(choice, "model_extra", None) or {}
    if extra.get("matched_stop") is not None or extra.get("stop_reason") is not None:
        return
    import regex as re_mod  # a frontend dependency; same syntax family as the grammar backends
    if re_mod.fullmatch(params.regex, text) is None:
        raise UnsupportedFeature(f"the server at {where} ignored regex={params.regex!r} "
                                 f"(it returned {text[:80]!r}); it does not support regex constraints")


def score_completion(backend, req: ScoreRequest) -> ScoreResult:
    if not req.choices:
        raise UnsupportedFeature("select needs at least one choice")
    out = backend.call(chat=False, extra={}, model=backend.model_name, prompt=[req.text + c for c in req.choices],
                       max_tokens=0, echo=True, logprobs=0, temperature=0)
    by_index = sorted(out.choices, key=lambda c: c.index)
    input_lps, normalized = [], []
    for choice, c in zip(req.choices, by_index):
        lp = c.logprobs
        if lp is None or not lp.tokens:
            raise UnsupportedFeature(f"the server at {backend.client.base_url} returned no prompt logprobs "
                                     f"for echo=True; select needs them on completion models")
        start = len(req.text)
        entries = [(v, None, tok) for tok, v, off in zip(lp.tokens, lp.token_logprobs, lp.text_offset)
                   if off + len(tok) > start]
        input_lps.append(entries)
        vals = [e[0] for e in entries if e[0] is not None]
        normalized.append(sum(vals) / len(vals) if vals else 0.0)
    uncond = None
    if req.need_unconditional:
        texts = ["".join(e[2] for e in entries) for entries in input_lps]
        uo = backend.call(chat=False, extra={}, model=backend.model_name, prompt=texts, max_tokens=0,
                          echo=True, logprobs=0, temperature=0)
        uncond = [[(v, None, t) for t, v in zip(c.logprobs.tokens, c.logprobs.token_logprobs)]
                  for c in sorted(uo.choices, key=lambda c: c.index)]
    return ScoreResult(input_lps, [[] for _ in req.choices], normalized, uncond,
                       meta_info={"select_method": "prompt_logprobs"})


def score_chat(backend, req: ScoreRequest, messages: list[dict]) -> ScoreResult:
    if req.need_unconditional:
        raise UnsupportedFeature("unconditional_likelihood_normalized needs prompt logprobs, which chat "
                                 "models do not return; use a completion model or another choices_method")
    try:
        return _constrained_choice(backend, req, messages)
    except UnsupportedFeature as refused:
        if "regex" not in str(refused):
            raise
        return _first_token_lookahead(backend, req, messages, refused)


def _constrained_choice(backend, req: ScoreRequest, messages: list[dict]) -> ScoreResult:
    pattern = "(" + "|".join(escape_literal(c) for c in req.choices) + ")"
    max_tokens = max(len(c.encode()) for c in req.choices) + 2
    out = backend.call(chat=True, extra={"regex": pattern}, model=backend.model_name, messages=messages,
                       max_tokens=max_tokens, temperature=0, logprobs=True)
    choice = out.choices[0]
    text = choice.message.content or ""
    if text not in req.choices:
        raise UnsupportedFeature(f"the server at {backend.client.base_url} ignored the regex of select "
                                 f"(it answered {text[:80]!r}); it does not support regex constraints")
    content = (choice.logprobs.content if choice.logprobs is not None else None) or []
    entries = [(e.logprob, None, e.token) for e in content]
    vals = [e[0] for e in entries if e[0] is not None]
    chosen_score = sum(vals) / len(vals) if vals else 0.0
    input_lps = [entries if c == text else [] for c in req.choices]
    normalized = [chosen_score if c == text else -math.inf for c in req.choices]
    return ScoreResult(input_lps, [[] for _ in req.choices], normalized,
                       meta_info={"select_method": "constrained_choice", "generated_text": text})


def _first_token_lookahead(backend, req: ScoreRequest, messages: list[dict], refused) -> ScoreResult:
    out = backend.call(chat=True, extra={}, model=backend.model_name, messages=messages, max_tokens=1,
                       temperature=0, logprobs=True, top_logprobs=20)
    content = out.choices[0].logprobs.content if out.choices[0].logprobs is not None else None
    if not content:
        raise UnsupportedFeature(f"select on chat model {backend.model_name!r}: the server refused regex "
                                 f"({refused}) and returned no logprobs either")
    top = [(t.token, t.logprob) for t in content[0].top_logprobs] or [(content[0].token, content[0].logprob)]
    scores, input_lps = [], []
    for c in req.choices:
        hits = [(lp, tok) for tok, lp in top if tok.strip() and (c.startswith(tok) or tok.startswith(c)
                                                               or c.startswith(tok.strip()))]
        best = max(hits, default=(-math.inf, None))
        scores.append(best[0])
        input_lps.append([] if best[1] is None else [(best[0], None, best[1])])
    if all(s == -math.inf for s in scores):
        raise UnsupportedFeature(f"select on chat model {backend.model_name!r}: none of the choices begins "
                                 f"with one of the model's top-20 first tokens {[t for t, _ in top][:20]}")
    return ScoreResult(input_lps, [[] for _ in req.choices], scores,
                       meta_info={"select_method": "first_token_lookahead"})
