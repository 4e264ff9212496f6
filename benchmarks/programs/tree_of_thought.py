"""Tree of thought: propose plans in parallel branches (fork), expand every plan into several
steps (nested fork), join, and ask for a final answer. Every branch shares the long instructions
and the question; without the radix cache each of the 7 calls recomputes them.

    python -m benchmarks.programs.tree_of_thought --num-requests 4
"""
from __future__ import annotations

import sgl_lang as sgl

from .cli import main
from .data_bank import question_bank
from .workload import Workload

NUM_PLANS = 2
NUM_STEPS = 2
INSTRUCTIONS = (
    "You are a careful problem solver. For every problem you first propose short plans, then carry "
    "each plan out step by step, then compare the results and answer. Keep every line short. "
    "Worked example. Problem: A shop sells pens at 3 dollars each. How much do 14 pens cost? "
    "Plan 1: multiply the price by the number of pens. Step: 3 times 14 is 42. "
    "Plan 2: add 3 dollars fourteen times. Step: 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42. "
    "Both plans agree, so the answer is 42 dollars. Rules: never skip the comparison; if two plans "
    "disagree, redo the arithmetic of both and explain which step was wrong; state units; write "
    "numbers with digits; give the final answer on its own line, starting with 'Answer:'. "
) * 2


@sgl.function
def tree_of_thought(s, question):
    s += sgl.system(INSTRUCTIONS)
    s += sgl.user("Problem: " + question)
    plans = s.fork(NUM_PLANS)
    for i, p in enumerate(plans):
        p += sgl.assistant(f"Plan {i + 1}: " + sgl.gen("plan", max_tokens=16, stop="\n"))
        p += sgl.user("Carry out this plan.")
        steps = p.fork(NUM_STEPS)
        for j, st in enumerate(steps):
            st += sgl.assistant(f"Step {j + 1}: " + sgl.gen("step", max_tokens=16, stop="\n"))
        steps.join()
    plans.join()
    summary = "\n".join(f"Plan {i + 1}: {plan} -> {' / '.join(steps)}"
                        for i, (plan, steps) in enumerate(zip(s["plan"], s["step"])))
    s += sgl.user(summary + "\nCompare the plans and give the final answer.")
    s += sgl.assistant(sgl.gen("answer", max_tokens=16, stop="\n"))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"question": q.question} for q in question_bank("arithmetic", num, seed + 7)]


def is_valid(state, args: dict) -> bool:
    plans, steps = state["plan"], state["step"]
    return (len(plans) == NUM_PLANS and all(len(x) == NUM_STEPS for x in steps)
            and isinstance(state["answer"], str))


WORKLOAD = Workload("tree_of_thought", f"{NUM_PLANS} plans x {NUM_STEPS} steps (nested fork/join) + final "
                    f"answer: {1 + NUM_PLANS + NUM_PLANS * NUM_STEPS} calls sharing one long prefix",
                    tree_of_thought, make_batch, is_valid, {"temperature": 0.0}, default_num_requests=4)

if __name__ == "__main__":
    main(WORKLOAD)
