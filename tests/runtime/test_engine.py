"""The engine end to end on the real default model (SmolLM2-135M-Instruct)."""
import threading

import pytest

from sgl_lang.runtime.engine import Engine
from sgl_lang.runtime.errors import InvalidRequest, InvalidSamplingParams


pytestmark = pytest.mark.slow
GREEDY = {"temperature": 0, "max_new_tokens": 12}


@pytest.fixture(autouse=True)
def _integrity(engine_fp32):
    yield
    engine_fp32.check_integrity()
    stats = engine_fp32.get_stats()
    assert stats["num_running_reqs"] == 0 and stats["num_waiting_reqs"] == 0
    # nothing is owned outside the cache once every request finished
    assert stats["kv_pool_free"] + stats["cached_tokens"] == stats["kv_pool_total"]


def test_greedy_answer_is_sensible(engine_fp32, chat):
    out = engine_fp32.generate(chat(engine_fp32.tokenizer, "What is the capital of France?"),
                               {"temperature": 0, "max_new_tokens": 24})
    assert "Paris" in out["text"]
    m = out["meta_info"]
    assert m["finish_reason"]["type"] == "stop" and m["completion_tokens"] == len(out["output_ids"])
    assert m["prompt_tokens"] > 10 and m["e2e_latency"] > 0


def test_batch_equals_single(engine_fp32, chat):
    tok = engine_fp32.tokenizer
    prompts = [chat(tok, q) for q in ("Name a color.", "What is 2+2?", "Say hello.")]
    singles = [engine_fp32.generate(p, GREEDY)["text"] for p in prompts]
    engine_fp32.flush_cache()
    batch = engine_fp32.generate(prompts * 2, GREEDY)
    assert [b["text"] for b in batch] == singles * 2


def test_radix_cache_hit_and_flush(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "Tell me about cats.")
    assert engine_fp32.flush_cache()
    first = engine_fp32.generate(p, GREEDY)
    second = engine_fp32.generate(p, GREEDY)
    assert first["meta_info"]["cached_tokens"] == 0
    assert second["meta_info"]["cached_tokens"] == second["meta_info"]["prompt_tokens"] - 1
    assert second["text"] == first["text"]
    assert engine_fp32.flush_cache()
    assert engine_fp32.generate(p, GREEDY)["meta_info"]["cached_tokens"] == 0


def test_stop_string_trimmed_and_stop_ids(engine_fp32):
    p = "Count: 1, 2, 3, 4, 5, 6,"
    out = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 20, "stop": [" 9"]})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 9"}
    assert out["text"] == " 7, 8,"
    ids = engine_fp32.tokenizer.encode(" 7")
    out = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 20, "stop_token_ids": [ids[-1]]})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ids[-1]}


def test_max_and_min_new_tokens_and_ignore_eos(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "What is the capital of France?")
    out = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 3})
    assert out["meta_info"]["completion_tokens"] == 3
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    short = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 40})
    n = short["meta_info"]["completion_tokens"]
    assert short["meta_info"]["finish_reason"]["type"] == "stop" and n < 40
    longer = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 40, "min_new_tokens": n + 5})
    assert longer["meta_info"]["completion_tokens"] >= n + 5
    forced = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": n + 8, "ignore_eos": True})
    assert forced["meta_info"]["completion_tokens"] == n + 8


def test_chunked_prefill_matches_unchunked(engine_fp32, chat):
    long_q = "Summarize: " + " ".join(f"item {i} is {i * 7 % 13}." for i in range(40))
    p = chat(engine_fp32.tokenizer, long_q)
    ref = engine_fp32.generate(p, GREEDY)
    eng = Engine(dtype="float32", chunked_prefill_size=32, max_total_tokens=2048, disable_radix_cache=True)
    try:
        out = eng.generate(p, GREEDY)
        assert out["text"] == ref["text"]
        assert eng.num_steps >= out["meta_info"]["prompt_tokens"] // 32
        eng.check_integrity()
    finally:
        eng.shutdown()


def test_pool_exhaustion_retracts_and_finishes(engine_fp32, chat):
    tok = engine_fp32.tokenizer
    prompts = [chat(tok, f"Write a long story about the number {i}.") for i in range(6)]
    params = {"temperature": 0, "max_new_tokens": 40, "ignore_eos": True}
    ref = [engine_fp32.generate(p, params)["text"] for p in prompts]
    # ~6 * (40 prompt + 40 new) tokens do not fit in 256 slots at once
    eng = Engine(dtype="float32", max_total_tokens=256, max_running_requests=6)
    try:
        outs = eng.generate(prompts, params)
        assert [o["text"] for o in outs] == ref
        assert eng.get_stats()["num_retractions"] > 0
        eng.check_integrity()
    finally:
        eng.shutdown()


def test_abort_running_stream_frees_slots(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "Write a very long poem.")
    it = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 200, "ignore_eos": True}, stream=True)
    chunks = [next(it) for _ in range(3)]
    it.close()  # closing the stream aborts the request
    assert not chunks[-1]["meta_info"]["finish_reason"]
    for _ in range(100):
        if engine_fp32.get_stats()["num_running_reqs"] == 0:
            break
        threading.Event().wait(0.05)


def test_streaming_text_is_cumulative(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "List three fruits.")
    full = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 16})
    chunks = list(engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 16}, stream=True))
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1] == full["text"] and chunks[-1]["meta_info"]["finish_reason"]


def test_logprobs_consistent_between_output_and_input(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "Name a planet.")
    out = engine_fp32.generate(p, {"temperature": 0, "max_new_tokens": 6}, return_logprob=True, top_logprobs_num=3)
    m = out["meta_info"]
    out_lps = m["output_token_logprobs"]
    assert [t for _, t, _ in out_lps] == out["output_ids"]
    for (lp, tok, _), top in zip(out_lps, m["output_top_logprobs"]):
        assert top[0][1] == tok and abs(top[0][0] - lp) < 1e-4  # greedy: the chosen token is the top-1
        assert top[0][0] >= top[1][0] >= top[2][0]
    prompt_ids = engine_fp32.tokenizer.encode(p)
    full = prompt_ids + out["output_ids"]
    start = len(prompt_ids) - 1
    scored = engine_fp32.generate(input_ids=full, sampling_params={"max_new_tokens": 0},
                                  logprob_start_len=start, return_logprob=True)
    in_lps = scored["meta_info"]["input_token_logprobs"]
    assert len(in_lps) == len(full) - start and in_lps[0][0] is None
    assert scored["meta_info"]["completion_tokens"] == 0
    for (a, ta, _), (b, tb, _) in zip(in_lps[1:], out_lps):
        assert ta == tb and abs(a - b) < 1e-3


def test_seed_reproducible_across_batches(engine_fp32, chat):
    p = chat(engine_fp32.tokenizer, "Invent a word.")
    params = {"temperature": 1.0, "max_new_tokens": 10, "seed": 1234}
    a = engine_fp32.generate(p, params)["text"]
    other = chat(engine_fp32.tokenizer, "Something else entirely.")
    b = engine_fp32.generate([other, p, other], [{"temperature": 1.0, "max_new_tokens": 10}, params,
                                                 {"temperature": 1.0, "max_new_tokens": 10}])[1]["text"]
    assert a == b


def test_bad_input_errors(engine_fp32):
    with pytest.raises(InvalidRequest, match="prompt"):
        engine_fp32.generate("", GREEDY)
    with pytest.raises(InvalidRequest, match="context window"):
        engine_fp32.generate(input_ids=[5] * 9000, sampling_params=GREEDY)
    with pytest.raises(InvalidSamplingParams, match="top_p"):
        engine_fp32.generate("hi", {"top_p": 1.5})
    with pytest.raises(InvalidSamplingParams, match="unknown"):
        engine_fp32.generate("hi", {"max_tokenz": 3})
    with pytest.raises(InvalidRequest, match="logprob_start_len"):
        engine_fp32.generate("hi", GREEDY, logprob_start_len=99)
    with pytest.raises(InvalidRequest, match="input_ids"):
        engine_fp32.generate(input_ids=[1, 10**9], sampling_params=GREEDY)
    # the engine still serves afterwards
    assert engine_fp32.generate("hi", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "job": {"type": "string", "enum": ["engineer", "doctor", "teacher"]}},
    "required": ["name", "age", "job"], "additionalProperties": False,
}


def test_json_schema_with_jump_forward(engine_fp32, chat):
    import json
    p = chat(engine_fp32.tokenizer, "Describe a fictional person as JSON.")
    before = engine_fp32.get_stats()
    out = engine_fp32.generate(p, {"json_schema": json.dumps(PERSON_SCHEMA), "max_new_tokens": 60,
                                   "temperature": 0})
    after = engine_fp32.get_stats()
    obj = json.loads(out["text"])
    assert set(obj) == {"name", "age", "job"} and obj["job"] in PERSON_SCHEMA["properties"]["job"]["enum"]
    assert 0 <= obj["age"] <= 120
    jumped = after["num_jump_forward_tokens"] - before["num_jump_forward_tokens"]
    sampled = after["num_generated_tokens"] - before["num_generated_tokens"]
    # the keys and punctuation are forced: they are appended without sampling
    assert jumped >= 5 and jumped + sampled == out["meta_info"]["completion_tokens"]


def test_regex_and_grammar_errors(engine_fp32, chat):
    import re
    p = chat(engine_fp32.tokenizer, "Give me a date.")
    out = engine_fp32.generate(p, {"regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", "max_new_tokens": 20,
                                   "temperature": 0})
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", out["text"])
    with pytest.raises(InvalidRequest, match="regex"):
        engine_fp32.generate(p, {"regex": "([a-z]", "max_new_tokens": 5})
    with pytest.raises(InvalidRequest, match="json_schema"):
        engine_fp32.generate(p, {"json_schema": "{not json", "max_new_tokens": 5})


def test_a_failing_grammar_ends_only_its_request(engine_fp32, chat, monkeypatch):
    """A grammar library raising inside the step must not take the engine loop down."""
    import json
    p = chat(engine_fp32.tokenizer, "Describe a fictional person as JSON.")
    compiled = engine_fp32.grammar.compile("json_schema", json.dumps(PERSON_SCHEMA))
    matcher_cls = type(compiled.new_matcher())

    def boom(self, bitmask, row):
        raise RuntimeError("simulated grammar library failure")

    monkeypatch.setattr(matcher_cls, "fill_bitmask", boom)
    bad, good = engine_fp32.generate([p, p], [{"json_schema": json.dumps(PERSON_SCHEMA), "max_new_tokens": 8},
                                              {"temperature": 0, "max_new_tokens": 8}])
    assert bad["meta_info"]["finish_reason"]["type"] == "abort"
    assert "simulated grammar library failure" in bad["error"]
    assert good["meta_info"]["completion_tokens"] == 8 and "error" not in good


def test_a_raising_output_callback_does_not_kill_the_loop(engine_fp32):
    from sgl_lang.runtime.sampling_params import SamplingParams
    req = engine_fp32.make_request("Hello", SamplingParams(max_new_tokens=3))

    def broken(_output):
        raise RuntimeError("caller's callback is broken")

    req.on_output = broken
    engine_fp32.add_request(req)
    out = engine_fp32.generate("Hello", {"max_new_tokens": 3})  # queued behind it; served normally
    assert out["meta_info"]["completion_tokens"] == 3


def test_absurd_max_new_tokens_is_refused(engine_fp32):
    with pytest.raises(InvalidRequest, match="max_new_tokens"):
        engine_fp32.generate("Hi", {"max_new_tokens": 10 ** 9})


def test_shutdown_twice_is_harmless():
    eng = Engine(dtype="float32", max_total_tokens=256)
    assert eng.generate("Hi", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2
    eng.shutdown()
    eng.shutdown()


def test_warm_up_leaves_a_fresh_engine(engine_fp32):
    """runtime/warmup.py (run at start on CUDA only; called here on the CPU engine): its requests
    complete and it leaves no cached prefix and zeroed counters; later requests are unaffected."""
    from sgl_lang.runtime.warmup import warm_up
    params = {"temperature": 0, "max_new_tokens": 8}
    before = engine_fp32.generate("The capital of France is", sampling_params=params)["text"]
    warm_up(engine_fp32)
    stats = engine_fp32.get_stats()
    assert stats["num_steps"] == 0 and stats["num_generated_tokens"] == 0
    assert stats["cached_tokens"] == 0 and stats["prompt_tokens_total"] == 0
    engine_fp32.check_integrity()
    assert engine_fp32.generate("The capital of France is", sampling_params=params)["text"] == before


def test_bad_decode_gemm_is_refused():
    from sgl_lang.runtime.config import ConfigError, EngineConfig
    with pytest.raises(ConfigError, match="decode_gemm"):
        EngineConfig(decode_gemm="cutlass")
