"""Engine start-up on the GPU with prefill CUDA graphs on and off: wall time of Engine() (random
weights of a real shape, decode graphs, the warm-up requests and, when on, the prefill graphs'
capture and timing), the largest prefill bucket kept, and the memory torch reserved.

    python -m benchmarks.bench_startup [--shapes smollm2-135m,llama-3.2-1b]

Prints a table; the difference between the two rows of a shape is what prefill graphs add.
"""
from __future__ import annotations

import argparse
import gc
import time

import torch

from benchmarks.gpu_models import SHAPES, random_engine
from benchmarks.report import table


def start(cfg: dict, prefill_tokens: int) -> list:
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved()
    t0 = time.perf_counter()
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=64, cuda_graph_max_bs=64,
                        chunked_prefill_size=8192, cuda_graph_max_prefill_tokens=prefill_tokens)
    seconds = time.perf_counter() - t0
    graphs = eng.runner.prefill_graphs
    kept = graphs.max_tokens if graphs is not None else 0
    reserved = (torch.cuda.memory_reserved() - before) / 2**30
    eng.shutdown()
    del eng, graphs  # (the runner holds the model and the KV pool)
    gc.collect()
    torch.cuda.empty_cache()
    return [prefill_tokens, seconds, kept, reserved]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="smollm2-135m,llama-3.2-1b")
    args = ap.parse_args()
    start(SHAPES["smollm2-135m"], 0)  # first engine of the process: CUDA context, Triton disk cache
    rows = []
    for name in args.shapes.split(","):
        for tokens in (8192, 0):
            rows.append([name, *start(SHAPES[name], tokens)])
            print(rows[-1], flush=True)
    print(f"{torch.cuda.get_device_name(0)}: Engine() start-up")
    print(table(["shape", "cuda_graph_max_prefill_tokens", "start-up s", "prefill graphs up to",
                 "GiB reserved (weights, KV, graphs)"], rows))


if __name__ == "__main__":
    main()
