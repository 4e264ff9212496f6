"""Program-level benchmarks (issue 7): every workload in benchmarks/programs on the local runtime
with the radix cache on, off, and jump-forward off; optionally the same programs through our
server (endpoint) or any OpenAI-compatible server. Prints one table, writes a section of
docs/benchmarks.md and PNG plots under docs/images/.

    python -m benchmarks.run_all                       # ~10 minutes on the 2-core CPU box
    python -m benchmarks.run_all --scale 4 --parallel 32   # a GPU: more programs per run
    python -m benchmarks.run_all --openai-url http://127.0.0.1:8080/v1 --openai-model smollm2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks.programs import WORKLOAD_NAMES, load_workload
from benchmarks.programs.cli import format_table
from benchmarks.programs.metrics import RunMetrics
from benchmarks.programs.runner import BackendSpec, make_backend, run_workload
from benchmarks.report import table, write_section

# ablations on the local runtime: config label -> engine flags
LOCAL_CONFIGS = {"cache on": (), "cache off": (("disable_radix_cache", True),),
                 "jump-forward off": (("disable_jump_forward", True),)}
REPEATED = ("few_shot", "tree_of_thought")  # the workloads with speedup targets: measured back to back
IMAGES = os.path.join(os.path.dirname(__file__), "..", "docs", "images")
SECTION = "Programs (issue 7)"
SECTION_REMOTE = "Programs on other servers (issue 7)"  # runs with --configs '' (no local runtime)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOAD_NAMES), help="comma-separated subset")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload's default request count")
    ap.add_argument("--parallel", type=int, default=8, help="programs in flight at once")
    ap.add_argument("--repeats", type=int, default=2, help=f"on/off pairs for {', '.join(REPEATED)}")
    ap.add_argument("--hit-rate-requests", type=int, default=48,
                    help="one more few_shot run, cache on, with this many programs: the cold-start miss "
                         "weighs 1/(n+1), so the hit rate is also reported at a larger n (0: skip)")
    ap.add_argument("--configs", default=",".join(LOCAL_CONFIGS), help="local configs to run (comma-separated)")
    ap.add_argument("--endpoint-url", default=None, help="also run on our server at this URL")
    ap.add_argument("--openai-url", default=None, help="also run through sgl.OpenAI(base_url=...)")
    ap.add_argument("--openai-model", default="default")
    ap.add_argument("--openai-completions", action="store_true",
                    help="send rendered prompts to /v1/completions (programs that put text before a gen "
                         "inside an assistant turn cannot run on chat completions)")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--json-out", default=None, help="write every run's metrics to this JSON file")
    ap.add_argument("--from-json", default=None,
                    help="run nothing: re-render the table, plots and doc section from a --json-out file")
    return ap.parse_args(argv)


def _warm_up(backend) -> None:
    """One tiny request, so that lazy allocations are not billed to the first workload."""
    import sgl_lang as sgl

    @sgl.function
    def hello(s):
        s += sgl.user("Say hi.") + sgl.assistant(sgl.gen("x", max_tokens=2))
    hello.run(backend=backend, temperature=0.0).sync()


def run_local(args, workloads) -> list[RunMetrics]:
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in LOCAL_CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; known: {list(LOCAL_CONFIGS)}")
    backends = {c: make_backend(BackendSpec("local", engine_flags=LOCAL_CONFIGS[c])) for c in configs}
    results = []
    try:
        for b in backends.values():
            _warm_up(b)
        for w in workloads:
            n = max(1, round(w.default_num_requests * args.scale))
            paired = [c for c in ("cache on", "cache off") if c in backends]
            for _ in range(args.repeats if w.name in REPEATED else 1):
                for c in paired:  # back to back, so both see the same background load
                    results.append(_one(w, backends[c], n, args, c))
            for c in configs:
                if c not in paired:
                    results.append(_one(w, backends[c], n, args, c))
            if w.name == "few_shot" and args.hit_rate_requests > 0 and "cache on" in backends:
                results.append(_one(w, backends["cache on"], args.hit_rate_requests, args,
                                    f"cache on, {args.hit_rate_requests} programs"))
    finally:
        for b in backends.values():
            b.shutdown()
    return results


def run_remote(args, workloads, spec: BackendSpec, config: str) -> list[RunMetrics]:
    backend = make_backend(spec)
    return [_one(w, backend, max(1, round(w.default_num_requests * args.scale)), args, config) for w in workloads]


def _one(workload, backend, n, args, config) -> RunMetrics:
    r = run_workload(workload, backend, num_requests=n, parallel=args.parallel, config=config,
                     progress_bar=not args.no_progress)
    print(f"[bench] {workload.name:16s} {config:22s} {r.programs_per_s:7.3f} programs/s  "
          f"hit {r.cache_hit_rate if r.cache_hit_rate is not None else float('nan'):.1%}  "
          f"wall {r.wall_s:6.1f} s  errors {r.num_errors}", flush=True)
    if r.first_error:
        print(f"[bench]   first error: {r.first_error}", flush=True)
    return r


def pool(results: list[RunMetrics]) -> list[RunMetrics]:
    keys = list(dict.fromkeys((r.workload, r.config) for r in results))
    return [RunMetrics.pooled([r for r in results if (r.workload, r.config) == k]) for k in keys]


def speedups(results: list[RunMetrics]) -> list[list]:
    """Per workload: each back-to-back (cache on, cache off) pair's programs/s and their ratio."""
    rows = []
    for w in dict.fromkeys(r.workload for r in results):
        on = [r for r in results if r.workload == w and r.config == "cache on"]
        off = [r for r in results if r.workload == w and r.config == "cache off"]
        for i, (a, b) in enumerate(zip(on, off)):
            rows.append([w, i + 1, f"{a.programs_per_s:.3f}", f"{b.programs_per_s:.3f}",
                         f"{a.programs_per_s / b.programs_per_s:.2f}x",
                         f"{a.cache_hit_rate:.1%}" if a.cache_hit_rate is not None else "n/a"])
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    workloads = [load_workload(n.strip()) for n in args.workloads.split(",") if n.strip()]
    t0 = time.perf_counter()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        names = [w.name for w in workloads]
        results = [r for r in map(RunMetrics.from_dict, saved["runs"]) if r.workload in names]
        args.configs = ",".join(dict.fromkeys(r.config for r in results if r.config in LOCAL_CONFIGS))
        args.parallel = saved.get("parallel", args.parallel)
        command = f"{_command(saved['argv'])}; re-rendered with --from-json"
        return report(args, workloads, results, saved.get("total_s"), command)
    results = run_local(args, workloads) if args.configs else []
    if args.endpoint_url:
        results += run_remote(args, workloads, BackendSpec("endpoint", args.endpoint_url, api_key=args.api_key),
                              f"endpoint @ {args.endpoint_url}")
    if args.openai_url:
        spec = BackendSpec("openai", args.openai_url, args.openai_model, args.api_key,
                           is_chat_model=not args.openai_completions)
        api = "completions" if args.openai_completions else "chat"
        results += run_remote(args, workloads, spec, f"openai {api} @ {args.openai_url}")
    report(args, workloads, results, time.perf_counter() - t0, _command(sys.argv[1:]))


def _command(argv: list[str]) -> str:
    return " ".join(["python -m benchmarks.run_all", *argv])


def report(args, workloads, results: list[RunMetrics], total_s, command: str) -> None:
    """Print the table; write the JSON, the plots and the doc section as asked."""
    pooled = pool(results)
    print(format_table(pooled))
    pairs = speedups(results)
    if pairs:
        print(table(["workload", "pair", "on programs/s", "off programs/s", "speedup", "hit rate (on)"], pairs))
    if total_s is not None:
        print(f"total {total_s:.0f} s")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"argv": sys.argv[1:], "total_s": total_s, "parallel": args.parallel,
                       "runs": [r.to_dict() for r in results]}, f, indent=1)
    if not args.no_write:
        from benchmarks.programs.doc import section_body
        from benchmarks.programs.plots import plot_hit_rates, plot_latency_cdfs, plot_throughput
        is_local = bool(args.configs)
        stem = os.path.join(IMAGES, "programs_" if is_local else "programs_remote_")
        images = [plot_throughput(pooled, stem + "throughput.png"), plot_hit_rates(pooled, stem + "hit_rate.png"),
                  plot_latency_cdfs(pooled, stem + "latency_cdf.png")]
        sizes = {}
        for r in results:  # the first run of each workload: its size per run
            sizes.setdefault(r.workload, r.num_programs)
        body = section_body(args, workloads, pooled, pairs, total_s, [os.path.basename(p) for p in images], sizes)
        write_section(SECTION if is_local else SECTION_REMOTE, body, command)


if __name__ == "__main__":
    main()
