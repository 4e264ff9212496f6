"""Catalogue of bad in-process calls: `Engine.generate` raises a named exception whose message
names the field, and the frontend (`sgl_lang`) raises its named errors; after each, a good
request still works and the KV accounting is at baseline."""
import pytest

import sgl_lang as sgl
from reliability_helpers import assert_engine_idle
from sgl_lang.runtime.errors import InvalidRequest, InvalidSamplingParams

pytestmark = pytest.mark.slow

GOOD = {"max_new_tokens": 2, "temperature": 0}


def _call(**kw):
    """generate(prompt="Hi", sampling_params=GOOD) with `kw` overriding."""
    args = {"prompt": "Hi", "sampling_params": dict(GOOD)}
    sp = kw.pop("sp", None)
    if sp is not None:
        args["sampling_params"] = {**GOOD, **sp} if isinstance(sp, dict) else sp
    args.update(kw)
    return args


# (id, generate kwargs, exception, words the message must contain)
ENGINE_CASES = [
    ("empty-prompt", _call(prompt=""), InvalidRequest, ["prompt", "empty"]),
    ("no-prompt", _call(prompt=None), InvalidRequest, ["prompt", "input_ids"]),
    ("prompt-and-ids", _call(input_ids=[1, 2]), InvalidRequest, ["exactly one"]),
    ("prompt-wrong-type", _call(prompt=3.5), InvalidRequest, ["prompt"]),
    ("ids-out-of-vocab", _call(prompt=None, input_ids=[10 ** 8]), InvalidRequest, ["input_ids"]),
    ("ids-negative", _call(prompt=None, input_ids=[5, -1, 7]), InvalidRequest, ["input_ids", "-1"]),
    ("ids-bool", _call(prompt=None, input_ids=[5, True]), InvalidRequest, ["token ids"]),
    ("ids-float", _call(prompt=None, input_ids=[5, 2.0]), InvalidRequest, ["token ids"]),
    ("prompt-over-context", _call(prompt=None, input_ids=[7] * 300), InvalidRequest, ["context window"]),
    ("sampling-params-string", _call(sp="greedy"), InvalidSamplingParams, ["sampling_params"]),
    ("unknown-sampling-field", _call(sp={"temprature": 0.1}), InvalidSamplingParams, ["temprature"]),
    ("negative-max-new-tokens", _call(sp={"max_new_tokens": -1}), InvalidSamplingParams, ["max_new_tokens"]),
    ("bool-max-new-tokens", _call(sp={"max_new_tokens": True}), InvalidSamplingParams, ["max_new_tokens"]),
    ("negative-temperature", _call(sp={"temperature": -1}), InvalidSamplingParams, ["temperature"]),
    ("top-p-zero", _call(sp={"top_p": 0.0}), InvalidSamplingParams, ["top_p"]),
    ("top-k-zero", _call(sp={"top_k": 0}), InvalidSamplingParams, ["top_k"]),
    ("min-p-negative", _call(sp={"min_p": -0.1}), InvalidSamplingParams, ["min_p"]),
    ("stop-too-many", _call(sp={"stop": [str(i) for i in range(65)]}), InvalidSamplingParams, ["stop"]),
    ("stop-not-list", _call(sp={"stop": 5}), InvalidSamplingParams, ["stop"]),
    ("stop-token-ids-bad", _call(sp={"stop_token_ids": ["a"]}), InvalidSamplingParams, ["stop_token_ids"]),
    ("two-grammars", _call(sp={"regex": "a", "json_schema": "{}"}), InvalidSamplingParams, ["mutually exclusive"]),
    ("invalid-regex", _call(sp={"regex": "(a"}), InvalidRequest, ["regex"]),
    ("json-schema-not-json", _call(sp={"json_schema": "{oops"}), InvalidRequest, ["json_schema"]),
    ("top-logprobs-high", _call(top_logprobs_num=21, return_logprob=True), InvalidRequest, ["top_logprobs_num"]),
    ("logprob-start-past-prompt", _call(logprob_start_len=99), InvalidRequest, ["logprob_start_len"]),
    ("stream-batch", _call(prompt=["a", "b"], stream=True), InvalidRequest, ["stream"]),
]


@pytest.mark.parametrize("name,kwargs,exc,words", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_engine_bad_call_then_good_one(engine, name, kwargs, exc, words):
    with pytest.raises(exc) as info:
        engine.generate(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    out = engine.generate("Hello", GOOD)
    assert out["meta_info"]["completion_tokens"] >= 1 and "error" not in out
    assert_engine_idle(engine)


def test_engine_grammar_failing_late_fails_only_its_request(engine):
    """An EBNF that passes validation but fails to compile: its output carries `error`; its
    neighbours in the same batch finish normally."""
    outs = engine.generate(["a", "b", "c"], [GOOD, {**GOOD, "ebnf": 'root ::= ( "a"'}, GOOD])
    assert "error" not in outs[0] and "error" not in outs[2]
    assert "grammar" in outs[1]["error"] and outs[1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert_engine_idle(engine)


def test_engine_refuses_absurd_max_new_tokens(engine):
    from sgl_lang.runtime.sampling_params import SamplingParams
    with pytest.raises(InvalidRequest, match="max_new_tokens"):
        engine.make_request("Hi", SamplingParams(max_new_tokens=10 ** 9))


# ---- the frontend -------------------------------------------------------------------------------

def _select_no_choices():
    sgl.select("x", choices=[])


def _select_choices_str():
    sgl.select("x", choices="yes")


def _select_choice_not_str():
    sgl.select("x", choices=["a", 3])


def _gen_name_not_str():
    sgl.gen(5)


def _gen_choices_and_regex():
    sgl.gen("x", choices=["a"], regex="a")


def _image():
    sgl.image("cat.png")


def _program_first_arg():
    sgl.function(lambda t: None)


FRONTEND_CASES = [
    ("select-no-choices", _select_no_choices, sgl.InvalidArgument, "empty"),
    ("select-choices-str", _select_choices_str, sgl.InvalidArgument, "list of str"),
    ("select-choice-not-str", _select_choice_not_str, sgl.InvalidArgument, "str"),
    ("gen-name-not-str", _gen_name_not_str, sgl.InvalidArgument, "name"),
    ("gen-choices-and-regex", _gen_choices_and_regex, sgl.InvalidArgument, "choices"),
    ("image-unsupported", _image, sgl.UnsupportedFeature, "image"),
    ("program-first-arg-not-s", _program_first_arg, sgl.InvalidArgument, "'s'"),
]


@pytest.mark.parametrize("name,fn,exc,word", FRONTEND_CASES, ids=[c[0] for c in FRONTEND_CASES])
def test_frontend_bad_construct(name, fn, exc, word):
    with pytest.raises(exc) as info:
        fn()
    assert word in str(info.value)


@pytest.fixture(scope="module")
def endpoint(server):
    return sgl.RuntimeEndpoint(server.url, api_key=server.api_key)


@sgl.function
def _raises(s):
    s += "Q: 1+1?\nA:" + sgl.gen("a", max_tokens=2)
    raise ZeroDivisionError("boom inside the program")


@sgl.function
def _fork_zero(s):
    s += "Hi"
    s.fork(0)


@sgl.function
def _bad_gen_over_http(s):
    s += "Hi" + sgl.gen("a", max_tokens=10 ** 6)  # valid for the frontend, beyond the server's window


@sgl.function
def _good(s):
    s += "Q: name a color.\nA:" + sgl.gen("a", max_tokens=2, temperature=0)


@pytest.mark.parametrize("program,exc,word", [
    (_raises, ZeroDivisionError, "boom"),
    (_fork_zero, sgl.InvalidArgument, "fork size"),
], ids=["raise-inside-function", "fork-0"])
def test_program_error_then_good_program(endpoint, server, program, exc, word):
    with pytest.raises(exc, match=word):
        program.run(backend=endpoint)
    with pytest.raises(sgl.ProgramError) as info:  # run_batch wraps it, naming the item
        program.run_batch([{}, {}], backend=endpoint)
    assert isinstance(info.value.cause, exc) and "item" in str(info.value)
    assert _good.run(backend=endpoint)["a"] is not None
    server.wait_idle()


def test_backend_error_names_the_field(endpoint, server):
    state = _bad_gen_over_http.run(backend=endpoint)
    with pytest.raises(sgl.ProgramError) as info:
        state["a"]
    assert isinstance(info.value.cause, sgl.BackendError) and "max_new_tokens" in str(info.value.cause)
    assert _good.run(backend=endpoint)["a"] is not None


def test_bad_api_key_is_backend_error(server):
    with pytest.raises(sgl.BackendError) as info:
        _good.run(backend=sgl.RuntimeEndpoint(server.url, api_key="wrong"))["a"]
    assert "401" in str(info.value) and "API key" in str(info.value)


def test_no_backend(monkeypatch):
    monkeypatch.setattr(sgl.global_config, "default_backend", None, raising=False)
    with pytest.raises((sgl.NoBackendError, sgl.ProgramError)):
        _good.run()
