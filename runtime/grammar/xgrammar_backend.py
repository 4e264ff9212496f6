"""xgrammar adapter: JSON schema, regex, EBNF (GBNF dialect, as SGLang's `ebnf=`), built-in JSON.

Options chosen from measurements on SmolLM2 (field-notes.md):
- the TokenizerInfo is built from our TokenVocab with special tokens as empty strings, because
  `TokenizerInfo.from_huggingface` finds none on this tokenizer and would allow ids 0-16 in strings;
- `any_whitespace=False` and compact separators (",", ":"): otherwise a small model can emit
  whitespace forever and compact instances are rejected;
- `strict_mode=False`: JSON Schema allows unlisted properties unless additionalProperties is false.
"""
from __future__ import annotations

import torch

from .base import (CompiledGrammar, GrammarBackend, GrammarBackendMissing, GrammarCompileError,
                   GrammarMatcher, allow_only_tokens, check_bitmask_row)
from .token_vocab import TokenVocab


def _import_xgrammar():
    try:
        import xgrammar
    except ImportError as e:
        raise GrammarBackendMissing(
            "grammar backend 'xgrammar' needs the xgrammar package: pip install xgrammar") from e
    return xgrammar


class XGrammarMatcher(GrammarMatcher):
    def __init__(self, grammar: "XGrammarCompiled"):
        xgr = _import_xgrammar()
        self._vocab = grammar.vocab
        self._matcher = xgr.GrammarMatcher(grammar.handle, max_rollback_tokens=-1)

    def accept_token(self, token_id: int) -> bool:
        if self._matcher.is_terminated():
            return False
        return bool(self._matcher.accept_token(int(token_id)))

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        view = check_bitmask_row(bitmask, row, self._vocab.vocab_size)
        if self._matcher.is_terminated():
            allow_only_tokens(view, self._vocab.stop_token_ids)
            return
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def rollback(self, num_tokens: int) -> None:
        if num_tokens > 0:
            self._matcher.rollback(int(num_tokens))

    def is_terminated(self) -> bool:
        return bool(self._matcher.is_terminated())

    def is_accepting(self) -> bool:
        return bool(self._matcher.is_completed())

    def jump_forward_string(self) -> str:
        if self._matcher.is_terminated():
            return ""
        return self._matcher.find_jump_forward_string()


class XGrammarCompiled(CompiledGrammar):
    backend_name = "xgrammar"

    def __init__(self, kind: str, spec: str, handle, vocab: TokenVocab):
        self.kind, self.spec, self.handle, self.vocab = kind, spec, handle, vocab

    def new_matcher(self) -> GrammarMatcher:
        return XGrammarMatcher(self)


class XGrammarBackend(GrammarBackend):
    name = "xgrammar"
    kinds = ("json_schema", "regex", "ebnf", "json")

    def __init__(self, vocab: TokenVocab, max_threads: int = 2):
        super().__init__(vocab)
        xgr = _import_xgrammar()
        # Special tokens as "" make xgrammar classify them as special (never allowed).
        encoded = [b if b is not None else b"" for b in vocab.token_bytes]
        info = xgr.TokenizerInfo(encoded, xgr.VocabType.RAW, vocab_size=vocab.vocab_size,
                                 stop_token_ids=list(vocab.stop_token_ids), add_prefix_space=False)
        self._compiler = xgr.GrammarCompiler(info, max_threads=max_threads)

    def compile(self, kind: str, spec: str) -> CompiledGrammar:
        if kind not in self.kinds:
            raise self._unsupported(kind)
        try:
            if kind == "json_schema":
                handle = self._compiler.compile_json_schema(
                    spec, any_whitespace=False, separators=(",", ":"), strict_mode=False)
            elif kind == "regex":
                handle = self._compiler.compile_regex(spec)
            elif kind == "ebnf":
                handle = self._compiler.compile_grammar(spec)
            else:
                handle = self._compiler.compile_builtin_json_grammar()
        except Exception as e:  # xgrammar raises RuntimeError/ValueError subclasses; keep the text
            raise GrammarCompileError(f"xgrammar could not compile the {kind}: "
                                      f"{type(e).__name__}: {e}") from e
        return XGrammarCompiled(kind, spec, handle, self.vocab)

