"""GrammarRegistry: the engine's one door into the grammar layer.

    registry = GrammarRegistry(tokenizer, vocab_size=49152, stop_token_ids=[2], backend="auto")
    future = registry.compile_async("json_schema", schema_text)   # never blocks the engine loop
    ... later: grammar = future.result(); matcher = grammar.new_matcher()

It validates specs (bad JSON / bad regex -> GrammarCompileError naming the problem), caches
compiled grammars by (kind, spec) (a failure is cached too, so a bad spec is not recompiled per
request), and with backend="auto" tries backends in the order below, falling back to the next when
one cannot compile the spec.

Auto order, from measurements on 1,500 real-world schemas with SmolLM2's tokenizer (field-notes.md):
correctness first. llguidance accepts 99.8% of valid and rejects 100% of invalid instances of what
it compiles; retried with coerce_one_of + lenient it still gets 95.5% of schemas fully right
(xgrammar: 81.4%, it rejects valid instances); outlines-core lets 9% of invalid ones through, so it
is last. EBNF means xgrammar's GBNF dialect (SGLang's `ebnf=`), so xgrammar goes first there;
llguidance also reads GBNF and Lark.

With "auto" every JSON-schema grammar is wrapped in a VerifiedGrammar (verified_grammar.py): a stop
token is allowed only where the output validates against the schema (jsonschema), so keywords a
library approximates (llguidance's relaxed mode, xgrammar's dropped constraints) cannot yield an
invalid finished output. Measured on JSONSchemaBench: docs/benchmarks.md, "Grammar coverage".
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Sequence

import torch

try:  # the `regex` module knows \p{L} and friends, which grammar libraries accept
    import regex as _re
except ImportError:  # pragma: no cover
    import re as _re

from .base import GRAMMAR_KINDS, CompiledGrammar, GrammarBackend, GrammarBackendMissing, GrammarCompileError
from .exponent_grammar import ExponentGrammar, exponent_token_mask
from .number_bounds import drop_number_bounds, drop_wide_bounds
from .token_vocab import TokenVocab

logger = logging.getLogger("sgl_lang.runtime.grammar")

SUPPORTED_BACKENDS = ("auto", "xgrammar", "outlines", "llguidance")

AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "json_schema": ("llguidance", "xgrammar", "outlines"),
    "json": ("llguidance", "xgrammar", "outlines"),
    "regex": ("llguidance", "xgrammar", "outlines"),
    "ebnf": ("xgrammar", "llguidance"),
}


def _make_backend(name: str, vocab: TokenVocab) -> GrammarBackend:
    """Lazy imports: a backend's library is imported only when that backend is first used."""
    if name == "xgrammar":
        from .xgrammar_backend import XGrammarBackend
        return XGrammarBackend(vocab)
    if name == "outlines":
        from .outlines_backend import OutlinesBackend
        return OutlinesBackend(vocab)
    if name == "llguidance":
        from .llguidance_backend import LLGuidanceBackend
        return LLGuidanceBackend(vocab)
    raise ValueError(f"unknown grammar backend {name!r}; supported: {list(SUPPORTED_BACKENDS)}")


def validate_spec(kind: str, spec) -> str:
    """Check a spec before any backend sees it; returns it as text. Raises GrammarCompileError."""
    if kind not in GRAMMAR_KINDS:
        raise GrammarCompileError(f"unknown grammar kind {kind!r}; supported: {list(GRAMMAR_KINDS)}")
    if kind == "json_schema" and isinstance(spec, (dict, bool)):
        spec = json.dumps(spec)
    if kind == "json" and spec is None:
        spec = ""
    if not isinstance(spec, str):
        raise GrammarCompileError(f"{kind}: expected a string, got {type(spec).__name__}")
    if kind == "json_schema":
        try:
            schema = json.loads(spec)
        except json.JSONDecodeError as e:
            raise GrammarCompileError(f"json_schema is not valid JSON: {e.msg} at line {e.lineno} "
                                      f"column {e.colno}") from e
        if not isinstance(schema, (dict, bool)):
            raise GrammarCompileError(f"json_schema must be a JSON object (or boolean), "
                                      f"got {type(schema).__name__}")
        remote = _first_remote_ref(schema)
        if remote is not None:
            # backends would silently drop it and constrain nothing there; nothing is fetched
            raise GrammarCompileError(f"json_schema: $ref {remote!r} points outside the schema; only "
                                      f"local references ('#/...') are supported")
    elif kind == "regex":
        if not spec:
            raise GrammarCompileError("regex is empty")
        try:
            _re.compile(spec)
        except _re.error as e:
            raise GrammarCompileError(f"regex {spec!r} is invalid: {e}") from e
    elif kind == "ebnf" and not spec.strip():
        raise GrammarCompileError("ebnf grammar is empty")
    return spec


def _first_remote_ref(node) -> Optional[str]:
    """The first `$ref` value that is not a local JSON pointer ('#...'), or None."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            ref = cur.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return None


class GrammarRegistry:
    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int] = (),
                 backend: str = "auto", num_workers: int = 2,
                 vocab: Optional[TokenVocab] = None, verify_json: Optional[bool] = None):
        """tokenizer: a Hugging Face fast tokenizer (ignored when `vocab` is given, e.g. a
        synthetic TokenVocab in tests). vocab_size: the model's logits width. verify_json: allow a
        stop token only where the JSON so far validates against the schema (default: on for
        "auto", off for a named backend, so that a named backend is the library as it is)."""
        if backend not in SUPPORTED_BACKENDS:
            raise ValueError(f"unknown grammar backend {backend!r}; supported: {list(SUPPORTED_BACKENDS)}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.backend_name = backend
        # "auto" checks every finished JSON output against the schema (verified_grammar.py).
        self.verify_json = backend == "auto" if verify_json is None else verify_json
        self.vocab = vocab or TokenVocab.from_hf_tokenizer(tokenizer, vocab_size, stop_token_ids)
        if self.vocab.vocab_size != vocab_size:
            raise ValueError(f"vocab_size {vocab_size} != the TokenVocab's {self.vocab.vocab_size}")
        self._backends: dict[str, GrammarBackend] = {}
        self._futures: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()
        self._exponent_mask: Optional[torch.Tensor] = None  # built on the first bounded schema
        self._pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="grammar")

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    def order_for(self, kind: str) -> tuple[str, ...]:
        """The backends tried, in order, for this kind of spec."""
        return AUTO_ORDER[kind] if self.backend_name == "auto" else (self.backend_name,)

    def compile(self, kind: str, spec) -> CompiledGrammar:
        """Blocking compile (cached). Raises GrammarCompileError."""
        return self.compile_async(kind, spec).result()

    def compile_async(self, kind: str, spec) -> Future:
        """A Future of the CompiledGrammar; the same Future for the same (kind, spec).
        Spec validation errors are raised here, at once; backend failures come out of the Future."""
        spec = validate_spec(kind, spec)
        key = (kind, spec)
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._pool.submit(self._compile_now, kind, spec)
                self._futures[key] = future
        return future

    def _compile_now(self, kind: str, spec: str) -> CompiledGrammar:
        failures = []
        for name in self.order_for(kind):
            try:
                backend = self._backend(name)
                if kind not in backend.kinds:
                    failures.append(f"{name}: does not support {kind}")
                    continue
                if kind == "json_schema" and self.verify_json:
                    return self._verified(self._compile_numbers(backend, spec), spec)
                return backend.compile(kind, spec)
            except (GrammarCompileError, GrammarBackendMissing) as e:
                failures.append(str(e))
        if len(failures) == 1:
            raise GrammarCompileError(failures[0])
        raise GrammarCompileError(f"no grammar backend could compile the {kind}:\n  - "
                                  + "\n  - ".join(failures))

    def _compile_numbers(self, backend: GrammarBackend, spec: str) -> CompiledGrammar:
        """A JSON-schema grammar whose numeric bounds allow exponent notation (number_bounds.py,
        exponent_grammar.py); only under the schema check before EOS, which keeps every bound."""
        guided = drop_wide_bounds(spec)
        grammar = backend.compile("json_schema", guided)
        free = drop_number_bounds(guided)
        if free == guided:
            return grammar
        try:
            fallback = backend.compile("json_schema", free)
        except GrammarCompileError:
            return grammar
        with self._lock:
            if self._exponent_mask is None:
                self._exponent_mask = exponent_token_mask(self.vocab)
        return ExponentGrammar(grammar, fallback, self._exponent_mask)

    @staticmethod
    def _verified(grammar: CompiledGrammar, schema: str) -> CompiledGrammar:
        try:
            from .verified_grammar import VerifiedGrammar
            return VerifiedGrammar(grammar, schema)
        except GrammarBackendMissing:
            logger.warning("jsonschema is not installed: JSON outputs are not verified "
                           "(pip install jsonschema)")
            return grammar

    def _backend(self, name: str) -> GrammarBackend:
        with self._lock:
            backend = self._backends.get(name)
        if backend is None:
            backend = _make_backend(name, self.vocab)  # outside the lock: ~0.1-0.4 s
            with self._lock:
                backend = self._backends.setdefault(name, backend)
        return backend

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
