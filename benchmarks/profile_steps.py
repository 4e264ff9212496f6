"""Where the wall time of bench_gpu's batch workload goes, step by step, without a profiler.

Runs bench_gpu's timed case (random weights of a real shape, bs prompts of in_len tokens, out_len
greedy tokens each, ignore_eos) and wraps the engine's step and its host components with
perf_counter. Each step is listed with what it scheduled (prefill tokens, decodes) and where its
wall time went; `wait` is the time the host spent blocked on the device (the read-back of the step
launched before). Host busy = step wall time - wait. Prints the prefill phase step by step and
the decode phase as medians, and writes every step to $OUT/profile_steps_<shape>_bs<bs>.json.

    python -m benchmarks.profile_steps [--shape smollm2-135m] [--bs 64] [--in-len 512] [--out-len 256]
                                       [--chunk 8192] [--flag NAME=INT ...]
Runs on CPU too (a tiny shape, for the host path), e.g. --shape tiny --device cpu.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict

import torch

from benchmarks.bench_gpu import _prompts
from benchmarks.gpu_models import SHAPES, random_engine
from benchmarks.report import table

# (label, owner attribute of the engine ("" = the engine), method)
PARTS = [
    ("drain", "", "_drain_inbox"),
    ("schedule", "scheduler", "schedule"),
    ("commit", "scheduler", "commit"),
    ("prepare", "runner", "_prepare"),
    ("sampling info", "runner", "_sampling_info"),
    ("forward launch", "runner", "_hidden"),
    ("sample launch", "runner", "_sample"),
    ("collect", "runner", "collect"),
    ("process", "processor", "process"),
    ("finish", "scheduler", "finish_step"),
]
TINY = dict(SHAPES["smollm2-135m"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32)


class Steps:
    def __init__(self, engine, device: str):
        self.engine, self.device, self.rows, self.cur = engine, device, [], defaultdict(float)
        for label, owner, name in PARTS:
            self._wrap(getattr(engine, owner) if owner else engine, name, label)
        gr = engine.runner.graph_runner
        if gr is not None:
            self._wrap(gr, "replay", "graph replay")
        self._wrap_wait()
        self._wrap_launch()
        self._wrap_step()

    def _wrap(self, obj, name: str, label: str) -> None:
        fn = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.cur[label] += time.perf_counter() - t0
                if label == "schedule" and a == () and k == {}:
                    self._note(fn.__self__)
        setattr(obj, name, timed)

    def _note(self, scheduler) -> None:
        self.cur["decodes"] = sum(1 for r in scheduler.running if r.extend_len == 1)
        self.cur["prefill tokens"] = sum(r.extend_len for r in scheduler.running if r.extend_len > 1)

    def _wrap_wait(self) -> None:
        """The host's blocking waits on the device: the read-back event of a deferred step."""
        if not self.device.startswith("cuda"):
            return
        steps = self
        orig = torch.cuda.Event.synchronize

        def synchronize(ev):
            t0 = time.perf_counter()
            orig(ev)
            steps.cur["wait"] += time.perf_counter() - t0
        torch.cuda.Event.synchronize = synchronize

    def _wrap_launch(self) -> None:
        """CUDA events around each launch, on the stream: after the run, the device's time from a
        launch's first queued work to its last, and its idle gap before the next launch."""
        if not self.device.startswith("cuda"):
            return
        fn, cur = self.engine.runner.launch, self

        def launch(*a, **k):
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                return fn(*a, **k)
            finally:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                cur.cur["events"] = (start, end)
        self.engine.runner.launch = launch

    def device_times(self) -> None:
        """Turn each step's events into 'device' (its launch's span on the device, ms -> s) and
        'gap' (idle device time from the end of the previous launch to this one's start)."""
        torch.cuda.synchronize()
        prev_end = None
        for r in self.rows:
            ev = r.pop("events", None)
            if ev is None:
                continue
            r["device"] = ev[0].elapsed_time(ev[1]) / 1e3
            if prev_end is not None:
                r["gap"] = prev_end.elapsed_time(ev[0]) / 1e3
            prev_end = ev[1]

    def _wrap_step(self) -> None:
        fn, engine = self.engine.step, self.engine

        def step():
            t0 = time.perf_counter()
            out = fn()
            self.cur["t"] = t0
            self.cur["step"] = time.perf_counter() - t0
            self.cur["finished"] = len(out)
            self.rows.append(dict(self.cur))
            self.cur = defaultdict(float)
            return out
        engine.step = step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--in-len", type=int, default=512)
    ap.add_argument("--out-len", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--flag", action="append", default=[], metavar="NAME=INT")
    args = ap.parse_args()
    flags = {k: int(v) for k, _, v in (f.partition("=") for f in args.flag)}
    cfg = TINY if args.shape == "tiny" else SHAPES[args.shape]
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    eng = random_engine(cfg, device=args.device, dtype=dtype, max_running_requests=max(args.bs, 64),
                        cuda_graph_max_bs=64, chunked_prefill_size=args.chunk,
                        max_prefill_tokens=max(16384, args.chunk), **flags)
    params = {"temperature": 0, "max_new_tokens": args.out_len, "ignore_eos": True}
    eng.generate(input_ids=_prompts(args.bs, args.in_len, cfg["vocab_size"], 99),
                 sampling_params=dict(params, max_new_tokens=8))
    eng.flush_cache()
    prompts = _prompts(args.bs, args.in_len, cfg["vocab_size"], 0)
    steps = Steps(eng, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = eng.generate(input_ids=prompts, sampling_params=params)
    dt = time.perf_counter() - t0
    n = sum(o["meta_info"]["completion_tokens"] for o in outs)
    ttft = max(o["meta_info"]["ttft"] for o in outs)
    rows = steps.rows
    if args.device.startswith("cuda"):
        steps.device_times()
    for r in rows:
        r["t"] -= t0
        r["busy"] = r["step"] - r.get("wait", 0.0)
    labels = [p[0] for p in PARTS] + ["graph replay", "wait", "busy", "step", "device", "gap"]
    ms = lambda x: round(1e3 * x, 2)  # noqa: E731
    print(f"{args.shape} bs {args.bs}: {n / dt:,.1f} out tok/s end to end, {dt * 1e3:.1f} ms; last first token "
          f"{ttft * 1e3:.1f} ms; first step starts at {rows[0]['t'] * 1e3:.1f} ms; {len(rows)} steps")
    early = [r for r in rows if r["t"] < ttft + 0.002]
    print("\nsteps until the last first token (ms):\n")
    print(table(["t", "prefill tok", "decodes"] + labels,
                [[ms(r["t"]), int(r.get("prefill tokens", 0)), int(r.get("decodes", 0))]
                 + [ms(r.get(k, 0.0)) for k in labels] for r in early[:40]]))
    dec = [r for r in rows if r.get("decodes") == args.bs]
    if dec:
        print(f"\nfull-decode steps ({len(dec)}), median ms; sum of steps {ms(sum(r['step'] for r in dec))} ms:\n")
        print(table(labels, [[ms(statistics.median(r.get(k, 0.0) for r in dec)) for k in labels]]))
    out_dir = os.environ.get("OUT", ".")
    with open(os.path.join(out_dir, f"profile_steps_{args.shape}_bs{args.bs}.json"), "w") as f:
        json.dump(dict(tok_s=n / dt, seconds=dt, ttft=ttft, steps=rows), f)
    eng.shutdown()


if __name__ == "__main__":
    main()
