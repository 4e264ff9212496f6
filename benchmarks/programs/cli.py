"""The command line every workload module shares:

    python -m benchmarks.programs.few_shot --backend local --num-requests 16 --parallel 8
    python -m benchmarks.programs.few_shot --backend local --disable-radix-cache
    python -m benchmarks.programs.json_extract --backend endpoint --url http://127.0.0.1:30000
    python -m benchmarks.programs.multi_turn --backend openai --url http://127.0.0.1:8080/v1 --model smollm2
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional

from .metrics import HEADERS, RunMetrics
from .runner import BACKENDS, BackendSpec, make_backend, run_workload
from .workload import Workload


def add_backend_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--backend", choices=BACKENDS, default="local")
    ap.add_argument("--url", default=None,
                    help="endpoint: our server (http://host:port); openai: any OpenAI-compatible base URL (.../v1)")
    ap.add_argument("--model", default="default", help="openai: the model name the server expects")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--openai-completions", action="store_true",
                    help="openai: send the rendered prompt to /v1/completions instead of chat messages")
    ap.add_argument("--parallel", type=int, default=8, help="programs in flight at once")
    ap.add_argument("--seed", type=int, default=0, help="data generator seed")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ap.add_argument("--disable-radix-cache", action="store_true", help="local: engine flag")
    ap.add_argument("--disable-jump-forward", action="store_true", help="local: engine flag")
    ap.add_argument("--engine-flag", action="append", default=[], metavar="NAME=JSON",
                    help="local: any other EngineConfig flag, e.g. --engine-flag dtype='\"float32\"'")


def backend_spec(args: argparse.Namespace) -> BackendSpec:
    flags = {}
    if args.disable_radix_cache:
        flags["disable_radix_cache"] = True
    if args.disable_jump_forward:
        flags["disable_jump_forward"] = True
    for item in args.engine_flag:
        name, _, value = item.partition("=")
        flags[name] = json.loads(value)
    return BackendSpec(args.backend, args.url, args.model, args.api_key, tuple(sorted(flags.items())),
                       is_chat_model=not args.openai_completions)


def format_table(results: list[RunMetrics]) -> str:
    rows = [[str(c) for c in r.row()] for r in results]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(workload: Workload, argv: Optional[list[str]] = None) -> RunMetrics:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.programs.{workload.name}",
                                 description=workload.title)
    ap.add_argument("--num-requests", type=int, default=workload.default_num_requests)
    ap.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    add_backend_args(ap)
    args = ap.parse_args(argv)
    spec = backend_spec(args)
    backend = make_backend(spec)
    try:
        result = run_workload(workload, backend, num_requests=args.num_requests, parallel=args.parallel,
                              config=spec.label(), seed=args.seed, progress_bar=not args.no_progress)
    finally:
        if hasattr(backend, "shutdown"):
            backend.shutdown()
    print(format_table([result]))
    if result.first_error:
        print(f"{result.num_errors} program(s) failed; first error: {result.first_error}")
    if args.json:
        print(json.dumps(result.to_dict()))
    return result
