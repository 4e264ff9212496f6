"""Grammar logic on a tiny synthetic vocabulary (no model, no tokenizer files)."""
import pytest
import torch

from sgl_lang.runtime.grammar import GrammarRegistry, TokenVocab

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
