"""VerifiedGrammar: a compiled JSON-schema grammar whose end is checked by a real validator.

Every library approximates some of JSON Schema: llguidance in its relaxed mode ignores keywords it
does not implement (`if`/`then`, `not`, `uniqueItems`, `dependencies`, oneOf read as anyOf),
xgrammar silently drops others, outlines-core ignores `minimum`/`maximum`. The token-level mask
stays the library's; we add one check where it matters: a stop token is allowed only when the text
so far validates against the schema (`jsonschema`, with format checking). So an approximate grammar
may steer the model into a dead end, but never to an invalid finished output. A dead end (nothing
but a refused stop allowed) terminates the matcher with `error()` naming the violation.

    grammar = VerifiedGrammar(inner, schema_text)   # the registry does this for "auto"
    matcher = grammar.new_matcher()                 # same GrammarMatcher contract as inner's

Cost: one validation per step at which the inner grammar could end (usually only the last one).
"""
from __future__ import annotations

import json
from typing import Optional

import torch

from .base import (CompiledGrammar, GrammarBackendMissing, GrammarMatcher, ban_tokens,
                   check_bitmask_row)


def make_validator(schema_text: str):
    """A jsonschema validator (draft from `$schema`, formats checked). Raises GrammarBackendMissing."""
    try:
        import jsonschema
    except ImportError as e:
        raise GrammarBackendMissing("schema verification needs the jsonschema package: "
                                    "pip install jsonschema") from e
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class VerifiedMatcher(GrammarMatcher):
    def __init__(self, grammar: "VerifiedGrammar"):
        self._grammar = grammar
        self._inner = grammar.inner.new_matcher()
        self._token_bytes = grammar.vocab.token_bytes
        self._stop_ids = grammar.vocab.stop_token_ids
        self._chunks: list[bytes] = []  # bytes of each accepted token (b"" for a stop token)
        self._verdict: tuple[int, str] = (-1, "")  # (len(_chunks) checked, violation or "")
        self._error = ""

    def _violation(self) -> str:
        """Why the text so far is not a valid instance ("" when it is); cached per length."""
        if self._verdict[0] != len(self._chunks):
            self._verdict = (len(self._chunks), self._grammar.check(b"".join(self._chunks)))
        return self._verdict[1]

    def accept_token(self, token_id: int) -> bool:
        if self._error:
            return False
        if token_id in self._stop_ids and self._inner.is_accepting() and self._violation():
            return False
        if not self._inner.accept_token(token_id):
            return False
        self._chunks.append(b"" if token_id in self._stop_ids else (self._token_bytes[token_id] or b""))
        return True

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self._inner.fill_bitmask(bitmask, row)
        if self._error or self._inner.is_terminated() or not self._inner.is_accepting():
            return
        violation = self._violation()
        if not violation:
            return
        view = check_bitmask_row(bitmask, row, len(self._token_bytes))  # [width] int32
        ban_tokens(view, self._stop_ids)
        if not bool(view.any()):
            self._error = f"the output cannot continue and does not match the JSON schema: {violation}"

    def rollback(self, num_tokens: int) -> None:
        self._inner.rollback(num_tokens)
        if num_tokens > 0:
            del self._chunks[-num_tokens:]
        self._error = ""

    def is_terminated(self) -> bool:
        return bool(self._error) or self._inner.is_terminated()

    def is_accepting(self) -> bool:
        return self._inner.is_accepting() and not self._violation()

    def jump_forward_string(self) -> str:
        return "" if self._error else self._inner.jump_forward_string()

    def error(self) -> str:
        return self._error or self._inner.error()


class VerifiedGrammar(CompiledGrammar):
    """Wraps a compiled json_schema grammar; `backend_name` stays the inner library's."""

    def __init__(self, inner: CompiledGrammar, schema_text: str, validator=None):
        self.inner, self.kind, self.spec = inner, inner.kind, schema_text  # inner's may be relaxed
        self.backend_name = inner.backend_name
        self.vocab = inner.vocab
        self.is_relaxed = getattr(inner, "is_relaxed", False)
        self._validator = validator or make_validator(schema_text)
        self.num_unverifiable = 0  # checks the validator itself could not finish
        self.last_unverifiable = ""

    def check(self, data: bytes) -> str:
        """Why `data` is not a valid instance of the schema; "" when it is."""
        try:
            instance = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return f"not JSON: {e}"
        try:
            error: Optional[Exception] = next(iter(self._validator.iter_errors(instance)), None)
        except Exception as e:  # e.g. a remote $ref jsonschema may not fetch: trust the grammar
            self.num_unverifiable += 1
            self.last_unverifiable = f"{type(e).__name__}: {e}"[:200]
            return ""
        if error is None:
            return ""
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"at {where}: {error.message[:200]}"

    def new_matcher(self) -> GrammarMatcher:
        return VerifiedMatcher(self)
