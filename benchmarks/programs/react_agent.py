"""ReAct-style agent loop: Thought (gen) -> Action (select) -> argument (gen) -> Observation from
a scripted environment, up to MAX_STEPS rounds. Each call extends the same growing prompt.

    python -m benchmarks.programs.react_agent --num-requests 8
"""
from __future__ import annotations

import sgl_lang as sgl

from .cli import main
from .data_records import agent_tasks, observe
from .workload import Workload

MAX_STEPS = 3
ACTIONS = ["Search", "Finish"]
INSTRUCTIONS = (
    "Answer the question by interleaving Thought, Action and Observation steps. Thought reasons about "
    "the situation. Action is one of: Search[term] looks the term up and returns one sentence; "
    "Finish[answer] returns the answer and ends the task.\n\nExample.\nQuestion: Where was Ada born?\n"
    "Thought: I should look Ada up.\nAction: Search[Ada]\nObservation: Ada was born in Lyon.\n"
    "Thought: Lyon is the answer.\nAction: Finish[Lyon]")


@sgl.function
def react(s, question, facts):
    s += sgl.system(INSTRUCTIONS)
    s += sgl.user("Question: " + question)
    for i in range(MAX_STEPS):
        s += sgl.assistant("Thought: " + sgl.gen(f"thought_{i}", max_tokens=24, stop="\n") + "\nAction: "
                           + sgl.select(f"action_{i}", choices=ACTIONS) + "["
                           + sgl.gen(f"argument_{i}", max_tokens=12, stop=["]", "\n"]) + "]")
        if s[f"action_{i}"] == "Finish":
            break
        s += sgl.user("Observation: " + observe(facts, s[f"action_{i}"], s[f"argument_{i}"]))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"question": t.question, "facts": t.facts} for t in agent_tasks(num, seed)]


def is_valid(state, args: dict) -> bool:
    return state["action_0"] in ACTIONS and isinstance(state["thought_0"], str)


WORKLOAD = Workload("react_agent", f"ReAct loop, up to {MAX_STEPS} rounds of gen + select + gen against a "
                    "scripted environment", react, make_batch, is_valid, {"temperature": 0.0},
                    default_num_requests=4, uses_choices=True)

if __name__ == "__main__":
    main(WORKLOAD)
