"""Grammar-constrained decoding: backend -> compiled grammar -> matcher (see base.py)."""
from .base import (GRAMMAR_KINDS, CompiledGrammar, GrammarBackend, GrammarBackendMissing,
                   GrammarCompileError, GrammarError, GrammarMatcher, allow_only_tokens)
from .registry import AUTO_ORDER, SUPPORTED_BACKENDS, GrammarRegistry, validate_spec
from .token_vocab import TokenizerNotSupported, TokenVocab
from .verified_grammar import VerifiedGrammar

__all__ = [
    "GRAMMAR_KINDS", "CompiledGrammar", "GrammarBackend", "GrammarBackendMissing",
    "GrammarCompileError", "GrammarError", "GrammarMatcher", "allow_only_tokens",
    "AUTO_ORDER", "SUPPORTED_BACKENDS", "GrammarRegistry", "validate_spec",
    "TokenizerNotSupported", "TokenVocab", "VerifiedGrammar",
]
