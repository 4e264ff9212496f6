"""The shared program suite on the real default model through the in-process local runtime."""
import pytest

from program_suite import ALL_PROGRAMS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=lambda p: p.__name__)
def test_program_on_local_runtime(program, local_runtime):
    program(local_runtime)
    local_runtime.engine.check_integrity()


def test_fork_children_hit_the_prefix_cache(local_runtime):
    import sgl_lang as sgl

    @sgl.function
    def tips(s, topic):
        s += "Here is a long shared context about " + topic + ". " * 20
        forks = s.fork(3)
        forks += [sgl.gen("tip", max_tokens=4, temperature=0) for _ in range(3)]
        forks.join()

    state = tips.run(topic="gardening", backend=local_runtime)
    assert len(state["tip"]) == 3
    metas = [f.get_meta_info("tip") for f in state.forks] if hasattr(state, "forks") else []
    stats = local_runtime.engine.get_stats()
    assert stats["cached_prompt_tokens_total"] > 0


def test_run_batch_shares_the_constant_prefix(local_runtime):
    import sgl_lang as sgl
    local_runtime.flush_cache()

    @sgl.function
    def qa(s, q):
        s += "You answer trivia questions in one short line. Be precise and do not explain.\n" * 3
        s += "Q: " + q + "\nA:" + sgl.gen("a", max_tokens=6, stop="\n", temperature=0)

    states = qa.run_batch([{"q": f"What is {i} plus {i}?"} for i in range(6)], backend=local_runtime)
    cached = [st.get_meta_info("a")["cached_tokens"] for st in states]
    prompt = [st.get_meta_info("a")["prompt_tokens"] for st in states]
    # the constant prefix (3 lines, ~50 tokens) was cached before the batch ran
    assert all(c >= 40 for c in cached), (cached, prompt)


def test_gen_with_ebnf_grammar(local_runtime):
    """gen(ebnf=...) goes beyond SGLang's frontend: the answer follows the grammar."""
    import re
    import sgl_lang as sgl

    @sgl.function
    def answer(s):
        s += sgl.user("Is the sky blue? Answer and give a confidence from 1 to 9.")
        s += sgl.assistant(sgl.gen("a", max_tokens=12, temperature=0,
                                   ebnf='root ::= ("yes" | "no") ", confidence " [1-9]'))

    state = answer.run(backend=local_runtime)
    assert re.fullmatch(r"(yes|no), confidence [1-9]", state["a"]), state["a"]
