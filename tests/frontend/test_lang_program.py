"""Program: argument binding, run_batch (order, progress bar, errors, prefix warm-up), bind,
trace and cache."""
import random
import time

import pytest

import sgl_lang as sgl
from sgl_lang.errors import InvalidArgument, ProgramError
from sgl_lang.tracer import TracerProgramState
from scripted_backend import ScriptedBackend

SYSTEM = "You are a careful geography assistant. Answer with the name of one city and nothing else."


@sgl.function
def capital(s, country, style="short"):
    s += sgl.system(SYSTEM)
    s += sgl.user(f"Capital of {country}? ({style})")
    s += sgl.assistant(sgl.gen("answer", max_tokens=8))


def echo_backend(**kwargs):
    def reply(req):
        time.sleep(random.random() * 0.01)  # finish out of order
        return "city-of-" + req.text.split("Capital of ")[-1].split("?")[0]
    return ScriptedBackend(replies=reply, **kwargs)


def test_run_accepts_positional_and_keyword_arguments():
    backend = echo_backend()
    assert capital.run("Peru", backend=backend)["answer"] == "city-of-Peru"
    assert "(long)" in capital.run(country="Chad", style="long", backend=backend).text()
    with pytest.raises(InvalidArgument, match="missing"):
        capital.run(backend=backend)
    with pytest.raises(InvalidArgument, match="multiple values"):
        capital.run("Peru", country="Chad", backend=backend)


def test_default_max_new_tokens_is_128():
    backend = ScriptedBackend()

    @sgl.function
    def prog(s):
        s += sgl.gen("x")

    prog.run(backend=backend).sync()
    assert backend.requests("generate")[0].params.max_new_tokens == 128


def test_run_batch_returns_states_in_input_order():
    backend = echo_backend()
    countries = [f"C{i}" for i in range(20)]
    states = capital.run_batch([{"country": c} for c in countries], backend=backend, num_threads=8)
    assert [s["answer"] for s in states] == [f"city-of-{c}" for c in countries]
    assert len(backend.requests("generate")) == 20


def test_run_batch_warms_the_constant_prefix_first():
    backend = echo_backend()
    capital.run_batch([{"country": "A"}, {"country": "B"}], backend=backend)
    kind, prefix = backend.calls[0]
    assert kind == "cache_prefix" and len(backend.requests("cache_prefix")) == 1
    # the f-string with an argument stops the trace before the user turn begins
    assert prefix == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    assert all(r.text.startswith(prefix) for r in backend.requests("generate"))


def test_run_batch_skips_warmup_for_one_item_short_prefix_or_when_disabled(monkeypatch):
    backend = echo_backend()
    capital.run_batch([{"country": "A"}], backend=backend)

    @sgl.function
    def short(s, q):
        s += "Q: " + q + sgl.gen("a")

    short.run_batch([{"q": "a"}, {"q": "b"}], backend=backend)
    monkeypatch.setattr(sgl.global_config, "enable_precache_with_tracing", False)
    capital.run_batch([{"country": "A"}, {"country": "B"}], backend=backend)
    assert not backend.requests("cache_prefix")


def test_run_batch_positional_lists_and_arity_check():
    backend = echo_backend()
    states = capital.run_batch([["Peru"], ["Chad", "long"]], backend=backend)
    assert states[0]["answer"] == "city-of-Peru" and "(long)" in states[1].text()
    with pytest.raises(InvalidArgument, match="mismatch the SGL function signature"):
        capital.run_batch([["a", "b", "c"]], backend=backend)
    assert capital.run_batch([], backend=backend) == []


def test_run_batch_progress_bar(capsys):
    capital.run_batch([{"country": c} for c in "ABC"], backend=echo_backend(), progress_bar=True)
    assert "3/3" in capsys.readouterr().err


def test_run_batch_generator_style_yields_in_order():
    gen = capital.run_batch([{"country": c} for c in "ABCD"], backend=echo_backend(), generator_style=True)
    assert not isinstance(gen, list)
    assert [s["answer"] for s in gen] == [f"city-of-{c}" for c in "ABCD"]


def test_run_batch_backend_failure_stays_in_its_state():
    backend = echo_backend(fail_when="Capital of B?")
    states = capital.run_batch([{"country": c} for c in "ABC"], backend=backend)
    assert states[0].error() is None and states[2]["answer"] == "city-of-C"
    assert states[1].error() is not None
    with pytest.raises(ProgramError, match="scripted failure"):
        states[1].text()


def test_run_batch_body_failure_names_the_item():
    @sgl.function
    def picky(s, x):
        if x == 2:
            raise ValueError("no twos")
        s += str(x)

    with pytest.raises(ProgramError, match=r"run_batch item 1[\s\S]*no twos"):
        picky.run_batch([[1], [2], [3]], backend=ScriptedBackend())


def test_run_batch_validates_num_threads():
    with pytest.raises(InvalidArgument, match="num_threads"):
        capital.run_batch([["A"]], backend=echo_backend(), num_threads=0)


def test_bind_fixes_arguments():
    backend = echo_backend()
    peru = capital.bind(country="Peru")
    assert peru.run(backend=backend)["answer"] == "city-of-Peru"
    assert "(long)" in peru.run(style="long", backend=backend).text()
    with pytest.raises(InvalidArgument, match="not arguments"):
        capital.bind(planet="Mars")

    @sgl.function(num_api_spec_tokens=32)
    def spec(s, q):
        s += q
    assert spec.bind(q="x").num_api_spec_tokens is None  # as SGLang, bind drops it


def test_trace_prints_an_ir_graph():
    @sgl.function
    def tips(s, topic):
        s += sgl.system("Give tips.")
        s += sgl.user("Topic: " + topic)
        forks = s.fork(2)
        forks += sgl.gen("tip", max_tokens=16)
        forks.join()
        s += sgl.select("best", ["0", "1"])
        s += f"About {topic}"  # an argument used as a str: tracing stops here

    trace = tips.trace()
    assert isinstance(trace, TracerProgramState)
    graph = str(trace)
    assert "Trace of tips(topic)" in graph
    assert "RoleBegin(role='system')" in graph and "Text('Give tips.')" in graph
    assert "Placeholder(name='topic', kind='arg')" in graph
    assert "fork(2)" in graph and "Gen('tip', max_new_tokens=16)" in graph and "join('gather_variable')" in graph
    assert "Select('best'" in graph and "tracing stopped" in graph
    prefix = trace.constant_prefix(sgl.get_chat_template("chatml"))
    assert prefix == "<|im_start|>system\nGive tips.<|im_end|>\n<|im_start|>user\nTopic: "


def test_cache_sends_the_constant_prefix():
    backend = echo_backend()
    prefix = capital.cache(backend=backend)
    assert backend.requests("cache_prefix") == [prefix] and SYSTEM in prefix


def test_program_called_inside_a_trace_is_traced():
    @sgl.function
    def inner(s, x):
        s += "inner"

    @sgl.function
    def caller(s):
        return inner(x=1)

    assert isinstance(caller.trace().ret_value, TracerProgramState)
