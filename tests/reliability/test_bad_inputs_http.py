"""Catalogue of bad HTTP requests (beyond the 27 of tests/server/test_errors.py): each gets a 4xx
whose message names the field and the problem, and the server serves a good request right after.
Also the exposure rules: loopback bind by default, API key on every route but /health, body limit."""
import json

import httpx
import pytest

from conftest import CONTEXT_LEN, MAX_REQUEST_BYTES
from reliability_helpers import assert_serves

pytestmark = pytest.mark.slow

GEN, CMPL, CHAT = "/generate", "/v1/completions", "/v1/chat/completions"
MSG = [{"role": "user", "content": "Hi"}]


def _gen(**sp):
    return {"text": "a", "sampling_params": {"max_new_tokens": 2, **sp}}


def _chat(**kw):
    return {"messages": MSG, "max_tokens": 2, **kw}


def _cmpl(**kw):
    return {"prompt": "a", "max_tokens": 2, **kw}


# (id, path, body (dict, or raw bytes), status, words the error message must contain)
CASES = [
    # -- the body itself
    ("invalid-utf8", GEN, b'{"text": "\xff\xfe"}', 400, ["UTF-8"]),
    ("invalid-utf8-chat", CHAT, b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}', 400, ["UTF-8"]),
    ("deeply-nested-json", GEN, b"[" * 100_000, 400, ["nested too deeply"]),
    ("json-null-body", CHAT, b"null", 400, ["JSON object"]),
    ("truncated-json-chat", CHAT, b'{"messages": [', 400, ["malformed JSON"]),
    ("nan-temperature", GEN, b'{"text": "a", "sampling_params": {"temperature": NaN}}', 400, ["temperature"]),
    # -- wrong types and unknown fields
    ("sampling-params-string", GEN, {"text": "a", "sampling_params": "greedy"}, 400, ["sampling_params"]),
    ("stream-not-bool", GEN, {"text": "a", "stream": "yes"}, 400, ["stream"]),
    ("unknown-top-level-field", GEN, {"text": "a", "temperature": 0.5}, 400, ["temperature", "unknown field"]),
    ("max-new-tokens-float", GEN, _gen(max_new_tokens=1.5), 400, ["max_new_tokens", "integer"]),
    ("seed-string", GEN, _gen(seed="abc"), 400, ["seed"]),
    ("return-logprob-string", GEN, {"text": "a", "return_logprob": "yes"}, 400, ["return_logprob"]),
    ("chat-temperature-string", CHAT, _chat(temperature="hot"), 400, ["temperature"]),
    ("chat-stream-options-unknown", CHAT, _chat(stream=True, stream_options={"bogus": 1}), 400,
     ["stream_options.bogus"]),
    ("input-ids-mixed", GEN, {"input_ids": [[1], "a"]}, 400, ["input_ids"]),
    ("completion-prompt-dict", CMPL, {"prompt": {"text": "a"}}, 400, ["prompt"]),
    # -- prompts
    ("input-ids-empty", GEN, {"input_ids": []}, 400, ["input_ids", "empty"]),
    ("input-ids-negative", GEN, {"input_ids": [-1]}, 400, ["input_ids"]),
    ("batch-with-empty-prompt", GEN, {"text": ["a", ""]}, 400, ["prompt", "empty"]),
    ("batch-sampling-mismatch", GEN, {"text": ["a", "b"], "sampling_params": [{}]}, 400, ["sampling_params"]),
    ("image-data", GEN, {"text": "a", "image_data": "http://x/y.png"}, 400, ["image_data"]),
    ("chat-image-part", CHAT, _chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400,
     ["content[0].type"]),
    ("chat-over-context", CHAT, _chat(messages=[{"role": "user", "content": "word " * 2000}]), 400,
     ["context window"]),
    ("completion-token-id-negative", CMPL, {"prompt": [-1]}, 400, ["prompt", "token ids"]),  # found by fuzzing
    ("completion-over-context", CMPL, _cmpl(prompt=[7] * (CONTEXT_LEN + 5)), 400, ["context window"]),
    # -- output length
    ("max-new-tokens-absurd", GEN, _gen(max_new_tokens=10 ** 9), 400, ["max_new_tokens", "context window"]),
    ("chat-max-tokens-absurd", CHAT, _chat(max_tokens=10 ** 12), 400, ["max_tokens", "context window"]),
    ("completion-max-tokens-negative", CMPL, _cmpl(max_tokens=-1), 400, ["max_tokens"]),
    ("min-tokens-over-max", CMPL, _cmpl(min_tokens=10), 400, ["min_tokens"]),
    # -- sampling ranges
    ("top-k-zero", GEN, _gen(top_k=0), 400, ["top_k"]),
    ("chat-top-k-negative", CHAT, _chat(top_k=-5), 400, ["top_k"]),
    ("top-p-zero", GEN, _gen(top_p=0), 400, ["top_p"]),
    ("min-p-above-one", GEN, _gen(min_p=2), 400, ["min_p"]),
    ("repetition-penalty-zero", GEN, _gen(repetition_penalty=0), 400, ["repetition_penalty"]),
    ("chat-frequency-penalty", CHAT, _chat(frequency_penalty=5), 400, ["frequency_penalty"]),
    ("chat-logit-bias", CHAT, _chat(logit_bias={"5": 1.0}), 400, ["logit_bias"]),
    # -- stops
    ("stop-list-too-long", GEN, _gen(stop=["x"] * 65), 400, ["stop", "64"]),
    ("stop-empty-string", GEN, _gen(stop=["ok", ""]), 400, ["stop"]),
    ("stop-token-ids-negative", GEN, _gen(stop_token_ids=[-3]), 400, ["stop_token_ids"]),
    # -- constraints
    ("completion-invalid-regex", CMPL, _cmpl(regex="a{2,1}"), 400, ["regex"]),
    ("json-schema-not-object", GEN, _gen(json_schema="[1, 2]"), 400, ["json_schema"]),
    ("json-schema-bad-type", GEN, _gen(json_schema='{"type": "strin"}'), 400, ["json_schema"]),
    ("json-schema-unsupported-lookbehind", GEN, _gen(json_schema='{"type": "string", "pattern": "(?<=a)b"}'),
     400, ["json_schema"]),
    ("ebnf-syntax-error", GEN, _gen(ebnf='root ::= ( "a"'), 400, ["ebnf"]),
    ("ebnf-undefined-rule", GEN, _gen(ebnf="root ::= missing_rule"), 400, ["ebnf"]),
    ("chat-response-format-type", CHAT, _chat(response_format={"type": "xml"}), 400, ["response_format.type"]),
    ("completion-two-schemas", CMPL, _cmpl(json_schema="{}", response_format={"type": "json_object"}), 400,
     ["json_schema"]),
    # -- logprobs
    ("top-logprobs-num-high", GEN, {"text": "a", "return_logprob": True, "top_logprobs_num": 100}, 400,
     ["top_logprobs_num"]),
    ("logprob-start-len-past-prompt", GEN, {"text": "a", "logprob_start_len": 1000}, 400, ["logprob_start_len"]),
    ("completion-logprobs-high", CMPL, _cmpl(logprobs=21), 400, ["logprobs"]),
    ("chat-top-logprobs-high", CHAT, _chat(logprobs=True, top_logprobs=50), 400, ["top_logprobs"]),
    # -- n
    ("generate-n-huge", GEN, _gen(n=1000), 400, ["sampling_params.n"]),
    ("chat-n-huge", CHAT, _chat(n=1000), 400, ["n"]),
    ("completion-n-negative", CMPL, _cmpl(n=-2), 400, ["n"]),
    # -- unsupported features, model names
    ("chat-tools", CHAT, _chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, ["tools"]),
    ("completion-suffix", CMPL, _cmpl(suffix="end"), 400, ["suffix"]),
    ("completion-unknown-model", CMPL, _cmpl(model="gpt-17"), 404, ["gpt-17"]),
    # -- size
    ("body-over-limit", GEN, {"text": "x" * (MAX_REQUEST_BYTES + 1)}, 413, ["max_request_bytes"]),
]


@pytest.mark.parametrize("name,path,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_request_then_good_one(http, name, path, body, status, words):
    from process_helpers import post_expecting_error  # on sys.path through reliability_helpers
    err = post_expecting_error(http, path, body, status, words)
    assert err["code"]
    assert_serves(http)


def test_bad_stream_request_errors_in_stream(http, server):
    """A grammar that fails only after queueing reaches a stream as an error event, not a 5xx."""
    resp = http.post(GEN, json={"text": "a", "stream": True, **_gen(ebnf='root ::= ( "a"')})
    assert resp.status_code == 200
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    assert events and "ebnf" in events[0]["error"]["message"]
    server.wait_idle()


def test_unknown_model_route(http):
    resp = http.get("/v1/models/gpt-17")
    assert resp.status_code == 404 and "gpt-17" in resp.json()["error"]["message"]
    assert http.get(GEN).status_code == 405


def test_catalogue_size():
    assert len(CASES) >= 40


# ---- exposure -----------------------------------------------------------------------------------

def test_binds_loopback_by_default():
    from sgl_lang.runtime.server.args import ServerArgs, parse_args
    assert ServerArgs().host == "127.0.0.1"
    _, args = parse_args([])
    assert args.host == "127.0.0.1" and args.api_key is None


def test_limits_are_flags():
    from sgl_lang.runtime.config import ConfigError
    from sgl_lang.runtime.server.args import parse_args
    _, args = parse_args(["--max-request-bytes", "4096", "--max-concurrent-requests", "3",
                          "--graceful-shutdown-timeout", "2.5"])
    assert (args.max_request_bytes, args.max_concurrent_requests, args.graceful_shutdown_timeout) == (4096, 3, 2.5)
    for bad in (["--max-request-bytes", "10"], ["--max-concurrent-requests", "0"],
                ["--graceful-shutdown-timeout", "-1"]):
        with pytest.raises(ConfigError):
            parse_args(bad)


def _all_routes(http) -> list[tuple[str, str]]:
    schema = http.get("/openapi.json").json()
    routes = []
    for path, ops in schema["paths"].items():
        for method in ops:
            routes.append((method.upper(), path.replace("{model}", "default")))
    return routes + [("GET", "/openapi.json"), ("GET", "/no/such/route")]


def test_api_key_on_every_route_but_health(http, server):
    routes = _all_routes(http)
    assert len(routes) >= 15
    bad_headers = ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Bearer {server.api_key}x"},
                   {"Authorization": f"Basic {server.api_key}"}, {"X-API-Key": "wrong-key"})
    for headers in bad_headers:
        for method, path in routes:
            if path == "/health":
                continue
            resp = httpx.request(method, server.url + path, headers=headers, json={"text": "a"}, timeout=30)
            assert resp.status_code == 401, (method, path, headers, resp.status_code)
            assert "API key" in resp.json()["error"]["message"]
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    # the X-API-Key header is accepted too; the right key opens every route
    assert httpx.get(server.url + "/v1/models", headers={"X-API-Key": server.api_key}).status_code == 200
    assert http.get("/metrics").status_code == 200
    metrics = http.get("/metrics").text
    assert 'status="401"' in metrics


def test_chunked_body_over_limit(http, server):
    def chunks():
        for _ in range(MAX_REQUEST_BYTES // 65536 + 2):
            yield b"x" * 65536
    resp = http.post(GEN, content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "max_request_bytes" in resp.json()["error"]["message"]
    assert_serves(http)
    server.wait_idle()
