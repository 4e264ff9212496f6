"""Few-shot QA with a long shared prefix (MMLU-style): every request of a subject carries the same
k solved questions and differs only in its last question, so the radix cache computes the shots
once. One subject per run, as MMLU is evaluated subject by subject.

    python -m benchmarks.programs.few_shot --num-requests 16 [--disable-radix-cache]
"""
from __future__ import annotations

import sgl_lang as sgl

from .cli import main
from .data_bank import LETTERS, SUBJECTS, question_bank
from .workload import Workload

NUM_SHOTS = 16
SUBJECT = SUBJECTS[0]
DEV_SEED = 2024  # the shots are a fixed "dev set", as in MMLU; --seed varies the test questions


def build_shots(subject: str) -> str:
    header = (f"The following are multiple choice questions about {subject}. "
              f"Reply with the letter of the correct option only.\n\n")
    return header + "\n\n".join(q.render(with_answer=True) for q in question_bank(subject, NUM_SHOTS, DEV_SEED))


@sgl.function
def few_shot_qa(s, shots, question):
    s += sgl.user(shots + "\n\n" + question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=1))


# bound, so that tracing sees the shots as constant text and run_batch's precache covers them
few_shot_subject = few_shot_qa.bind(shots=build_shots(SUBJECT))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"question": q.render(with_answer=False)} for q in question_bank(SUBJECT, num, seed + 1)]


def is_valid(state, args: dict) -> bool:
    return state["answer"].strip()[:1] in LETTERS


WORKLOAD = Workload("few_shot", f"MMLU-style {NUM_SHOTS}-shot multiple choice ({SUBJECT}), long shared prefix",
                    few_shot_subject, make_batch, is_valid, {"temperature": 0.0}, default_num_requests=16)

if __name__ == "__main__":
    main(WORKLOAD)
