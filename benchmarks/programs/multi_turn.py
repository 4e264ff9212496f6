"""Multi-turn chat with a growing history: each turn resends the whole conversation, which the
radix cache already holds from the previous turn.

    python -m benchmarks.programs.multi_turn --num-requests 8
"""
from __future__ import annotations

import sgl_lang as sgl

from .cli import main
from .data_bank import chat_sessions
from .workload import Workload

NUM_TURNS = 4
SYSTEM = ("You are a patient science tutor. Answer in one or two short sentences, use plain words, "
          "and build on what you said earlier in the conversation.")


@sgl.function
def chat(s, turns):
    s += sgl.system(SYSTEM)
    for i, question in enumerate(turns):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen(f"answer_{i}", max_tokens=24))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"turns": turns} for turns in chat_sessions(num, NUM_TURNS, seed)]


def is_valid(state, args: dict) -> bool:
    return len(state.messages()) == 1 + 2 * NUM_TURNS and all(
        isinstance(state[f"answer_{i}"], str) for i in range(NUM_TURNS))


WORKLOAD = Workload("multi_turn", f"{NUM_TURNS}-turn chat, history resent every turn", chat, make_batch,
                    is_valid, {"temperature": 0.0}, default_num_requests=8)

if __name__ == "__main__":
    main(WORKLOAD)
