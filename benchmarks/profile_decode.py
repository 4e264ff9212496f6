"""Where one captured decode step spends its GPU time: kernels of a CUDA-graph replay, grouped by
name, per step. Run on the GPU (it prints a table; nothing is written to docs/):

    python -m benchmarks.profile_decode --shape smollm2-135m --bs 64 --ctx 768

The engine first decodes a real batch (prompts of ctx - 16 tokens, 16 new tokens each), so the
graph's static inputs hold that batch (its sequence lengths, its KV slots) when it is replayed.

    python -m benchmarks.profile_decode --loop      # the engine's own loop instead of bare replays

--loop profiles a whole generate call (host and device): how long the device sat idle between
kernels during the decode steps (gaps over 5 µs, their count and sum), the host-side calls that
waited for the device, and the host ops with the most self time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random

import torch

from benchmarks.gpu_models import SHAPES, random_engine
from benchmarks.report import table


def _short(name: str) -> str:
    """A kernel's name without template arguments and launch parameters."""
    for cut in ("<", "("):
        name = name.split(cut)[0]
    return name[:70]


def profile(shape: str, bs: int, ctx: int, replays: int, **flags) -> tuple[list[list], float, dict]:
    cfg = SHAPES[shape]
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=max(bs, 64),
                        cuda_graph_max_bs=max(bs, 64), chunked_prefill_size=8192, max_prefill_tokens=16384,
                        **flags)
    g = random.Random(0)
    prompts = [[g.randrange(10, cfg["vocab_size"]) for _ in range(ctx - 16)] for _ in range(bs)]
    eng.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 16, "ignore_eos": True})
    gr = eng.runner.graph_runner
    g_size = next(s for s in gr.batch_sizes if s >= bs)
    graph = gr.graphs[g_size]
    step_us = 1e6 * gr.replay_seconds(g_size, replays)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    eng.shutdown()
    per_name: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])  # name -> [count, µs]
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time_total > 0:
            cell = per_name[_short(ev.name)]
            cell[0] += 1
            cell[1] += ev.device_time_total
    kernel_us = sum(c[1] for c in per_name.values()) / replays
    rows = [[name, c[0] / replays, c[1] / replays, f"{100 * c[1] / replays / step_us:.1f}%"]
            for name, c in sorted(per_name.items(), key=lambda kv: -kv[1][1])]
    rows.append(["(all kernels)", sum(c[0] for c in per_name.values()) / replays, kernel_us,
                 f"{100 * kernel_us / step_us:.1f}%"])
    rows.append(["(graph step, CUDA events)", float("nan"), step_us, "100%"])
    return rows, step_us, {k: v for k, v in per_name.items()}


def _kernel_totals(events, t0: float, t1: float, steps: int, top: int = 14) -> str:
    """Device time of the kernels that start in [t0, t1) on the trace clock, by name, per step."""
    tot, cnt = collections.Counter(), collections.Counter()
    for ev in events:
        if t0 <= ev.time_range.start < t1:
            tot[_short(ev.name)] += ev.time_range.end - ev.time_range.start
            cnt[_short(ev.name)] += 1
    rows = [[k, f"{cnt[k] / steps:.1f}", f"{v / steps:.1f}"] for k, v in tot.most_common(top)]
    return (f"kernel time {sum(tot.values()) / steps:.0f} µs per step over {steps} steps\n"
            + table(["kernel", "launches per step", "µs per step"], rows))


def profile_loop(shape: str, bs: int, ctx: int, out_len: int = 64, **flags) -> str:
    cfg = SHAPES[shape]
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=max(bs, 64),
                        cuda_graph_max_bs=max(bs, 64), chunked_prefill_size=8192, max_prefill_tokens=16384,
                        **flags)
    g = random.Random(1)
    params = {"temperature": 0, "max_new_tokens": out_len, "ignore_eos": True}
    warm = [[g.randrange(10, cfg["vocab_size"]) for _ in range(ctx)] for _ in range(bs)]
    eng.generate(input_ids=warm, sampling_params=dict(params, max_new_tokens=8))
    eng.flush_cache()
    prompts = [[g.randrange(10, cfg["vocab_size"]) for _ in range(ctx)] for _ in range(bs)]
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
        torch.cuda.synchronize()
    eng.shutdown()
    # the decode phase: from the last request's first token on (host clock, as bench_gpu)
    ttft = max(o["meta_info"]["ttft"] for o in outs)
    e2e = max(o["meta_info"]["e2e_latency"] for o in outs)
    cuda_events = [ev for ev in prof.events()
                   if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time_total > 0]
    kernels = sorted((ev.time_range.start, ev.time_range.end) for ev in cuda_events)
    t_end = kernels[-1][1]
    t_start = t_end - 1e6 * (e2e - ttft)  # µs, the decode phase's start on the trace clock
    busy, gaps, last = 0.0, [], None
    for a, b in kernels:
        if b < t_start:
            continue
        a = max(a, t_start)
        if last is not None and a > last:
            gaps.append(a - last)
        busy += max(0.0, b - max(a, last or a))
        last = max(last or b, b)
    span = t_end - t_start
    waits = collections.Counter()
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CPU and (
                "ynchronize" in ev.name or ev.name in ("cudaMemcpyAsync", "cudaMemcpy", "cudaHostAlloc")):
            waits[ev.name] += ev.cpu_time_total
    steps = out_len - 1
    lines = [f"{shape} engine loop, batch {bs}, prompt {ctx}, {out_len} new tokens: decode phase "
             f"{span / 1e3:.1f} ms = {span / steps:.0f} µs per step; device busy {100 * busy / span:.1f}%; "
             f"{len([x for x in gaps if x > 5])} gaps > 5 µs summing to {sum(x for x in gaps if x > 5) / steps:.0f} µs "
             f"per step; largest gaps (µs): {[round(x) for x in sorted(gaps)[-8:]]}",
             "host time in calls that can wait for the device (whole call, µs): "
             + ", ".join(f"{k} {v:,.0f}" for k, v in waits.most_common()),
             "decode phase " + _kernel_totals(cuda_events, t_start, t_end, steps),
             f"before it (prefill, {(t_start - kernels[0][0]) / 1e3:.1f} ms on the trace) "
             + _kernel_totals(cuda_events, kernels[0][0], t_start, 1),
             prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=768, help="sequence length at the profiled step")
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--loop", action="store_true", help="profile the engine loop (see the docstring)")
    ap.add_argument("--out-len", type=int, default=64, help="new tokens per request in --loop")
    ap.add_argument("--flag", action="append", default=[], metavar="NAME=INT",
                    help="an integer engine flag, e.g. disable_pdl=1 (kernel spans then do not overlap)")
    args = ap.parse_args()
    flags = {k: int(v) for k, _, v in (f.partition("=") for f in args.flag)}
    if args.loop:
        text = profile_loop(args.shape, args.bs, args.ctx, args.out_len, **flags)
        print(text)
        with open(os.path.join(os.environ.get("OUT", "."), f"profile_loop_{args.shape}_bs{args.bs}.txt"), "w") as f:
            f.write(text)
        return
    rows, step_us, raw = profile(args.shape, args.bs, args.ctx, args.replays, **flags)
    print(f"{args.shape} decode step, batch {args.bs}, context {args.ctx}, {torch.cuda.get_device_name(0)}: "
          f"{step_us:.0f} µs per graph replay = {args.bs * 1e6 / step_us:,.0f} tok/s at the GPU's pace")
    print(table(["kernel", "launches per step", "µs per step", "share of step"], rows))
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, f"profile_decode_{args.shape}_bs{args.bs}.json"), "w") as f:
        json.dump({"step_us": step_us, "kernels": raw, **vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
