"""fork/join/copy semantics and streaming (text_iter / text_async_iter)."""
import asyncio

import pytest

import sgl_lang as sgl
from sgl_lang.errors import InvalidArgument, ProgramError
from scripted_backend import ScriptedBackend


def tip_backend():
    return ScriptedBackend(replies={"Tip 1:": " drink water", "Tip 2:": " sleep well", "Tip 3:": " walk"})


def test_fork_caches_the_prefix_then_children_run_and_gather_in_order():
    backend = tip_backend()

    @sgl.function
    def prog(s):
        s += "Three tips.\n"
        forks = s.fork(3)
        assert len(forks) == 3 and len(list(forks)) == 3
        forks += lambda i: f"Tip {i + 1}:" + sgl.gen("tip")
        assert forks[1]["tip"] == " sleep well"  # readable before join
        forks.join()
        s += "Done."

    state = prog.run(backend=backend)
    assert state["tip"] == [" drink water", " sleep well", " walk"]
    assert state.text() == "Three tips.\nDone."
    kinds = [k for k, _ in backend.calls]
    assert kinds[0] == "cache_prefix" and backend.calls[0][1] == "Three tips.\n"
    assert kinds.count("generate") == 3
    assert all(r.text.startswith("Three tips.\nTip ") for r in backend.requests("generate"))
    assert isinstance(state.get_meta_info("tip"), list)


def test_forks_accept_lists_strings_and_exprs():
    backend = ScriptedBackend(default_reply="x")

    @sgl.function
    def prog(s):
        forks = s.fork(2)
        forks += ["A", "B"]
        forks += "-"
        forks += sgl.gen("g")
        forks.join("concate_and_append")

    state = prog.run(backend=backend)
    assert state.text() == "A-xB-x"
    assert not backend.requests("cache_prefix")  # nothing to cache: empty parent text

    @sgl.function
    def wrong(s):
        forks = s.fork(2)
        forks += ["only one"]

    with pytest.raises(InvalidArgument, match="2 items"):
        wrong.run(backend=backend)


def test_join_keeps_existing_parent_variables_and_nests():
    backend = ScriptedBackend(default_reply="v")

    @sgl.function
    def prog(s):
        s += sgl.gen("old")
        forks = s.fork(2)
        for f in forks:
            inner = f.fork(2)
            inner += sgl.gen("leaf")
            inner.join()
        forks.join()

    state = prog.run(backend=backend)
    assert state["old"] == "v"
    assert state["leaf"] == [["v", "v"], ["v", "v"]]


def test_copy_is_a_fork_of_one():
    backend = ScriptedBackend(default_reply="c")

    @sgl.function
    def prog(s):
        s += "base "
        with s.copy() as c:
            c += sgl.gen("x")

    state = prog.run(backend=backend)
    assert state["x"] == ["c"] and state.text() == "base "
    assert not backend.requests("cache_prefix")


def test_join_raises_when_a_fork_failed():
    backend = ScriptedBackend(fail_when="BAD")

    @sgl.function
    def prog(s):
        forks = s.fork(2)
        forks += ["ok", "BAD"]
        forks += sgl.gen("x")
        forks.join()

    with pytest.raises(ProgramError, match="fork 1"):
        prog.run(backend=backend)


def test_fork_size_is_validated():
    @sgl.function
    def prog(s):
        s.fork(0)

    with pytest.raises(InvalidArgument):
        prog.run(backend=ScriptedBackend())


@sgl.function
def story(s):
    s += sgl.user("Tell a story.")
    s += sgl.assistant(sgl.gen("answer"))


def test_text_iter_streams_deltas_of_a_variable():
    backend = ScriptedBackend(default_reply="once upon a time", chunk_size=3, stream_delay=0.001)
    state = story.run(stream=True, backend=backend)
    deltas = list(state.text_iter("answer"))
    assert len(deltas) >= 5 and "".join(deltas) == "once upon a time" == state["answer"]
    assert backend.requests("generate_stream") and not backend.requests("generate")


def test_text_iter_of_the_whole_program():
    backend = ScriptedBackend(default_reply="hello there", chunk_size=2)
    state = story.run(stream=True, backend=backend)
    assert "".join(state.text_iter()) == state.text()


def test_text_iter_without_stream_yields_once():
    state = story.run(backend=ScriptedBackend(default_reply="hi"))
    assert list(state.text_iter("answer")) == ["hi"]
    assert list(state.text_iter()) == [state.text()]


def test_text_async_iter_with_meta():
    backend = ScriptedBackend(default_reply="abcdef", chunk_size=2)

    async def consume():
        state = story.run(stream=True, backend=backend)
        return [item async for item in state.text_async_iter("answer", return_meta_data=True)]

    items = asyncio.run(consume())
    assert "".join(d for d, _ in items) == "abcdef"
    assert all(isinstance(meta, dict) for _, meta in items)


def test_stream_errors_reach_the_iterator():
    backend = ScriptedBackend(fail_when="story")
    state = story.run(stream=True, backend=backend)
    with pytest.raises(ProgramError, match="ScriptedFailure"):
        list(state.text_iter("answer"))


def test_stream_body_errors_are_captured():
    @sgl.function
    def broken(s):
        s += "start "
        raise ValueError("bad body")

    state = broken.run(stream=True, backend=ScriptedBackend())
    with pytest.raises(ProgramError, match="bad body"):
        "".join(state.text_iter())
    assert isinstance(state.error(), ValueError)


def test_stream_readers_wait_for_variables_the_body_has_not_submitted_yet():
    import threading
    gate = threading.Event()

    @sgl.function
    def slow_body(s):
        gate.wait(10)
        s += sgl.gen("late")

    state = slow_body.run(stream=True, backend=ScriptedBackend(default_reply="here"))
    threading.Timer(0.05, gate.set).start()
    assert state["late"] == "here"
    assert list(state.text_iter("late")) == ["here"]
