"""outlines-core adapter: regex and JSON schema (through outlines' schema -> regex translation).

outlines-core compiles a regex into a token-level automaton (an Index). `Vocabulary.from_pretrained`
goes to the network, so we build the Vocabulary from our TokenVocab: {token bytes: [ids]}, special
and stop tokens left out (never allowed; outlines adds EOS itself at final states). Extra stop ids
beyond EOS are mirrored onto EOS here. outlines has no jump-forward API: we derive the forced text
from the automaton (see `jump_forward_string`).

Weak spots measured on real schemas (field-notes.md): it ignores minimum/maximum and lets ~9% of
invalid instances through, so `auto` tries it last.
"""
from __future__ import annotations

import torch

from .base import (CompiledGrammar, GrammarBackend, GrammarBackendMissing, GrammarCompileError,
                   GrammarMatcher, allow_only_tokens, allow_tokens, check_bitmask_row,
                   decode_forced)
from .token_vocab import TokenVocab

_MAX_ROLLBACK = 4096
_MAX_JUMP_STEPS = 32  # tokens walked when deriving a forced string
_MAX_JUMP_FANOUT = 2048  # beyond this many allowed tokens nothing useful is forced


def _import_outlines_core():
    try:
        import outlines_core
    except ImportError as e:
        raise GrammarBackendMissing(
            "grammar backend 'outlines' needs the outlines-core package: pip install outlines-core") from e
    return outlines_core


class OutlinesMatcher(GrammarMatcher):
    def __init__(self, grammar: "OutlinesCompiled"):
        oc = _import_outlines_core()
        self._grammar = grammar
        self._vocab = grammar.vocab
        self._guide = oc.Guide(grammar.index, max_rollback=_MAX_ROLLBACK)
        self._is_stopped = False

    def accept_token(self, token_id: int) -> bool:
        if self._is_stopped:
            return False
        if token_id in self._vocab.stop_token_ids:
            self._is_stopped = self._guide.is_finished()
            return self._is_stopped
        if self._grammar.index.get_next_state(self._guide.get_state(), int(token_id)) is None:
            return False
        self._guide.advance(int(token_id), return_tokens=False)
        return True

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        view = check_bitmask_row(bitmask, row, self._vocab.vocab_size)
        if self._is_stopped:
            allow_only_tokens(view, self._vocab.stop_token_ids)
            return
        self._guide.write_mask_into(view.data_ptr(), view.numel(), 4)
        if len(self._vocab.stop_token_ids) > 1 and self._guide.is_finished():
            allow_tokens(view, self._vocab.stop_token_ids[1:])  # outlines only knows EOS

    def rollback(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        if self._is_stopped:
            self._is_stopped = False
            num_tokens -= 1
        if num_tokens:
            self._guide.rollback_state(int(num_tokens))

    def is_terminated(self) -> bool:
        return self._is_stopped

    def is_accepting(self) -> bool:
        return self._guide.is_finished()

    def jump_forward_string(self) -> str:
        """Walk the automaton while every allowed token starts with one common byte prefix P
        (then any continuation starts with P) and some token spells P exactly (so we know the
        state after it). Stops where the grammar may end."""
        if self._is_stopped:
            return ""
        index, token_bytes = self._grammar.index, self._vocab.token_bytes
        state, forced = self._guide.get_state(), b""
        for _ in range(_MAX_JUMP_STEPS):
            if index.is_final_state(state):
                break
            allowed = index.get_allowed_tokens(state)
            if not allowed or len(allowed) > _MAX_JUMP_FANOUT:
                break
            prefix = _common_prefix([token_bytes[t] for t in allowed])
            if not prefix:
                break
            forced += prefix
            allowed_set = set(allowed)
            exact = [t for t in self._grammar.ids_by_bytes.get(prefix, ()) if t in allowed_set]
            if not exact:
                break
            state = index.get_next_state(state, exact[0])
        return decode_forced(forced)


def _common_prefix(items: list) -> bytes:
    if not items:
        return b""
    lo, hi = min(items), max(items)  # the common prefix of all = that of the extremes
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


class OutlinesCompiled(CompiledGrammar):
    backend_name = "outlines"

    def __init__(self, kind: str, spec: str, regex: str, index, vocab: TokenVocab,
                 ids_by_bytes: dict):
        self.kind, self.spec, self.regex, self.index, self.vocab = kind, spec, regex, index, vocab
        self.ids_by_bytes = ids_by_bytes

    def new_matcher(self) -> GrammarMatcher:
        return OutlinesMatcher(self)


class OutlinesBackend(GrammarBackend):
    name = "outlines"
    kinds = ("json_schema", "regex", "json")

    def __init__(self, vocab: TokenVocab):
        super().__init__(vocab)
        oc = _import_outlines_core()
        self._oc = oc
        ids_by_bytes: dict[bytes, list[int]] = {}
        for i, b in enumerate(vocab.token_bytes):
            if b is not None and i not in vocab.stop_token_ids:
                ids_by_bytes.setdefault(b, []).append(i)
        self._ids_by_bytes = ids_by_bytes
        self._vocabulary = oc.Vocabulary(vocab.eos_token_id, ids_by_bytes)

    def compile(self, kind: str, spec: str) -> CompiledGrammar:
        if kind not in self.kinds:
            raise self._unsupported(kind)
        regex = spec
        if kind in ("json_schema", "json"):
            try:
                regex = self._oc.json_schema.build_regex_from_schema(
                    spec if kind == "json_schema" else "{}", whitespace_pattern="")
            except Exception as e:  # outlines raises TypeError/ValueError variants
                raise GrammarCompileError(f"outlines could not translate the JSON schema: "
                                          f"{type(e).__name__}: {e}") from e
        try:
            index = self._oc.Index(regex, self._vocabulary)
        except Exception as e:
            raise GrammarCompileError(f"outlines could not compile the {kind}: "
                                      f"{type(e).__name__}: {e}") from e
        return OutlinesCompiled(kind, spec, regex, index, self.vocab, self._ids_by_bytes)
