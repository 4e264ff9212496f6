"""The interpreter, seen through ProgramState: what requests it sends, how variables, roles, errors,
select, fork/join and streaming behave. The ScriptedBackend records every request."""
import threading

import pytest

import sgl_lang as sgl
from sgl_lang.errors import InvalidArgument, NestedRoleError, ProgramError
from sgl_lang.ir import REGEX_INT
from scripted_backend import ScriptedBackend, ScriptedFailure


def run(prog, backend, **kwargs):
    """Run and wait for the program to finish (so the backend's recorded requests are complete)."""
    state = prog.run(backend=backend, **kwargs)
    state.sync()
    return state


def test_gen_request_merges_defaults_and_appends_template_stop():
    backend = ScriptedBackend(template="chatml", default_reply="Paris")

    @sgl.function
    def prog(s):
        s += sgl.user("Capital of France?")
        s += sgl.assistant(sgl.gen("a", stop="\n"))
        s += sgl.gen("b", max_tokens=5, temperature=0.7)

    state = run(prog, backend, temperature=0.0)
    assert state["a"] == "Paris"
    first, second = backend.requests("generate")
    assert first.params.stop == ("\n", "<|im_end|>")
    assert first.params.max_new_tokens == 128 and first.params.temperature == 0.0
    assert first.is_in_assistant_turn and first.text.endswith("<|im_start|>assistant\n")
    assert [(m.role, m.content) for m in first.messages] == [("user", "Capital of France?")]
    assert second.params.max_new_tokens == 5 and second.params.temperature == 0.7
    assert second.params.stop == ("<|im_end|>",) and not second.is_in_assistant_turn
    assert state.text().endswith("Paris<|im_end|>\nParis")


def test_dtype_int_becomes_regex_and_stops():
    backend = ScriptedBackend(default_reply="42")

    @sgl.function
    def prog(s):
        s += "n = " + sgl.gen("n", dtype=int)

    state = run(prog, backend)
    req = backend.requests("generate")[0]
    assert req.params.regex == REGEX_INT and req.params.dtype == "int"
    assert {" ", "\n"} <= set(req.params.stop)
    assert state["n"] == "42"


def test_default_system_prompt_is_injected_once():
    backend = ScriptedBackend(template="qwen")

    @sgl.function
    def prog(s):
        s += sgl.user("hi")
        s += sgl.assistant(sgl.gen("a", max_tokens=4))

    msgs = run(prog, backend).messages()
    assert msgs[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]

    @sgl.function
    def with_system(s):
        s += sgl.system("Be terse.")
        s += sgl.user("hi")

    assert [m["content"] for m in run(with_system, backend).messages()] == ["Be terse.", "hi"]


def test_role_context_managers_and_nested_roles():
    backend = ScriptedBackend(default_reply="ok")

    @sgl.function
    def prog(s):
        with s.user():
            s += "question"
        with s.assistant():
            s += sgl.gen("a")

    assert [m["role"] for m in run(prog, backend).messages()] == ["user", "assistant"]

    @sgl.function
    def nested(s):
        with s.user():
            s += sgl.assistant("x")

    state = run(nested, backend)
    assert isinstance(state.error(), NestedRoleError)
    with pytest.raises(ProgramError, match="Nested roles are not allowed"):
        state.text()


def test_backend_error_surfaces_with_its_traceback():
    backend = ScriptedBackend(fail_when="BOOM")

    @sgl.function
    def prog(s):
        s += "BOOM " + sgl.gen("x")
        s += sgl.gen("y")

    state = prog.run(backend=backend)  # run() returns; the failure is in the worker thread
    assert isinstance(state.error(), ScriptedFailure)
    with pytest.raises(ProgramError) as info:
        state.text()
    message = str(info.value)
    assert "ScriptedFailure" in message and "scripted_backend.py" in message and "Traceback" not in message[:5]
    assert "test_lang_interpreter.py" in message  # where the failing gen was submitted
    assert isinstance(info.value.cause, ScriptedFailure)
    with pytest.raises(ProgramError):
        state["y"]  # never produced: raises instead of hanging
    assert len(backend.requests("generate")) == 1  # later nodes are skipped


def test_reading_a_variable_inside_the_body_raises_the_program_error():
    backend = ScriptedBackend(fail_when="BOOM")

    @sgl.function
    def prog(s):
        s += "BOOM" + sgl.gen("x")
        s += s["x"]

    with pytest.raises(ProgramError, match="ScriptedFailure"):
        run(prog, backend)


def test_unknown_variable_raises_key_error():
    @sgl.function
    def prog(s):
        s += "x"

    with pytest.raises(KeyError, match="never produced"):
        run(prog, ScriptedBackend())["missing"]


def test_run_returns_before_generation_and_reading_blocks():
    gate = threading.Event()

    def reply(req):
        gate.wait(10)
        return "late"

    backend = ScriptedBackend(replies=reply)

    @sgl.function
    def prog(s):
        s += sgl.gen("x")

    state = prog.run(backend=backend)
    assert "x" not in state  # still waiting on the gate
    gate.set()
    assert state["x"] == "late"


def test_appending_none_is_rejected_at_once():
    @sgl.function
    def prog(s):
        s += None

    with pytest.raises(InvalidArgument, match="None"):
        run(prog, ScriptedBackend())


def test_select_scores_and_applies_the_method():
    backend = ScriptedBackend(scores={"no": -0.5, "yes": -2.0})

    @sgl.function
    def prog(s):
        s += "Is it raining? " + sgl.select("a", ["yes", "no"])
        s += " " + sgl.select("b", ["yes", "no"], choices_method=sgl.unconditional_likelihood_normalized)

    state = run(prog, backend)
    assert state["a"] == "no" and state.text() == "Is it raining? no no"
    first, second = backend.requests("score")
    assert first.choices == ("yes", "no") and first.text == "Is it raining? "
    assert not first.need_unconditional and second.need_unconditional
    assert state.get_meta_info("a")["choices_method"] == "token_length_normalized"


def test_select_falls_back_to_constrained_generation():
    backend = ScriptedBackend(supports_score=False, default_reply="no")

    @sgl.function
    def prog(s):
        s += "Answer: " + sgl.select("a", ["yes", "no", "a.b"])

    state = run(prog, backend)
    assert state["a"] == "no"
    req = backend.requests("generate")[0]
    assert req.params.regex == r"(yes|no|a\.b)"
    assert not backend.requests("score")
    assert state.get_meta_info("a")["choices_method"] == "constrained_generation"


def test_var_scope_and_unnamed_gen():
    backend = ScriptedBackend(default_reply="R")

    @sgl.function
    def prog(s):
        with s.var_scope("block"):
            s += "a" + sgl.gen()
        s += "!"

    state = run(prog, backend)
    assert state["block"] == "aR" and state[None] == "R" and state.text() == "aR!"


def test_ret_value_and_meta_info():
    @sgl.function
    def prog(s):
        s += sgl.gen("x", max_tokens=1)
        return "done"

    state = run(prog, ScriptedBackend(default_reply="one two three"))
    assert state.ret_value == "done" and state["x"] == "one "
    assert state.get_meta_info("x")["finish_reason"] == {"type": "length", "length": 1}
