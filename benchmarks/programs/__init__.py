"""Program-level benchmarks: SGLang-style workloads as @sgl.function programs on generated data.

Each module is runnable (`python -m benchmarks.programs.<name> --help`); `benchmarks.run_all`
runs them all with the radix-cache and jump-forward ablations and writes docs/benchmarks.md.
"""
from __future__ import annotations

from importlib import import_module

WORKLOAD_NAMES = ("few_shot", "select_endings", "tree_of_thought", "json_extract", "regex_records",
                  "multi_turn", "react_agent")


def load_workload(name: str):
    """The Workload of `benchmarks.programs.<name>`."""
    if name not in WORKLOAD_NAMES:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOAD_NAMES)}")
    return import_module(f"{__name__}.{name}").WORKLOAD
