"""Grammar logic on a tiny synthetic vocabulary (no model, no tokenizer files)."""
import pytest
import torch

from sgl_lang.runtime.grammar import CompiledGrammar, GrammarMatcher, GrammarRegistry, TokenVocab

# id 0 special, id 1 EOS, then single characters and a few merges
TOKENS = [None, None, b"a", b"b", b"ab", b"-", b"0", b"1", b"01", b"x"]
A, B, AB, DASH, ZERO, ONE, ZERO_ONE, X = range(2, 10)


@pytest.fixture(scope="module", params=["xgrammar", "outlines", "llguidance"])
def registry(request):
    pytest.importorskip({"outlines": "outlines_core"}.get(request.param, request.param))
    vocab = TokenVocab.from_tokens(TOKENS, stop_token_ids=[1])
    reg = GrammarRegistry(None, len(TOKENS), backend=request.param, vocab=vocab)
    yield reg
    reg.close()


def allowed(matcher):
    bitmask = torch.zeros(1, 1, dtype=torch.int32)
    matcher.fill_bitmask(bitmask, 0)
    return {t for t in range(len(TOKENS)) if (int(bitmask[0, 0]) >> t) & 1}


def test_regex_masks_follow_the_automaton(registry):
    matcher = registry.compile("regex", "(ab)+-[01]{2}").new_matcher()
    # llguidance may drop "a" where only the non-canonical split "a"+"b" could follow
    assert {AB} <= allowed(matcher) <= {A, AB}
    assert matcher.accept_token(AB)
    assert {AB, DASH} <= allowed(matcher) <= {A, AB, DASH}
    assert not matcher.accept_token(X) and not matcher.accept_token(1)
    assert matcher.accept_token(DASH)
    assert allowed(matcher) == {ZERO, ONE, ZERO_ONE}
    assert matcher.accept_token(ZERO_ONE) and matcher.is_accepting()
    assert allowed(matcher) == {1}
    assert matcher.accept_token(1) and matcher.is_terminated()
    matcher.rollback(2)
    assert not matcher.is_terminated() and allowed(matcher) == {ZERO, ONE, ZERO_ONE}


def test_forced_text(registry):
    matcher = registry.compile("regex", "ab-[01]").new_matcher()
    assert matcher.jump_forward_string() == "ab-"


def test_remote_ref_is_refused_not_silently_ignored():
    import json as _json
    import pytest as _pytest
    from sgl_lang.runtime.grammar import GrammarCompileError, validate_spec
    local = {"$defs": {"n": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert _json.loads(validate_spec("json_schema", local)) == local
    remote = {"type": "object", "properties": {"a": {"items": [{"$ref": "https://example.com/s.json"}]}}}
    with _pytest.raises(GrammarCompileError, match="https://example.com/s.json"):
        validate_spec("json_schema", remote)


def test_bitmask_row_helpers_keep_int32_signs_at_bit_31():
    from sgl_lang.kernels.bitmask import unpack_bitmask
    from sgl_lang.runtime.grammar.base import allow_only_tokens, allow_tokens, ban_tokens
    row = torch.zeros(2, dtype=torch.int32)  # tokens 0..63; bits 31 and 63 are the sign bits
    allow_only_tokens(row, [0, 31, 63])
    assert row.tolist() == [-(1 << 31) | 1, -(1 << 31)]
    allow_tokens(row, [31, 32])  # 31 again: no change
    assert set(unpack_bitmask(row[None], 64)[0].nonzero().flatten().tolist()) == {0, 31, 32, 63}
    ban_tokens(row, [31, 63, 5])  # 5 was not set: no change
    assert row.tolist() == [1, 1]
    row.fill_(-1)
    ban_tokens(row, [31, 63])
    assert row.tolist() == [0x7FFFFFFF, 0x7FFFFFFF]


# 64 tokens: ids 0..9 as TOKENS, 31 an extra stop token (a sign bit), the rest filler
TOKENS_64 = TOKENS + [b"f%d" % i if i != 31 else None for i in range(len(TOKENS), 64)]


@pytest.mark.parametrize("backend", ["xgrammar", "outlines", "llguidance"])
def test_extra_stop_token_on_bit_31_is_allowed_at_the_end(backend):
    pytest.importorskip({"outlines": "outlines_core"}.get(backend, backend))
    vocab = TokenVocab.from_tokens(TOKENS_64, stop_token_ids=[1, 31])
    reg = GrammarRegistry(None, len(TOKENS_64), backend=backend, vocab=vocab)
    try:
        matcher = reg.compile("regex", "ab").new_matcher()
        assert matcher.accept_token(AB)
        bitmask = torch.zeros(1, 2, dtype=torch.int32)
        matcher.fill_bitmask(bitmask, 0)
        assert bitmask[0].tolist() == [-(1 << 31) | (1 << 1), 0]  # ids 1 and 31
    finally:
        reg.close()


def test_verified_grammar_bans_stop_tokens_on_bit_31_until_the_schema_holds():
    pytest.importorskip("jsonschema")
    from sgl_lang.runtime.grammar import VerifiedGrammar
    vocab = TokenVocab.from_tokens(TOKENS_64, stop_token_ids=[1, 31])

    class AllowAll(GrammarMatcher):  # an inner grammar that allows every token and may end anywhere
        def accept_token(self, token_id): return True
        def fill_bitmask(self, bitmask, row): bitmask[row].fill_(-1)
        def rollback(self, num_tokens): pass
        def is_terminated(self): return False
        def is_accepting(self): return True
        def jump_forward_string(self): return ""
        def error(self): return ""

    class Inner(CompiledGrammar):
        kind, spec, backend_name, vocab = "json_schema", "", "allow-all", None
        def new_matcher(self): return AllowAll()

    inner = Inner()
    inner.vocab = vocab
    matcher = VerifiedGrammar(inner, '{"type": "integer"}').new_matcher()
    bitmask = torch.zeros(1, 2, dtype=torch.int32)
    assert matcher.accept_token(ONE)
    matcher.fill_bitmask(bitmask, 0)
    assert bitmask[0].tolist() == [-1, -1]  # "1" is an integer: the stop tokens stay allowed
    assert matcher.accept_token(A)
    matcher.fill_bitmask(bitmask, 0)
    assert bitmask[0].tolist() == [0x7FFFFFFF & ~(1 << 1), -1]  # "1a" is not: ids 1 and 31 banned
