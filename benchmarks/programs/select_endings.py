"""HellaSwag-style select: a long shared context of solved examples, then one situation and many
candidate endings scored with `sgl.select` (one batched prefill per request on our runtime).

    python -m benchmarks.programs.select_endings --num-requests 8
"""
from __future__ import annotations

import sgl_lang as sgl

from .cli import main
from .data_bank import situations
from .workload import Workload

NUM_SHOTS = 16
NUM_CHOICES = 8


@sgl.function
def pick_ending(s, shots, context, endings):
    s += sgl.user(shots + "\n\nComplete the last story with the most sensible ending.\n" + context)
    s += sgl.assistant(sgl.select("ending", choices=endings))


def make_batch(num: int, seed: int) -> list[dict]:
    items = situations(NUM_SHOTS + num, NUM_CHOICES, seed)
    shots = "Each story ends in the most sensible way.\n\n" + "\n\n".join(
        f"{it.context}{it.endings[it.label]}" for it in items[:NUM_SHOTS])
    return [{"shots": shots, "context": it.context, "endings": [e.strip() for e in it.endings]}
            for it in items[NUM_SHOTS:]]


def is_valid(state, args: dict) -> bool:
    return state["ending"] in args["endings"]


WORKLOAD = Workload("select_endings", f"HellaSwag-style select over {NUM_CHOICES} endings after "
                    f"{NUM_SHOTS} solved stories", pick_ending, make_batch, is_valid, {"temperature": 0.0},
                    default_num_requests=4, uses_choices=True)

if __name__ == "__main__":
    main(WORKLOAD)
