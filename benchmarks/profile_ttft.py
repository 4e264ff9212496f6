"""Where the first token of a batch-1 request goes, on the host: each engine step's wall time and,
inside the prefill step, the host time of its parts (no device syncs are added, so on a GPU these
are launch costs unless a part waits for the device itself).

    python -m benchmarks.profile_ttft --shape smollm2-135m --prompt 512 [--requests 5] [--device cuda]
                                       [--cprofile 30]

--cprofile N then runs --requests more requests under cProfile and prints the N functions with the
most own time (per request), so a layer's host time can be split by function.

Prints a table per request (the median over --requests fresh prompts after one warm-up request):
time to first token, the steps up to it, and the prefill step split into schedule, batch build,
sampling info, model forward (with the mean per decoder layer), logits + sampling, and the rest.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict

import torch

from benchmarks.gpu_models import SHAPES, random_engine
from benchmarks.report import table


class _Timer:
    """Wraps obj.name so each call adds its host time to totals[label]."""

    def __init__(self, totals: dict, obj, name: str, label: str):
        self.obj, self.name, self.orig = obj, name, getattr(obj, name)
        orig = self.orig

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                totals[label] += time.perf_counter() - t0
        setattr(obj, name, timed)

    def restore(self) -> None:
        setattr(self.obj, self.name, self.orig)


def run(shape: str, prompt_len: int, requests: int, device: str, cprofile: int = 0) -> list[list]:
    cfg = SHAPES[shape]
    eng = random_engine(cfg, device=device, dtype="bfloat16" if device == "cuda" else "float32",
                        max_running_requests=8, cuda_graph_max_bs=8, chunked_prefill_size=8192)
    g = random.Random(0)
    params = {"temperature": 0, "max_new_tokens": 4, "ignore_eos": True}
    runner = eng.runner
    model = runner.model
    layers = list(model.model.layers) if hasattr(model, "model") else []
    rows_by_label: dict[str, list[float]] = defaultdict(list)
    for i in range(requests + 1):
        totals: dict[str, float] = defaultdict(float)
        steps: list[tuple[float, float, int]] = []  # (start, end, tokens scheduled)
        timers = [_Timer(totals, eng.scheduler, "schedule", "schedule"),
                  _Timer(totals, runner, "_prepare", "build batch"),
                  _Timer(totals, runner, "_sampling_info", "sampling info"),
                  _Timer(totals, runner, "_sample", "sampling launch"),
                  _Timer(totals, runner, "collect", "collect (waits for the device)"),
                  _Timer(totals, eng.processor, "process", "process outputs"),
                  _Timer(totals, model, "forward", "model forward (eager)"),
                  _Timer(totals, model, "compute_logits", "LM head")]
        timers += [_Timer(totals, layer, "forward", "decoder layers") for layer in layers]
        step = eng.step

        def traced_step():
            t0 = time.perf_counter()
            before = dict(totals)
            done = step()
            steps.append((t0, time.perf_counter(), before))
            return done
        eng.step = traced_step
        prompt = [g.randrange(10, cfg["vocab_size"]) for _ in range(prompt_len)]
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            out = eng.generate(input_ids=prompt, sampling_params=params)
        finally:
            del eng.step
            for t in timers:
                t.restore()
        ttft = out["meta_info"]["ttft"] * 1e3
        if i == 0:
            continue  # warm-up
        steps = [st for st in steps if st[0] >= t0]  # (the idle loop may have stepped before)
        # the prefill step: the first one whose model forward ran eagerly
        prefill = None
        for j, (a, b, before) in enumerate(steps):
            after = steps[j + 1][2] if j + 1 < len(steps) else totals
            if after.get("model forward (eager)", 0) > before.get("model forward (eager)", 0):
                prefill = (a, b, before, after)
                break
        if prefill is None and steps:  # (a prefill replayed from a CUDA graph: the first step)
            a, b, before = steps[0]
            prefill = (a, b, before, steps[1][2] if len(steps) > 1 else totals)
        rows_by_label["time to first token"].append(ttft)
        rows_by_label["call -> first step start"].append((steps[0][0] - t0) * 1e3 if steps else float("nan"))
        if prefill is not None:
            a, b, before, after = prefill
            rows_by_label["prefill step (wall)"].append((b - a) * 1e3)
            for label in sorted(set(after) | set(before)):
                d = (after.get(label, 0) - before.get(label, 0)) * 1e3
                rows_by_label[f"  {label}"].append(d)
            if layers:
                d = (after.get("decoder layers", 0) - before.get("decoder layers", 0)) * 1e3
                rows_by_label["  per decoder layer"].append(d / len(layers))
        rows_by_label["steps up to the first token"].append(
            sum(1 for a, b, _ in steps if a < t0 + ttft / 1e3))
    graphs = getattr(eng.runner, "prefill_graphs", None)
    if graphs is not None and graphs.timings:  # measured at start-up, synchronised, best of 3
        print(f"{shape}: prefill graph buckets, eager vs replayed (ms), kept up to {graphs.max_tokens}")
        print(table(["tokens", "eager ms", "replay ms"],
                    [[g, e * 1e3, r * 1e3] for g, (e, r) in graphs.timings.items()]))
    if cprofile:
        _cprofile(eng, cfg, prompt_len, requests, params, g, cprofile)
    eng.shutdown()
    return [[label, statistics.median(v)] for label, v in rows_by_label.items()]


def _cprofile(eng, cfg, prompt_len: int, requests: int, params: dict, g: random.Random, top: int) -> None:
    import cProfile
    import pstats
    prof = cProfile.Profile()
    step = eng.step

    def profiled_step():  # the engine's steps run on its own thread: profile there
        prof.enable()
        try:
            return step()
        finally:
            prof.disable()
    eng.step = profiled_step
    try:
        for _ in range(requests):
            prompt = [g.randrange(10, cfg["vocab_size"]) for _ in range(prompt_len)]
            eng.generate(input_ids=prompt, sampling_params=params)
    finally:
        del eng.step
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # (file, line, fn) -> (cc, nc, tt, ct, ..)
    out = [[f"{fn} ({file.rsplit('/', 1)[-1]}:{line})", nc / requests, tt * 1e6 / requests, ct * 1e6 / requests]
           for (file, line, fn), (cc, nc, tt, ct, _) in rows]
    print(f"cProfile, per request ({requests} requests; profiler overhead inflates small calls):")
    print(table(["function", "calls", "own µs", "cumulative µs"], out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cprofile", type=int, default=0, help="then print the top N functions by own time")
    args = ap.parse_args()
    rows = run(args.shape, args.prompt, args.requests, args.device, args.cprofile)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"{args.shape}, batch 1, prompt {args.prompt}, {name}: host ms, median of {args.requests}")
    print(table(["part", "ms"], rows))


if __name__ == "__main__":
    main()
