"""The backend-agnostic program suite: SGLang-style programs whose assertions hold for ANY correct
backend, from the scripted test double to a real 135M model. Each `prog_*(backend)` runs one
program and checks only what every correct backend guarantees (constraints hold, choices are
respected, structure is right), never the wording of an answer.

tests/frontend/test_program_suite.py runs ALL_PROGRAMS against the ScriptedBackend; the runtime
and HTTP tests parametrise the same list over their backends.
"""
from __future__ import annotations

import asyncio
import json
import re

import sgl_lang as sgl

SAMPLING = dict(temperature=0.0, max_new_tokens=32)


def prog_multi_turn_chat(backend) -> None:
    @sgl.function
    def multi_turn(s, question_1, question_2):
        s += sgl.system("You are a helpful assistant. Answer briefly.")
        s += sgl.user(question_1)
        s += sgl.assistant(sgl.gen("answer_1", max_tokens=16))
        s += sgl.user(question_2)
        s += sgl.assistant(sgl.gen("answer_2", max_tokens=16))

    state = multi_turn.run(question_1="What is the capital of France?",
                           question_2="And of Germany?", backend=backend, **SAMPLING)
    messages = state.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == "What is the capital of France?"
    assert messages[2]["content"] == state["answer_1"]
    assert messages[4]["content"] == state["answer_2"]
    assert isinstance(state["answer_1"], str) and isinstance(state["answer_2"], str)
    text = state.text()
    assert text.index("capital of France") < text.index("And of Germany") < len(text)
    assert state.error() is None


def prog_few_shot(backend) -> None:
    @sgl.function
    def few_shot(s, question):
        s += "Answer each question with one word.\n"
        s += "Q: What color is the sky?\nA: Blue\n"
        s += "Q: What do bees make?\nA: Honey\n"
        s += "Q: " + question + "\nA:"
        s += sgl.gen("answer", max_tokens=16, stop="\n")

    state = few_shot.run(question="What animal barks?", backend=backend, **SAMPLING)
    answer = state["answer"]
    assert "\n" not in answer
    assert state.text().endswith("Q: What animal barks?\nA:" + answer)
    assert state.get_meta_info("answer") is not None


def prog_select(backend) -> None:
    choices = ["yes", "no"]

    @sgl.function
    def yes_no(s, question):
        s += sgl.user(question + " Answer yes or no.")
        s += sgl.assistant(sgl.select("answer", choices=choices))
        s += sgl.user("Pick a colour.")
        s += sgl.assistant(sgl.gen("colour", choices=["red", "green", "blue"]))

    state = yes_no.run(question="Is the sun hot?", backend=backend, **SAMPLING)
    assert state["answer"] in choices
    assert state["colour"] in ["red", "green", "blue"]
    assert state.messages()[-1]["content"] == state["colour"]
    assert isinstance(state.get_meta_info("answer"), dict)


def prog_regex(backend) -> None:
    pattern = r"[0-9]{3}-[0-9]{4}"

    @sgl.function
    def phone(s):
        s += "Write a made-up phone number in the form 555-1234.\nNumber: "
        s += sgl.gen("number", max_tokens=16, regex=pattern)

    state = phone.run(backend=backend, **SAMPLING)
    assert re.fullmatch(pattern, state["number"]), state["number"]


def prog_json(backend) -> None:
    schema = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 8},
                             "is_capital": {"type": "boolean"}},
              "required": ["name", "is_capital"], "additionalProperties": False}

    @sgl.function
    def city(s):
        s += sgl.user("Describe Paris as JSON with the keys name and is_capital.")
        s += sgl.assistant(sgl.gen("json", max_tokens=32, json_schema=json.dumps(schema)))

    state = city.run(backend=backend, **SAMPLING)
    value = json.loads(state["json"])
    assert set(value) == {"name", "is_capital"}
    assert isinstance(value["name"], str) and isinstance(value["is_capital"], bool)


def prog_fork_join(backend) -> None:
    @sgl.function
    def tips(s, topic):
        s += f"Here are two short tips about {topic}.\n"
        before = s.text()
        forks = s.fork(2)
        forks += lambda i: f"Tip {i + 1}:" + sgl.gen("tip", max_tokens=16, stop="\n")
        forks.join()
        assert s.text() == before  # gather_variable leaves the parent text alone
        s += "In short: " + sgl.gen("summary", max_tokens=8, stop="\n")

    state = tips.run(topic="staying healthy", backend=backend, **SAMPLING)
    assert isinstance(state["tip"], list) and len(state["tip"]) == 2
    assert all(isinstance(t, str) and "\n" not in t for t in state["tip"])
    assert "Tip 1:" not in state.text() and "In short: " in state.text()


def prog_streaming(backend) -> None:
    @sgl.function
    def story(s):
        s += sgl.user("Say hello in five words.")
        s += sgl.assistant(sgl.gen("answer", max_tokens=16))

    state = story.run(stream=True, backend=backend, **SAMPLING)
    deltas = list(state.text_iter("answer"))
    assert "".join(deltas) == state["answer"]

    whole = story.run(stream=True, backend=backend, **SAMPLING)
    assert "".join(whole.text_iter()) == whole.text()

    async def consume():
        st = story.run(stream=True, backend=backend, **SAMPLING)
        return [d async for d in st.text_async_iter("answer")], st

    async_deltas, st = asyncio.run(consume())
    assert "".join(async_deltas) == st["answer"]


def prog_run_batch(backend) -> None:
    @sgl.function
    def capital(s, country):
        s += sgl.user(f"What is the capital of {country}?")
        s += sgl.assistant(sgl.gen("answer", max_tokens=8))

    countries = ["France", "Japan", "Peru"]
    states = capital.run_batch([{"country": c} for c in countries], backend=backend, **SAMPLING)
    assert len(states) == len(countries)
    for country, state in zip(countries, states):
        assert f"capital of {country}?" in state.text()
        assert isinstance(state["answer"], str)
    positional = capital.run_batch([[c] for c in countries], backend=backend, **SAMPLING)
    assert [s.messages()[-2]["content"] for s in positional] == [s.messages()[-2]["content"] for s in states]


def prog_gen_int(backend) -> None:
    @sgl.function
    def count(s):
        s += "Q: How many legs does a spider have?\nA (a number): "
        s += sgl.gen("legs", dtype=int, max_tokens=8)
        s += "\nQ: How many days are in a week?\nA (a number): "
        s += sgl.gen_int("days", max_tokens=8)

    state = count.run(backend=backend, **SAMPLING)
    assert isinstance(int(state["legs"].strip()), int)
    assert isinstance(int(state["days"].strip()), int)


ALL_PROGRAMS = [prog_multi_turn_chat, prog_few_shot, prog_select, prog_regex, prog_json, prog_fork_join,
                prog_streaming, prog_run_batch, prog_gen_int]
