"""ExponentMatcher on a tiny synthetic vocabulary: two matchers in lockstep, a token that writes an
exponent hands the lead to the fallback, rollback across that point returns to the primary."""
import pytest
import torch

from sgl_lang.runtime.grammar import GrammarRegistry, TokenVocab
from sgl_lang.runtime.grammar.exponent_grammar import ExponentGrammar, exponent_token_mask

pytest.importorskip("llguidance")

# id 0 special, id 1 EOS, then digits, an exponent marker and merged tokens
TOKENS = [None, None, b"1", b"2", b"9", b"e", b"5e", b"e-", b"x", b"12"]
ONE, TWO, NINE, E, FIVE_E, E_MINUS, X, TWELVE = range(2, 10)


@pytest.fixture(scope="module")
def grammar():
    vocab = TokenVocab.from_tokens(TOKENS, stop_token_ids=[1])
    reg = GrammarRegistry(None, len(TOKENS), backend="llguidance", vocab=vocab)
    primary = reg.compile("regex", "[12]{1,2}")  # "guided": only 1s and 2s, at most two digits
    fallback = reg.compile("regex", "[0-9]+(e-?[0-9]+)?x?")  # its superset, with exponents
    yield ExponentGrammar(primary, fallback, exponent_token_mask(vocab))
    reg.close()


def allowed(matcher):
    bitmask = torch.zeros(1, 1, dtype=torch.int32)
    matcher.fill_bitmask(bitmask, 0)
    return {t for t in range(len(TOKENS)) if (int(bitmask[0, 0]) >> t) & 1}


def test_exponent_mask_marks_number_fragments_with_an_exponent():
    mask = exponent_token_mask(TokenVocab.from_tokens(TOKENS, stop_token_ids=[1]))
    bits = {t for t in range(len(TOKENS)) if (int(mask[0]) >> t) & 1}
    assert bits == {E, FIVE_E, E_MINUS}


def test_lockstep_allows_primary_tokens_plus_exponent_tokens(grammar):
    m = grammar.new_matcher()
    assert m.accept_token(ONE)
    # the primary allows one more 1 or 2, or the end; the exponent tokens come from the fallback
    assert allowed(m) == {ONE, TWO, 1, E, FIVE_E, E_MINUS}
    assert not m.accept_token(NINE) and not m.accept_token(X)  # neither guided nor an exponent
    assert m.accept_token(E_MINUS)  # the fallback leads from here
    assert NINE in allowed(m) and m.accept_token(NINE) and m.accept_token(X)
    assert m.is_accepting() and allowed(m) == {1}


def test_rollback_across_the_exponent_returns_to_guidance(grammar):
    m = grammar.new_matcher()
    for t in (ONE, E, TWO, NINE):
        assert m.accept_token(t)
    m.rollback(2)  # still after the exponent: the fallback leads
    assert NINE in allowed(m)
    m.rollback(1)  # undoes "e": back in lockstep after "1"
    assert NINE not in allowed(m) and allowed(m) == {ONE, TWO, 1, E, FIVE_E, E_MINUS}
    assert m.accept_token(TWO) and m.is_accepting()
    m.rollback(2)  # back to the start, in lockstep
    assert m.accept_token(TWELVE) and allowed(m) == {1, E, FIVE_E, E_MINUS}
    assert m.accept_token(1) and m.is_terminated()
