"""Overlapped scheduling (step N+1 launched before step N's tokens are read back) must give the
same outputs as the plain loop, on the real default model in fp32: greedy and seeded sampling,
mixed lengths, stop strings, logprobs, grammars, retraction, abort, streaming."""
from __future__ import annotations

import threading

import pytest

from sgl_lang.runtime.engine import Engine

QUESTIONS = ["What is the capital of France?", "Name three colors.", "Count from one to ten.",
             "Write a haiku about rain.", "What is 2+2?", "Say hello in Spanish."]


@pytest.fixture(scope="module")
def overlap_engine():
    eng = Engine(dtype="float32", max_total_tokens=4096, overlap_schedule="on")
    yield eng
    eng.shutdown()


def _strip(outs):
    return [(o["text"], o["output_ids"], o["meta_info"]["finish_reason"]) for o in outs]


def _same_on_both(engine_fp32, overlap_engine, prompts, params, **kw):
    before = overlap_engine.num_overlapped_steps
    plain = engine_fp32.generate(prompts, params, **kw)
    overlapped = overlap_engine.generate(prompts, params, **kw)
    assert _strip(overlapped) == _strip(plain)
    overlap_engine.check_integrity()
    return plain, overlapped, overlap_engine.num_overlapped_steps - before


def test_greedy_mixed_lengths_and_stops_match(engine_fp32, overlap_engine, chat):
    tok = engine_fp32.tokenizer
    prompts = [chat(tok, q) for q in QUESTIONS]
    params = [{"temperature": 0, "max_new_tokens": n} for n in (1, 5, 17, 32, 40, 24)]
    params[2]["stop"] = ["4."]  # ends on a stop string mid-run
    params[3]["stop_token_ids"] = [tok.encode(",", add_special_tokens=False)[0]]
    _, outs, overlapped = _same_on_both(engine_fp32, overlap_engine, prompts, params)
    assert overlapped > 10, "the overlapped path did not run"
    assert outs[0]["meta_info"]["completion_tokens"] == 1
    reasons = [o["meta_info"]["finish_reason"]["type"] for o in outs]
    assert reasons[2] == reasons[3] == reasons[4] == "stop", reasons  # stop string, stop id, EOS


def test_seeded_sampling_and_min_new_tokens_match(engine_fp32, overlap_engine, chat):
    prompts = [chat(engine_fp32.tokenizer, q) for q in QUESTIONS[:4]]
    params = [{"temperature": 0.9, "top_p": 0.9, "seed": 7 + i, "max_new_tokens": 20, "min_new_tokens": 12}
              for i in range(4)]
    _same_on_both(engine_fp32, overlap_engine, prompts, params)


def test_grammars_and_penalties_run_ahead_and_match(engine_fp32, overlap_engine, chat):
    """Their masks / penalty counts need the token still in flight: the runner completes the
    previous step after queueing the forward and before sampling; jump-forward then drops the
    sample of a request whose grammar forced text."""
    tok = engine_fp32.tokenizer
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                "population": {"type": "integer"},
                                                "capital": {"type": "boolean"}},
              "required": ["city", "population", "capital"], "additionalProperties": False}
    import json
    prompts = [chat(tok, "Describe Paris as JSON."), chat(tok, QUESTIONS[1]), chat(tok, QUESTIONS[2]),
               chat(tok, "Is the sky blue? Answer yes or no.")]
    params = [{"temperature": 0, "max_new_tokens": 48, "json_schema": json.dumps(schema)},
              {"temperature": 0, "max_new_tokens": 24, "frequency_penalty": 0.8, "presence_penalty": 0.5},
              {"temperature": 0, "max_new_tokens": 24},
              {"temperature": 0, "max_new_tokens": 8, "regex": r"(yes|no)[.!]"}]
    _, outs, overlapped = _same_on_both(engine_fp32, overlap_engine, prompts, params)
    assert overlapped > 10, "constrained / penalised requests did not run ahead"
    assert set(json.loads(outs[0]["text"])) == {"city", "population", "capital"}
    assert overlap_engine.get_stats()["num_jump_forward_tokens"] > 0


def test_logprobs_grammar_and_penalties_fall_back_and_match(engine_fp32, overlap_engine, chat):
    tok = engine_fp32.tokenizer
    prompts = [chat(tok, q) for q in QUESTIONS[:4]]
    params = [{"temperature": 0, "max_new_tokens": 16},
              {"temperature": 0, "max_new_tokens": 24, "regex": r"(yes|no)[.!]"},
              {"temperature": 0, "max_new_tokens": 16, "frequency_penalty": 0.5},
              {"temperature": 0, "max_new_tokens": 12}]
    plain, outs, _ = _same_on_both(engine_fp32, overlap_engine, prompts, params,
                                   return_logprob=True, top_logprobs_num=2)
    for a, b in zip(plain, outs):  # batch shapes may differ (grammar compile timing): fp32 noise only
        la, lb = a["meta_info"]["output_token_logprobs"], b["meta_info"]["output_token_logprobs"]
        assert [t for _, t, _ in la] == [t for _, t, _ in lb]
        assert [lp for lp, _, _ in lb] == pytest.approx([lp for lp, _, _ in la], abs=1e-4)
    assert outs[1]["text"] in ("yes.", "no.", "yes!", "no!")


def test_retraction_under_a_small_pool_matches(chat):
    prompts = list(QUESTIONS)
    params = {"temperature": 0, "max_new_tokens": 40, "ignore_eos": True}
    outs = {}
    for mode in ("off", "on"):
        with Engine(dtype="float32", max_total_tokens=160, overlap_schedule=mode) as eng:
            outs[mode] = eng.generate(prompts, params)
            stats = eng.get_stats()
            eng.check_integrity()
            assert eng.flush_cache()
            assert eng.get_stats()["kv_pool_free"] == stats["kv_pool_total"]
        outs[mode + "_retractions"] = stats["num_retractions"]
    assert outs["on_retractions"] > 0, "the pool was large enough: no retraction was exercised"
    assert _strip(outs["on"]) == _strip(outs["off"])


def test_abort_and_streaming_under_overlap(overlap_engine, chat):
    tok = overlap_engine.tokenizer
    chunks = list(overlap_engine.generate(chat(tok, QUESTIONS[2]), {"temperature": 0, "max_new_tokens": 24},
                                          stream=True))
    full = overlap_engine.generate(chat(tok, QUESTIONS[2]), {"temperature": 0, "max_new_tokens": 24})
    assert chunks[-1]["text"] == full["text"] and chunks[-1]["meta_info"]["finish_reason"] is not None

    it = overlap_engine.generate(chat(tok, QUESTIONS[3]), {"temperature": 0, "max_new_tokens": 2000,
                                                            "ignore_eos": True}, stream=True)
    first = [next(it) for _ in range(4)]
    assert not first[-1]["meta_info"]["finish_reason"]
    it.close()  # aborts the request while its next token is in flight
    for _ in range(200):
        if overlap_engine.get_stats()["num_running_reqs"] == 0:
            break
        threading.Event().wait(0.05)
    assert overlap_engine.get_stats()["num_running_reqs"] == 0
    overlap_engine.check_integrity()
