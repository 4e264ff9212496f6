"""ExponentGrammar: a range-guided JSON grammar that also takes numbers in exponent notation.

The libraries compile numeric bounds into digit-by-digit rules with no exponent form, so `1e-06`
under `minimum: 0` is refused although it is valid (number_bounds.py). Dropping the bounds would
accept it, but would also let a model write `-5` under `minimum: 0` and only learn at the end
that the output is invalid. So two matchers run in lockstep:

    primary   the schema as compiled (bounds guide every plain-digit number)
    fallback  the same schema without numeric bounds (a superset of primary's language)

A token is allowed when the primary allows it, or when the fallback allows it and it can write an
exponent (its text is a number fragment with `e`/`E`: "e", "e-", "5e", "E+3"...). A token only the
fallback accepts makes the fallback the one followed from then on (until a rollback undoes that
token). The schema check before the stop token (VerifiedGrammar, which wraps this) enforces the
bounds on the whole output, so a number written with an exponent is still checked.

Cost, while in lockstep: two accepts and two mask fills per token; built only for schemas that
have numeric bounds.
"""
from __future__ import annotations

import re
from typing import Optional

import torch

from .base import CompiledGrammar, GrammarMatcher, allow_only_tokens, check_bitmask_row
from .token_vocab import TokenVocab

_EXPONENT_FRAGMENT = re.compile(rb"[0-9]*\.?[0-9]*[eE][+-]?[0-9]*")


def exponent_token_mask(vocab: TokenVocab) -> torch.Tensor:
    """[ceil(vocab/32)] int32 packed: bit t set when token t's text is a number fragment with an exponent."""
    mask = torch.zeros((vocab.vocab_size + 31) // 32, dtype=torch.int32)
    allow_only_tokens(mask, [t for t, text in enumerate(vocab.token_bytes)
                             if text and t not in vocab.stop_token_ids and _EXPONENT_FRAGMENT.fullmatch(text)])
    return mask


class ExponentGrammar(CompiledGrammar):
    def __init__(self, primary: CompiledGrammar, fallback: CompiledGrammar, exponent_mask: torch.Tensor):
        self.primary, self.fallback, self.exponent_mask = primary, fallback, exponent_mask
        self.kind, self.spec, self.backend_name = primary.kind, primary.spec, primary.backend_name
        self.vocab = primary.vocab
        self.is_relaxed = getattr(primary, "is_relaxed", False) or getattr(fallback, "is_relaxed", False)

    def new_matcher(self) -> GrammarMatcher:
        return ExponentMatcher(self)


class ExponentMatcher(GrammarMatcher):
    def __init__(self, grammar: ExponentGrammar):
        self._primary = grammar.primary.new_matcher()
        self._fallback: Optional[GrammarMatcher] = grammar.fallback.new_matcher()
        self._mask = grammar.exponent_mask  # [W] int32
        self._scratch = torch.zeros(1, grammar.exponent_mask.numel(), dtype=torch.int32)
        self._num_tokens = 0
        self._diverged_at: Optional[int] = None  # tokens accepted in lockstep before the fallback led

    def _active(self) -> GrammarMatcher:
        return self._fallback if self._diverged_at is not None else self._primary

    def _can_write_exponent(self, token_id: int) -> bool:
        word, bit = divmod(token_id, 32)
        return word < self._mask.numel() and (int(self._mask[word]) >> bit) & 1 == 1

    def accept_token(self, token_id: int) -> bool:
        if self._diverged_at is not None:
            ok = self._fallback.accept_token(token_id)
        elif self._primary.accept_token(token_id):
            if self._fallback is not None and not self._fallback.accept_token(token_id):
                self._fallback = None  # not the superset it should be here: primary alone from now
            ok = True
        else:
            ok = (self._fallback is not None and self._can_write_exponent(token_id)
                  and self._fallback.accept_token(token_id))
            if ok:
                self._diverged_at = self._num_tokens
        self._num_tokens += ok
        return ok

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        if self._diverged_at is not None:
            self._fallback.fill_bitmask(bitmask, row)
            return
        self._primary.fill_bitmask(bitmask, row)
        if self._fallback is None or self._fallback.is_terminated():
            return
        self._fallback.fill_bitmask(self._scratch, 0)
        view = check_bitmask_row(bitmask, row, self._mask.numel() * 32)  # [W] int32
        view |= self._scratch[0] & self._mask

    def rollback(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        if self._diverged_at is not None:
            self._fallback.rollback(num_tokens)
            back_in_lockstep = self._num_tokens - num_tokens - self._diverged_at
            if back_in_lockstep <= 0:  # undid the token only the fallback took
                self._primary.rollback(-back_in_lockstep)
                self._diverged_at = None
        else:
            self._primary.rollback(num_tokens)
            if self._fallback is not None:
                self._fallback.rollback(num_tokens)
        self._num_tokens -= num_tokens

    def is_terminated(self) -> bool:
        return self._active().is_terminated()

    def is_accepting(self) -> bool:
        return self._active().is_accepting()

    def jump_forward_string(self) -> str:
        return self._active().jump_forward_string()

    def error(self) -> str:
        return self._active().error()
