"""Where one captured decode step spends its GPU time: kernels of a CUDA-graph replay, grouped by
name, per step. Run on the GPU (it prints a table; nothing is written to docs/):

    python -m benchmarks.profile_decode --shape smollm2-135m --bs 64 --ctx 768

The engine first decodes a real batch (prompts of ctx - 16 tokens, 16 new tokens each), so the
graph's static inputs hold that batch (its sequence lengths, its KV slots) when it is replayed.
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


def profile(shape: str, bs: int, ctx: int, replays: int) -> tuple[list[list], float, dict]:
    cfg = SHAPES[shape]
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=max(bs, 64),
                        cuda_graph_max_bs=max(bs, 64), chunked_prefill_size=8192, max_prefill_tokens=16384)
    g = random.Random(0)
    prompts = [[g.randrange(10, cfg["vocab_size"]) for _ in range(ctx - 16)] for _ in range(bs)]
    eng.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 16, "ignore_eos": True})
    gr = eng.runner.graph_runner
    graph = gr.graphs[next(s for s in gr.batch_sizes if s >= bs)]
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    step_us = 1e3 * start.elapsed_time(end) / replays
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=768, help="sequence length at the profiled step")
    ap.add_argument("--replays", type=int, default=20)
    args = ap.parse_args()
    rows, step_us, raw = profile(args.shape, args.bs, args.ctx, args.replays)
    print(f"{args.shape} decode step, batch {args.bs}, context {args.ctx}, {torch.cuda.get_device_name(0)}: "
          f"{step_us:.0f} µs per graph replay = {args.bs * 1e6 / step_us:,.0f} tok/s at the GPU's pace")
    print(table(["kernel", "launches per step", "µs per step", "share of step"], rows))
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, f"profile_decode_{args.shape}_bs{args.bs}.json"), "w") as f:
        json.dump({"step_us": step_us, "kernels": raw, **vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
