"""llguidance adapter: JSON schema, regex, EBNF/GBNF/Lark, any JSON.

Measured on 1,500 real-world schemas (field-notes.md) llguidance is the most *correct* library
(99.8% of valid instances accepted, 100% of invalid rejected on what it compiles) but refuses
`not`, `oneOf`, `dependencies`, `uniqueItems`. So a JSON schema is compiled strictly first; only
when that fails is it retried with `coerce_one_of` (oneOf treated as anyOf) and `lenient` (unknown
keywords ignored, reported as warnings on the compiled grammar). JSON is compact: "," and ":" and
no free whitespace.

A matcher is a deep copy of a prototype built at compile time, so per-request setup is cheap and
grammar errors surface at compile time, not at the first decode step.
"""
from __future__ import annotations

import torch

from .base import (CompiledGrammar, GrammarBackend, GrammarBackendMissing, GrammarCompileError,
                   GrammarMatcher, allow_only_tokens, check_bitmask_row, decode_forced)
from .token_vocab import TokenVocab

_STRICT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_RELAXED = {**_STRICT, "coerce_one_of": True, "lenient": True}


def _import_llguidance():
    try:
        import llguidance
    except ImportError as e:
        raise GrammarBackendMissing(
            "grammar backend 'llguidance' needs the llguidance package: pip install llguidance") from e
    return llguidance


class _VocabTokenizer:
    """What llguidance's TokenizerWrapper expects: token bytes, EOS/BOS, special ids, encode()."""

    def __init__(self, vocab: TokenVocab):
        # Special and stop tokens get a 0xFF prefix: llguidance's marker for "special".
        self.tokens = [b if b is not None else b"\xff<|special_%d|>" % i
                       for i, b in enumerate(vocab.token_bytes)]
        self.eos_token_id = vocab.eos_token_id
        self.bos_token_id = None
        self.special_token_ids = list(vocab.special_token_ids) + list(vocab.stop_token_ids)
        self._encode = vocab.encode or self._greedy_encoder(vocab)

    def __call__(self, text: str) -> list[int]:
        if isinstance(text, bytes):  # llguidance probes with bytes; we take text only
            raise TypeError("expected str")
        return list(self._encode(text))

    @staticmethod
    def _greedy_encoder(vocab: TokenVocab):
        """Longest-match tokenization, for synthetic vocabularies without a real tokenizer."""
        by_bytes = {b: i for i, b in enumerate(vocab.token_bytes) if b}
        longest = max((len(b) for b in by_bytes), default=1)

        def encode(text: str) -> list[int]:
            data, out, pos = text.encode("utf-8"), [], 0
            while pos < len(data):
                for n in range(min(longest, len(data) - pos), 0, -1):
                    if data[pos:pos + n] in by_bytes:
                        out.append(by_bytes[data[pos:pos + n]])
                        pos += n
                        break
                else:
                    raise ValueError(f"byte {data[pos]:#x} has no token in the vocabulary")
            return out
        return encode


class LLGuidanceMatcher(GrammarMatcher):
    """llguidance "stops" as soon as only EOS can follow; we call a matcher terminated only once a
    stop token was accepted (xgrammar's meaning), tracking that ourselves."""

    def __init__(self, grammar: "LLGuidanceCompiled"):
        self._vocab = grammar.vocab
        self._matcher = grammar.prototype.deep_copy()
        self._num_tokens = 0  # tokens accepted, the stop token included
        self._stopped_at = -1  # _num_tokens after the accepted stop token; -1 while running

    def accept_token(self, token_id: int) -> bool:
        if self.is_terminated():
            return False
        if token_id in self._vocab.stop_token_ids:
            if not self._matcher.is_accepting():
                return False
            self._num_tokens += 1
            self._stopped_at = self._num_tokens
            return True
        # try_consume_tokens leaves the matcher usable when the token is refused.
        if self._matcher.try_consume_tokens([int(token_id)]) != 1:
            return False
        self._num_tokens += 1
        return True

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        view = check_bitmask_row(bitmask, row, self._vocab.vocab_size)
        if self.is_terminated():
            allow_only_tokens(view, self._vocab.stop_token_ids)
            return
        self._matcher.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)

    def rollback(self, num_tokens: int) -> None:
        if not 0 <= num_tokens <= self._num_tokens:
            raise ValueError(f"rollback: expected 0 <= num_tokens <= {self._num_tokens}, got {num_tokens}")
        num_grammar_tokens = num_tokens
        if self._stopped_at >= 0:  # the stop token never reached llguidance
            self._stopped_at = -1
            num_grammar_tokens -= 1
        self._num_tokens -= num_tokens
        if num_grammar_tokens > 0 and not self._matcher.rollback(num_grammar_tokens):
            raise RuntimeError(f"llguidance: rollback of {num_grammar_tokens} tokens failed: "
                               f"{self._matcher.get_error()}")

    def is_terminated(self) -> bool:
        return self._stopped_at >= 0 or bool(self._matcher.is_error())

    def is_accepting(self) -> bool:
        return bool(self._matcher.is_accepting())

    def jump_forward_string(self) -> str:
        if self.is_terminated():
            return ""
        # Forced bytes may start or end inside a UTF-8 character: return only whole characters.
        return decode_forced(self._matcher.compute_ff_bytes())

    def error(self) -> str:
        return self._matcher.get_error() if self._matcher.is_error() else ""


class LLGuidanceCompiled(CompiledGrammar):
    backend_name = "llguidance"

    def __init__(self, kind: str, spec: str, prototype, vocab: TokenVocab, warnings: tuple[str, ...],
                 is_relaxed: bool):
        self.kind, self.spec, self.prototype, self.vocab = kind, spec, prototype, vocab
        self.warnings = warnings  # keywords ignored in relaxed mode, etc.
        self.is_relaxed = is_relaxed  # compiled with coerce_one_of + lenient

    def new_matcher(self) -> GrammarMatcher:
        return LLGuidanceMatcher(self)


class LLGuidanceBackend(GrammarBackend):
    name = "llguidance"
    kinds = ("json_schema", "regex", "ebnf", "json")

    def __init__(self, vocab: TokenVocab):
        super().__init__(vocab)
        llg = _import_llguidance()
        self._llg = llg
        self._tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(_VocabTokenizer(vocab)),
                                          n_vocab=vocab.vocab_size,
                                          eos_token=list(vocab.stop_token_ids))

    def compile(self, kind: str, spec: str) -> CompiledGrammar:
        if kind not in self.kinds:
            raise self._unsupported(kind)
        if kind == "json_schema":
            try:
                return self._build(kind, spec, self._json_grammar(spec, _STRICT), is_relaxed=False)
            except GrammarCompileError as strict_error:
                try:
                    return self._build(kind, spec, self._json_grammar(spec, _RELAXED), is_relaxed=True)
                except GrammarCompileError:
                    raise strict_error from None
        if kind == "json":
            return self._build(kind, spec, self._json_grammar("{}", _STRICT), is_relaxed=False)
        try:
            text = (self._llg.LLMatcher.grammar_from_regex(spec) if kind == "regex"
                    else self._llg.grammar_from("ebnf", spec))
        except ValueError as e:
            raise GrammarCompileError(f"llguidance could not read the {kind}: {e}") from e
        return self._build(kind, spec, text, is_relaxed=False)

    def _json_grammar(self, spec: str, options: dict) -> str:
        try:
            return self._llg.LLMatcher.grammar_from_json_schema(spec, defaults=options)
        except ValueError as e:
            raise GrammarCompileError(f"llguidance could not read the JSON schema: {e}") from e

    def _build(self, kind: str, spec: str, grammar: str, is_relaxed: bool) -> LLGuidanceCompiled:
        is_error, messages = self._llg.LLMatcher.validate_grammar_with_warnings(grammar, self._tokenizer)
        if is_error:
            raise GrammarCompileError(f"llguidance could not compile the {kind}: {messages[0]}")
        prototype = self._llg.LLMatcher(self._tokenizer, grammar, log_level=0)
        if prototype.is_error():
            raise GrammarCompileError(f"llguidance could not compile the {kind}: {prototype.get_error()}")
        return LLGuidanceCompiled(kind, spec, prototype, self.vocab, tuple(messages), is_relaxed)

