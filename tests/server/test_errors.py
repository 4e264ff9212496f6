"""Bad requests each get a 4xx whose message names the problem, and the server keeps serving."""
import json

import pytest

from conftest import API_KEY, MAX_REQUEST_BYTES

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "Hi"}]


def _chat(**kw):
    return {"model": "default", "messages": MSG, "max_tokens": 2, **kw}


BAD_REQUESTS = [
    # (id, method, path, body or raw bytes, status, words the message must contain)
    ("malformed-json", "/generate", b'{"text": "hi", ', 400, ["malformed JSON"]),
    ("not-an-object", "/generate", b'[1, 2]', 400, ["JSON object"]),
    ("empty-body", "/v1/completions", b"", 400, ["empty"]),
    ("text-wrong-type", "/generate", {"text": 5}, 400, ["text"]),
    ("empty-prompt", "/generate", {"text": ""}, 400, ["prompt", "empty"]),
    ("no-prompt", "/generate", {"sampling_params": {}}, 400, ["text", "input_ids"]),
    ("unknown-sampling-field", "/generate", {"text": "a", "sampling_params": {"temprature": 1}}, 400, ["temprature"]),
    ("bad-temperature", "/generate", {"text": "a", "sampling_params": {"temperature": -0.5}}, 400, ["temperature"]),
    ("bad-top-p", "/generate", {"text": "a", "sampling_params": {"top_p": 1.5}}, 400, ["top_p"]),
    ("negative-max-new-tokens", "/generate", {"text": "a", "sampling_params": {"max_new_tokens": -1}}, 400,
     ["max_new_tokens"]),
    ("token-id-out-of-vocab", "/generate", {"input_ids": [10 ** 7]}, 400, ["input_ids"]),
    ("invalid-regex", "/generate", {"text": "a", "sampling_params": {"regex": "[a-"}}, 400, ["regex"]),
    ("invalid-json-schema", "/generate", {"text": "a", "sampling_params": {"json_schema": "{not json"}}, 400,
     ["json_schema"]),
    ("two-constraints", "/generate", {"text": "a", "sampling_params": {"regex": "a", "ebnf": "root ::= \"a\""}},
     400, ["mutually exclusive"]),
    ("prompt-over-context", "/generate", {"input_ids": [5] * 9000}, 400, ["context window"]),
    ("chat-wrong-type", CHAT, _chat(max_tokens="ten"), 400, ["max_tokens"]),
    ("chat-negative-max-tokens", CHAT, _chat(max_tokens=-3), 400, ["max_tokens"]),
    ("chat-bad-role", CHAT, {"model": "default", "messages": [{"role": "wizard", "content": "x"}]}, 400,
     ["messages[0].role"]),
    ("chat-empty-messages", CHAT, {"model": "default", "messages": []}, 400, ["messages"]),
    ("chat-bad-temperature", CHAT, _chat(temperature=-1), 400, ["temperature"]),
    ("chat-invalid-regex", CHAT, _chat(regex="(unclosed"), 400, ["regex"]),
    ("chat-schema-missing", CHAT, _chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
     400, ["schema"]),
    ("chat-unknown-field", CHAT, _chat(bogus_option=1), 400, ["bogus_option"]),
    ("unknown-model", CHAT, _chat(model="gpt-17"), 404, ["gpt-17"]),
    ("completion-empty-prompt", "/v1/completions", {"model": "default", "prompt": ""}, 400, ["prompt"]),
    ("completion-bad-n", "/v1/completions", {"model": "default", "prompt": "a", "n": 0}, 400, ["n"]),
    ("unknown-route", "/no/such/route", {"x": 1}, 404, ["/no/such/route"]),
]


@pytest.mark.parametrize("name,path,body,status,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request(http, name, path, body, status, words):
    from process_helpers import post_expecting_error
    post_expecting_error(http, path, body, status, words)


def test_auth_and_size_limits(http, server_url):
    import httpx
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = httpx.post(server_url + "/generate", json={"text": "a"}, headers=headers)
        assert resp.status_code == 401 and "API key" in resp.json()["error"]["message"]
    assert httpx.get(server_url + "/v1/models").status_code == 401
    assert httpx.get(server_url + "/metrics").status_code == 401
    huge = {"text": "x" * (MAX_REQUEST_BYTES + 10)}
    resp = http.post("/generate", json=huge)
    assert resp.status_code == 413 and "max_request_bytes" in resp.json()["error"]["message"]

    def chunked():  # no Content-Length: the limit is enforced while reading
        yield json.dumps(huge).encode()
    resp = http.post("/generate", content=chunked(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413


def test_server_still_serves_after_bad_requests(http):
    for _, path, body, _, _ in BAD_REQUESTS[:6]:
        http.post(path, json=body) if not isinstance(body, bytes) else http.post(path, content=body)
    ok = http.post("/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 2}})
    assert ok.status_code == 200 and ok.json()["meta_info"]["completion_tokens"] >= 1
    chat = http.post(CHAT, json=_chat())
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert API_KEY  # the session server runs with a key; every call above sent it
