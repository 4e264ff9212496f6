"""Why a decode step costs more inside the engine loop than as a bare graph replay.

bench_gpu's batch workload (bs prompts of in_len tokens, out_len new tokens, ignore_eos) runs
once; then the batch-bs decode graph is replayed on the state the loop left (its KV slot layout,
context in_len + out_len) and, after a flush, on a fresh batch decoded to the same context
(prefill slots in one block per request, few decode slots). Each replay set is timed short
(20 replays, best of 3) and long (`--long` back-to-back replays, as long as the loop's decode
phase), so slot layout and sustained-load effects separate. CUDA events; prints one table.

    python -m benchmarks.graph_vs_loop [--shape llama-3.1-8b] [--bs 64] [--long 300]
"""
from __future__ import annotations

import argparse
import random

import torch

from benchmarks.gpu_models import SHAPES, random_engine
from benchmarks.report import table


def _long_ms(graph, n: int) -> tuple[float, float]:
    """(ms per replay over the first tenth, over the last tenth) of n back-to-back replays."""
    evs = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    evs[0].record()
    for i in range(n):
        graph.replay()
        evs[i + 1].record()
    torch.cuda.synchronize()
    k = max(1, n // 10)
    return evs[0].elapsed_time(evs[k]) / k, evs[n - k].elapsed_time(evs[n]) / k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3.1-8b")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--in-len", type=int, default=512)
    ap.add_argument("--out-len", type=int, default=256)
    ap.add_argument("--long", type=int, default=300)
    args = ap.parse_args()
    cfg = SHAPES[args.shape]
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=max(args.bs, 64),
                        cuda_graph_max_bs=64, chunked_prefill_size=8192, max_prefill_tokens=16384)
    g = random.Random(0)

    def prompts(n_tok):
        return [[g.randrange(10, cfg["vocab_size"]) for _ in range(n_tok)] for _ in range(args.bs)]

    params = {"temperature": 0, "max_new_tokens": args.out_len, "ignore_eos": True}
    eng.generate(input_ids=prompts(args.in_len), sampling_params=dict(params, max_new_tokens=8))
    eng.flush_cache()
    outs = eng.generate(input_ids=prompts(args.in_len), sampling_params=params)
    decode_s = max(o["meta_info"]["e2e_latency"] for o in outs) - max(o["meta_info"]["ttft"] for o in outs)
    loop_ms = 1e3 * decode_s / (args.out_len - 1)
    gr = eng.runner.graph_runner
    bs_g = next(s for s in gr.batch_sizes if s >= args.bs)
    rows = [["engine loop, decode phase (mean step)", f"{loop_ms:.3f}", "", ""]]
    short = 1e3 * gr.replay_seconds(bs_g, 20)
    first, last = _long_ms(gr.graphs[bs_g], args.long)
    rows.append([f"replay on the loop's final state (ctx {args.in_len + args.out_len})", f"{short:.3f}",
                 f"{first:.3f}", f"{last:.3f}"])
    eng.flush_cache()
    ctx = args.in_len + args.out_len
    eng.generate(input_ids=prompts(ctx - 16), sampling_params=dict(params, max_new_tokens=16))
    short = 1e3 * gr.replay_seconds(bs_g, 20)
    first, last = _long_ms(gr.graphs[bs_g], args.long)
    rows.append([f"replay on a fresh batch (ctx {ctx}, 16 decoded)", f"{short:.3f}", f"{first:.3f}", f"{last:.3f}"])
    eng.shutdown()
    print(table(["what", "ms per step (20 replays)", f"first tenth of {args.long}", f"last tenth of {args.long}"],
                rows))


if __name__ == "__main__":
    main()
