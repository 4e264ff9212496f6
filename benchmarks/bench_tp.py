"""Tensor parallelism: our engine at several --tp sizes on a random-weight model of a real shape
(load_format="dummy": each rank builds its own shard on its own device; weights' values do not
change step cost), fixed output lengths (ignore_eos).

    python -m benchmarks.bench_tp --model llama-3.1-8b --tp 1 2
    python -m benchmarks.bench_tp --model llama-3.1-70b --tp 4        # --tp 2 on H200s
    python -m benchmarks.bench_tp --model tiny --tp 1 2 --device cpu  # end-to-end check on CPU

Cases: batch 64 (in 512 / out 256) output tokens/s, and batch 1 (in 512 / out 128) time per
output token (prefill included) and tokens/s. Prints a table, writes $OUT/bench_tp.json and the
section "Tensor parallelism (issue 9): <model>" of docs/benchmarks.md (unless --no-write).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time

import torch

from benchmarks.gpu_models import SHAPES, dummy_engine
from benchmarks.report import table, write_section
from benchmarks.triton_compiles import CompileLog

CASES = ((64, 512, 256), (1, 512, 128))  # (batch, input len, output len)


def _prompts(bs: int, in_len: int, vocab: int, seed: int) -> list[list[int]]:
    g = random.Random(seed)
    return [[g.randrange(10, vocab) for _ in range(in_len)] for _ in range(bs)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_case(eng, cfg: dict, device: str, bs: int, in_len: int, out_len: int) -> dict:
    params = {"temperature": 0, "max_new_tokens": out_len, "ignore_eos": True}
    eng.flush_cache()  # no prefix reuse between cases
    prompts = _prompts(bs, in_len, cfg["vocab_size"], seed=bs)
    _sync(device)
    trace = []  # (start, end) of each engine step that ran a batch: where the first token goes
    step = eng.step

    def traced_step():
        start, n = time.perf_counter(), eng.num_steps
        done = step()
        if eng.num_steps > n:
            trace.append((start, time.perf_counter()))
        return done

    eng.step = traced_step  # the loop thread calls self.step()
    t0 = time.perf_counter()
    steps0, graphs0 = eng.num_steps, eng.get_stats()["num_graph_steps"]
    try:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
    finally:
        del eng.step
    dt = time.perf_counter() - t0
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise RuntimeError(f"generation failed: {errors[0]}")
    n = sum(o["meta_info"]["completion_tokens"] for o in outs)
    # decode phase: from the last request's first token to the last request's end
    decode_s = max(o["meta_info"]["e2e_latency"] for o in outs) - max(o["meta_info"]["ttft"] for o in outs)
    return {"batch": bs, "in": in_len, "out": out_len, "tokens": n, "seconds": dt,
            "tok_s": n / dt, "ms_per_step": 1e3 * dt / out_len,
            "decode_tok_s": (n - len(outs)) / decode_s if decode_s > 0 else float("nan"),
            "ttft_ms": 1e3 * max(o["meta_info"]["ttft"] for o in outs),  # the last first token
            "steps": eng.num_steps - steps0, "graph_steps": eng.get_stats()["num_graph_steps"] - graphs0,
            "wait_before_first_step_ms": 1e3 * (trace[0][0] - t0) if trace else float("nan"),
            "first_steps_ms": [round(1e3 * (b - a), 2) for a, b in trace[:4]]}


def run_tp(name: str, tp: int, device: str, dtype: str, num_threads) -> list[dict]:
    cfg = SHAPES[name]
    flags = dict(device=device, dtype=dtype, tp_size=tp, max_running_requests=64, cuda_graph_max_bs=64,
                 chunked_prefill_size=8192, max_prefill_tokens=16384, num_threads=num_threads)
    if device == "cpu":
        flags["max_total_tokens"] = 64 * (512 + 256) + 64
    t0 = time.perf_counter()
    eng = dummy_engine(cfg, **flags)
    load_s = time.perf_counter() - t0
    try:
        # warm-up at each timed shape (its prefill chunks, its decode batch size), so no Triton
        # compile (e.g. the sampling kernel's per-batch-size split) lands inside a timed run
        # (a seed per case: a prompt that is a cached prefix would warm the 1-token extend instead)
        warm = {"temperature": 0, "max_new_tokens": 8, "ignore_eos": True}
        for bs, in_len, _ in CASES:
            with CompileLog() as log:
                eng.generate(input_ids=_prompts(bs, in_len, cfg["vocab_size"], 99 + bs), sampling_params=warm)
            print(f"tp={tp} warm-up batch {bs}: {len(log.entries)} Triton compiles\n{log.summary()}", flush=True)
        eng.flush_cache()
        results = []
        for case in CASES:
            with CompileLog() as log:
                results.append(dict(run_case(eng, cfg, device, *case), tp=tp, load_s=load_s))
            results[-1]["compiles"] = [r for _, r in log.entries]
            if log.entries:
                print(f"tp={tp} batch {case[0]}: Triton compiled inside the timed run\n{log.summary()}", flush=True)
    finally:
        eng.shutdown()
        del eng
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    for r in results:
        print(f"tp={tp} batch {r['batch']} ({r['in']}/{r['out']}): {r['tok_s']:.1f} out tok/s, "
              f"{r['ms_per_step']:.2f} ms/step, decode phase {r['decode_tok_s']:.1f} tok/s, "
              f"last first token {r['ttft_ms']:.0f} ms, "
              f"{r['graph_steps']} of {r['steps']} steps by graph replay; "
              f"first step began {r['wait_before_first_step_ms']:.1f} ms after the call, "
              f"first steps took {r['first_steps_ms']} ms", flush=True)
    return results


def render(name: str, results: list[dict]) -> str:
    base = {r["batch"]: r["tok_s"] for r in results if r["tp"] == 1}
    rows = []
    for r in results:
        speedup = f"{r['tok_s'] / base[r['batch']]:.2f}x" if r["batch"] in base else "-"
        rows.append([name, r["tp"], f"{r['batch']} ({r['in']}/{r['out']})", r["tok_s"], r["decode_tok_s"],
                     r["ttft_ms"], r["ms_per_step"], speedup, r["load_s"]])
    return table(["shape", "tp", "batch (in/out)", "out tok/s", "decode-phase tok/s", "last first token ms",
                  "ms per decode step (wall / out len)", "vs tp 1", "engine start s"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b", choices=sorted(SHAPES))
    ap.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--num-threads", type=int, default=None, help="CPU threads per rank (default 1 on cpu)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    num_threads = args.num_threads or (1 if args.device == "cpu" else None)
    if args.device == "cuda" and max(args.tp) > torch.cuda.device_count():
        ap.error(f"--tp {max(args.tp)} needs {max(args.tp)} GPUs, {torch.cuda.device_count()} visible")
    results = []
    for tp in args.tp:
        results += run_tp(args.model, tp, args.device, dtype, num_threads)
    text = render(args.model, results)
    text += (f"\n\n{dtype}, random weights (load_format=\"dummy\", built per rank on its device), "
             f"greedy, ignore_eos; wall time includes prefill. Each tp size is a fresh engine.")
    print(text)
    out_dir = os.environ.get("OUT", ".")
    with open(os.path.join(out_dir, "bench_tp.json"), "w") as f:
        json.dump({"model": args.model, "device": args.device, "dtype": dtype, "results": results}, f, indent=1)
    if not args.no_write:
        write_section(f"Tensor parallelism (issue 9): {args.model}", text,
                      "python -m benchmarks.bench_tp " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
