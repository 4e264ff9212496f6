"""Workload: one benchmark program plus the data it runs on and a check of its output.

Every workload module in this package defines `WORKLOAD = Workload(...)` and can be run alone
(`python -m benchmarks.programs.few_shot --help`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Workload:
    name: str  # short id used on the command line and in tables ("few_shot")
    title: str  # one line for the docs
    program: Any  # an sgl_lang Program (@sgl.function)
    make_batch: Callable[[int, int], list[dict]]  # (num_requests, seed) -> program arguments
    is_valid: Callable[[Any, dict], bool]  # (finished state, its arguments) -> output well-formed?
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0})  # run() defaults
    default_num_requests: int = 8
    uses_choices: bool = False  # select(): OpenAI-compatible servers need prompt logprobs for it
    uses_regex: bool = False  # regex constraints: most OpenAI-compatible servers ignore them
