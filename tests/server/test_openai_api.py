"""The real `openai` client against our /v1 routes: sync, async, streaming, n, logprobs, echo,
json_schema response_format, regex extra field, usage with cached tokens."""
import asyncio
import json

import pytest

from conftest import API_KEY

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server_url):
    return openai.OpenAI(base_url=server_url + "/v1", api_key=API_KEY)


def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_sync_with_logprobs_and_usage(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3, n=2)
    assert len(r.choices) == 2 and r.choices[0].message.content == r.choices[1].message.content
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens // 2 and all(len(t.top_logprobs) == 3 for t in lp)
    assert r.choices[0].finish_reason in ("stop", "length")
    again = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=2, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_chat_stop_and_stream(client):
    whole = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    stopped = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=10, temperature=0, stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content


def test_chat_json_schema_and_regex(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                               "population_millions": {"type": "integer", "minimum": 0, "maximum": 1000}},
              "required": ["city", "population_millions"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], max_tokens=80, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"city", "population_millions"} and isinstance(value["population_millions"], int)
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=10, temperature=0,
                                       extra_body={"regex": "(Paris|Lyon)"})
    assert r.choices[0].message.content in ("Paris", "Lyon")


def test_completions_logprobs_echo_and_stream(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and all(len(t) == 2 for t in lp.top_logprobs)
    echo = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=0, echo=True, logprobs=0)
    assert echo.choices[0].text == "1, 2, 3," and echo.choices[0].logprobs.token_logprobs[0] is None
    batch = client.completions.create(model=MODEL, prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, temperature=0)
    assert batch.choices[0].text == r.choices[0].text and len(batch.choices) == 2
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text
    constrained = client.completions.create(model=MODEL, prompt="Phone: ", max_tokens=12, temperature=0,
                                            extra_body={"regex": "[0-9]{3}-[0-9]{4}"})
    assert len(constrained.choices[0].text) == 8 and constrained.choices[0].text[3] == "-"


def test_async_client_in_parallel(server_url):
    async def main():
        client = openai.AsyncOpenAI(base_url=server_url + "/v1", api_key=API_KEY)
        calls = [client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0,
                                                messages=[{"role": "user", "content": f"Say {i}"}]) for i in range(4)]
        results = await asyncio.gather(*calls)
        stream = await client.chat.completions.create(model=MODEL, messages=Q, max_tokens=4, temperature=0,
                                                      stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return results, parts

    results, parts = asyncio.run(main())
    assert all(r.choices[0].message.content for r in results) and "".join(parts)
