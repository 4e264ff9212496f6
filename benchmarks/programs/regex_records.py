"""Regex-shaped decoding: turn a log line into a record whose shape is one regex (a date, an IPv4
address, an enum level, a digit), with literal field names between them for jump-forward.

    python -m benchmarks.programs.regex_records --num-requests 8 [--disable-jump-forward]
"""
from __future__ import annotations

import re

import sgl_lang as sgl

from .cli import main
from .data_records import RECORD_REGEX, log_lines
from .workload import Workload

_EXAMPLE = log_lines(1, seed=54321)[0]
INSTRUCTIONS = (
    "Convert each server log line into a record with the fields date, ip, level and severity_score "
    "(1 = harmless, 5 = urgent). Copy the date and the client IP exactly; level is INFO, WARN or "
    "ERROR.\n\nExample line:\n" + _EXAMPLE.text + "\nExample record:\n"
    f"date: {_EXAMPLE.date}\nip: {_EXAMPLE.ip}\nlevel: {_EXAMPLE.level}\nseverity_score: 2\n")


@sgl.function
def log_to_record(s, line):
    s += sgl.system(INSTRUCTIONS)
    s += sgl.user("Line:\n" + line)
    s += sgl.assistant(sgl.gen("record", max_tokens=64, regex=RECORD_REGEX))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"line": ln.text} for ln in log_lines(num, seed)]


def is_valid(state, args: dict) -> bool:
    return re.fullmatch(RECORD_REGEX, state["record"]) is not None


WORKLOAD = Workload("regex_records", "log line -> date / IPv4 / enum record (one regex constraint)",
                    log_to_record, make_batch, is_valid, {"temperature": 0.0}, default_num_requests=8,
                    uses_regex=True)

if __name__ == "__main__":
    main(WORKLOAD)
