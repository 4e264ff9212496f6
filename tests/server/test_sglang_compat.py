"""The REAL SGLang frontend (`import sglang as sgl`, its own `RuntimeEndpoint`) runs its programs
against our server: the proof that our native /generate is SGLang-compatible.

`sglang` is installed frontend-only (its full dependency set pulls CUDA torch), so it is not a
project extra; this file skips with the reason when it cannot be imported. Install it with

    pip install --no-deps --target DIR sglang psutil pybase64 msgspec pyzmq aiohttp multidict \
        yarl frozenlist aiosignal aiohappyeyeballs propcache
    SGLANG_FRONTEND_PATH=DIR pytest tests/server/test_sglang_compat.py

The programs run in ONE child process (this file run as a script): importing `sglang` patches
transformers in-process, which must not leak into the other tests, and it takes ~10-20 s.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import re
import subprocess
import sys
import traceback

import pytest

RESULT_MARK = "@@result "
PROGRAMS = {}  # name -> fn(sgl) -> JSON-able dict; runs in the child process


def program(fn):
    PROGRAMS[fn.__name__] = fn
    return fn


# ---- SGLang programs (child process; `sgl` is the real sglang module) -------------------------

@program
def multi_turn_chat(sgl):
    @sgl.function
    def chat(s):
        s += sgl.system("You are a helpful assistant.")
        s += sgl.user("What is the capital of France?")
        s += sgl.assistant(sgl.gen("a1", max_tokens=16, temperature=0))
        s += sgl.user("And of Germany?")
        s += sgl.assistant(sgl.gen("a2", max_tokens=16, temperature=0, stop="."))

    st = chat.run()
    return {"roles": [m["role"] for m in st.messages()], "a1": st["a1"], "a2": st["a2"],
            "text": st.text(), "meta_a1": st.get_meta_info("a1")}


@program
def gen_stop_and_max_tokens(sgl):
    @sgl.function
    def count(s):
        s += "Count: 1, 2, 3," + sgl.gen("capped", max_tokens=5, temperature=0, ignore_eos=True)
        s += "\nList: a, b, c," + sgl.gen("stopped", max_tokens=32, temperature=0, stop=[","])

    st = count.run()
    return {"capped": st["capped"], "meta_capped": st.get_meta_info("capped"),
            "stopped": st["stopped"], "meta_stopped": st.get_meta_info("stopped")}


@program
def select_scoring(sgl):
    """SGLang's select: prefill (max_new_tokens 0), then one batched /generate with
    logprob_start_len = prompt_tokens - 2 and return_text_in_logprobs."""
    choices = [" yes", " no", " maybe"]

    @sgl.function
    def pick(s):
        s += "Q: Is fire hot? Answer yes or no.\nA:" + sgl.select("ans", choices=choices)

    st = pick.run()  # token_length_normalized, SGLang's default
    return {"decision": st["ans"], "meta": st.get_meta_info("ans"), "choices": choices}


@program
def select_unconditional(sgl):
    """SGLang's unconditional path: a third /generate with `input_ids` of each choice's scored
    tokens, max_new_tokens 0, return_logprob and NO logprob_start_len.

    SGLang's stock `unconditional_likelihood_normalized` (like `greedy_token_selection`) does
    arithmetic on the leading `None` entry that SGLang's own server puts first in every
    input_token_logprobs (`[None] + logprobs[:-1]`) and so crashes on either server; this runs the
    same request path with a subclass whose normalisation skips `None` positions."""
    import numpy as np
    from sglang.lang.choices import UnconditionalLikelihoodNormalized

    class NoneSafeUnconditional(UnconditionalLikelihoodNormalized):
        def _normalize_logprobs(self, input_token_logprobs, unconditional_token_logprobs):
            scores = []
            for cond, uncond in zip(input_token_logprobs, unconditional_token_logprobs):
                diffs = [c[0] - u[0] for c, u in zip(cond, uncond) if c[0] is not None and u[0] is not None]
                scores.append(float(np.mean(diffs)))
            return scores

    @sgl.function
    def pick(s):
        s += "The color of grass is" + sgl.select("c", choices=[" green", " purple"],
                                                  choices_method=NoneSafeUnconditional())

    st = pick.run()
    return {"decision": st["c"], "meta": st.get_meta_info("c")}


@program
def regex_and_dtype_gen(sgl):
    ip = r"((25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"

    @sgl.function
    def constrained(s):
        s += "An IP address: " + sgl.gen("ip", max_tokens=24, regex=ip, temperature=0)
        s += "\nThe number of days in a week: " + sgl.gen("days", dtype=int, max_tokens=4)

    st = constrained.run()
    return {"ip": st["ip"], "ip_regex": ip, "days": st["days"]}


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}}}


@program
def json_schema_gen(sgl):
    @sgl.function
    def person(s):
        s += "A person as JSON: " + sgl.gen("j", max_tokens=64, json_schema=json.dumps(SCHEMA), temperature=0)

    return {"j": person.run()["j"]}


@program
def fork_join(sgl):
    @sgl.function
    def tips(s):
        s += "Two tips for better sleep:\n"
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f"Tip {i + 1}: keep" + sgl.gen("tip", max_tokens=12, stop="\n", temperature=0)
        forks.join()
        s += "Tip 1: keep" + forks[0]["tip"] + "\nTip 2: keep" + forks[1]["tip"] + "\n"

    st = tips.run()
    return {"text": st.text()}


@program
def streaming_text_iter(sgl):
    @sgl.function
    def count(s):
        s += "Count: 1, 2, 3," + sgl.gen("c", max_tokens=12, temperature=0, ignore_eos=True)

    st = count.run(stream=True)
    pieces = list(st.text_iter("c"))
    return {"pieces": pieces, "final": st["c"]}


@program
def run_batch(sgl):
    @sgl.function
    def qa(s, q):
        s += "Q: " + q + "\nA:" + sgl.gen("a", max_tokens=8, stop="\n", temperature=0)

    qs = ["What is 1+1?", "What is the capital of Italy?", "What color is the sky?"]
    states = qa.run_batch([{"q": q} for q in qs], num_threads=3)
    return {"answers": [st["a"] for st in states], "texts": [st.text() for st in states]}


def _child_main(url: str, api_key: str) -> None:
    """Run every program against `url`, one `RESULT_MARK {json}` line each."""
    try:
        import sglang as sgl
    except Exception as e:  # any import failure of the optional package is a skip reason
        print(RESULT_MARK + json.dumps({"import_error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    # SmolLM2 uses ChatML; SGLang picks templates by model path and does not know this one.
    sgl.set_default_backend(sgl.RuntimeEndpoint(url, api_key=api_key, chat_template_name="chatml"))
    for name, fn in PROGRAMS.items():
        try:
            record = {"name": name, "result": fn(sgl)}
        except Exception:  # reported to the parent test as that program's failure
            record = {"name": name, "error": traceback.format_exc()}
        print(RESULT_MARK + json.dumps(record, default=lambda o: o.item() if hasattr(o, "item") else str(o)),
              flush=True)


# ---- the tests (parent process) ----------------------------------------------------------------

FRONTEND_PATH = os.environ.get("SGLANG_FRONTEND_PATH")
HAS_SGLANG = importlib.machinery.PathFinder.find_spec(
    "sglang", ([FRONTEND_PATH] if FRONTEND_PATH else []) + sys.path) is not None
SKIP_REASON = ("the real `sglang` frontend is not installed; install it frontend-only and set "
               "SGLANG_FRONTEND_PATH (see this file's docstring)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(request):
    if not HAS_SGLANG:  # before the server fixture, so a skip costs no server start
        pytest.skip(SKIP_REASON)
    from conftest import API_KEY
    server_url = request.getfixturevalue("server_url")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if FRONTEND_PATH:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (FRONTEND_PATH, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, __file__, server_url, API_KEY], env=env,
                          capture_output=True, text=True, timeout=900)
    records = [json.loads(line[len(RESULT_MARK):]) for line in proc.stdout.splitlines()
               if line.startswith(RESULT_MARK)]
    if records and "import_error" in records[0]:
        pytest.skip(f"{SKIP_REASON}: importing it failed with {records[0]['import_error']}")
    assert proc.returncode == 0 and records, f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return {r["name"]: r for r in records}


def _result(results, name):
    record = results[name]
    assert "error" not in record, f"SGLang program {name} failed:\n{record['error']}"
    return record["result"]


def test_every_program_ran(results, http):
    from conftest import wait_idle
    assert set(results) == set(PROGRAMS)
    wait_idle(http)  # KV accounting balances after everything SGLang's frontend sent


def test_multi_turn_chat(results):
    r = _result(results, "multi_turn_chat")
    assert r["roles"] == ["system", "user", "assistant", "user", "assistant"]
    assert r["text"].count("<|im_start|>assistant\n") == 2
    assert r["a1"].strip() and r["a2"].strip() and "." not in r["a2"]
    assert 0 < r["meta_a1"]["completion_tokens"] <= 16
    assert r["meta_a1"]["prompt_tokens"] > 10


def test_gen_stop_and_max_tokens(results):
    r = _result(results, "gen_stop_and_max_tokens")
    assert r["meta_capped"]["completion_tokens"] == 5
    assert r["meta_capped"]["finish_reason"]["type"] == "length"
    assert r["capped"]
    assert "," not in r["stopped"]
    assert r["meta_stopped"]["finish_reason"] == {"type": "stop", "matched": ","}


def test_select_scoring(results):
    r = _result(results, "select_scoring")
    choices = r["choices"]
    assert r["decision"] in choices
    meta = r["meta"]
    assert len(meta["input_token_logprobs"]) == len(choices)
    for choice, entries in zip(choices, meta["input_token_logprobs"]):
        # logprob_start_len = prompt_tokens - 2: two context tokens, then the choice's token(s);
        # text comes back because SGLang's frontend sent return_text_in_logprobs
        assert "".join(e[2] for e in entries).endswith(choice)
        assert entries[0][0] is None and all(isinstance(e[0], float) for e in entries[1:])
    assert meta["output_token_logprobs"] == [[], [], []]  # max_new_tokens 0
    scores = meta["normalized_prompt_logprobs"]
    assert r["decision"] == choices[scores.index(max(scores))]


def test_select_unconditional(results):
    r = _result(results, "select_unconditional")
    meta = r["meta"]
    assert r["decision"] in (" green", " purple")
    for cond, uncond in zip(meta["input_token_logprobs"], meta["unconditional_token_logprobs"]):
        # the prefill-only input_ids call without logprob_start_len scores the whole input
        assert [e[1] for e in uncond] == [e[1] for e in cond]
        assert uncond[0][0] is None and all(isinstance(e[0], float) for e in uncond[1:])
    scores = meta["normalized_unconditional_prompt_logprobs"]
    assert r["decision"] == [" green", " purple"][scores.index(max(scores))]


def test_regex_and_dtype_gen(results):
    r = _result(results, "regex_and_dtype_gen")
    assert re.fullmatch(r["ip_regex"], r["ip"]), r["ip"]
    assert int(r["days"]) >= 0


def test_json_schema_gen(results):
    value = json.loads(_result(results, "json_schema_gen")["j"])
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["age"], int)


def test_fork_join(results):
    text = _result(results, "fork_join")["text"]
    head, tip1, tip2 = text.split("Tip 1: keep")[0], *text.split("Tip 1: keep")[1].split("\nTip 2: keep")
    assert head == "Two tips for better sleep:\n"
    assert "\n" not in tip1 and tip2.endswith("\n") and "\n" not in tip2[:-1]


def test_streaming_text_iter(results):
    r = _result(results, "streaming_text_iter")
    assert len(r["pieces"]) > 1  # chunks arrived one by one, not as one block
    assert "".join(r["pieces"]) == r["final"] and r["final"]


def test_run_batch(results):
    r = _result(results, "run_batch")
    assert len(r["answers"]) == 3
    for answer, text in zip(r["answers"], r["texts"]):
        assert "\n" not in answer and text.endswith("\nA:" + answer)


# ---- the two wire details SGLang's frontend relies on, checked without it -----------------------

def test_stop_regex_field_as_sglang_sends_it(http):
    """SGLang's frontend sends `stop_regex: null` in every gen; a real one is refused clearly."""
    ok = http.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2, "stop_regex": None}})
    assert ok.status_code == 200, ok.text
    bad = http.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2, "stop_regex": "a+"}})
    assert bad.status_code == 400
    assert "stop_regex" in bad.json()["error"]["message"]


def test_prefill_only_logprobs_default_to_the_whole_prompt(http):
    """`input_ids`, max_new_tokens 0, return_logprob, no logprob_start_len: the unconditional
    select call. Every prompt token gets an entry (the first None); an explicit start wins."""
    ids = [[504, 3511, 282], [504, 3511]]
    outs = http.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 0},
                                        "return_logprob": True}).json()
    for prompt, out in zip(ids, outs):
        entries = out["meta_info"]["input_token_logprobs"]
        assert [e[1] for e in entries] == prompt
        assert entries[0][0] is None and all(isinstance(e[0], float) for e in entries[1:])
    started = http.post("/generate", json={"input_ids": ids[0], "sampling_params": {"max_new_tokens": 0},
                                           "return_logprob": True, "logprob_start_len": 2}).json()
    assert [e[1] for e in started["meta_info"]["input_token_logprobs"]] == ids[0][2:]
    generating = http.post("/generate", json={"input_ids": ids[0], "sampling_params": {"max_new_tokens": 1},
                                              "return_logprob": True}).json()
    assert generating["meta_info"]["input_token_logprobs"] == []  # SGLang's default when generating


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
