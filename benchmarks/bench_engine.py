"""Engine throughput on the default model: load time, prefill speed, decode at 1/8/32 concurrent
requests, and a shared-prefix few-shot workload with the radix cache on vs off.

    python -m benchmarks.bench_engine [--dtype bfloat16] [--out-len 64] [--no-write]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

from benchmarks.report import table, write_section


def concurrent(engine, prompts, params):
    """Submit all prompts from separate threads (as concurrent clients), wait for all."""
    outs = [None] * len(prompts)

    def one(i):
        outs[i] = engine.generate(prompts[i], params)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out-len", type=int, default=64)
    ap.add_argument("--quantization", default=None, choices=[None, "int8"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from sgl_lang.runtime.engine import Engine

    t0 = time.perf_counter()
    eng = Engine(dtype=args.dtype, quantization=args.quantization)
    load_s = time.perf_counter() - t0
    tok = eng.tokenizer
    rows = []
    # warm-up
    eng.generate("Hello", {"max_new_tokens": 4})

    # prefill speed: a ~500-token prompt, 1 output token, cache off by flushing
    long_prompt = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(50))
    eng.flush_cache()
    t = time.perf_counter()
    out = eng.generate(long_prompt, {"max_new_tokens": 1})
    dt = time.perf_counter() - t
    n_prompt = out["meta_info"]["prompt_tokens"]
    rows.append(["prefill, 1 request", n_prompt, 1, dt, n_prompt / dt, "prompt tok/s"])

    params = {"temperature": 0, "max_new_tokens": args.out_len, "ignore_eos": True}
    for n in (1, 8, 32):
        prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me a story about {i} cats."}],
                                           tokenize=False, add_generation_prompt=True) for i in range(n)]
        eng.flush_cache()
        outs, dt = concurrent(eng, prompts, params)
        total = sum(o["meta_info"]["completion_tokens"] for o in outs)
        rows.append([f"decode, {n} concurrent", sum(o["meta_info"]["prompt_tokens"] for o in outs) // n,
                     args.out_len, dt, total / dt, "output tok/s (incl. prefill)"])
    eng.shutdown()

    # shared-prefix few-shot: cache on vs off
    shots = "".join(f"Q: What is {a} plus {b}?\nA: {a + b}\n" for a, b in
                    [(i, 2 * i + 1) for i in range(1, 41)])
    qs = [f"{shots}Q: What is {i} plus {i + 3}?\nA:" for i in range(32)]
    few = {"temperature": 0, "max_new_tokens": 4, "stop": ["\n"]}
    fs_rows = []
    for disable in (False, True):
        e = Engine(dtype=args.dtype, quantization=args.quantization, disable_radix_cache=disable)
        e.generate(qs[0], few)  # warm-up; with the cache on this also caches the shots
        outs, dt = concurrent(e, qs, few)
        st = e.get_stats()
        cached = sum(o["meta_info"]["cached_tokens"] for o in outs)
        prompt = sum(o["meta_info"]["prompt_tokens"] for o in outs)
        fs_rows.append(["off" if disable else "on", len(qs), prompt, prompt - cached,
                        dt, len(qs) / dt, f"{cached / prompt:.1%}"])
        e.shutdown()

    t1 = table(["workload", "prompt len", "out len", "seconds", "tok/s", "unit"], rows)
    t2 = table(["radix cache", "requests", "prompt tokens", "tokens computed", "seconds", "requests/s",
                "hit rate"], fs_rows)
    quant = f", weight-only {args.quantization}" if args.quantization else ""
    body = (f"Default model (SmolLM2-135M-Instruct), dtype {args.dtype}{quant}, model load {load_s:.1f} s "
            f"(from the converted cache folder).\n\n{t1}\n\nShared-prefix few-shot (40 shots, ~{prompt // len(qs)} "
            f"prompt tokens each, 32 concurrent requests, 4 output tokens):\n\n{t2}\n")
    print(body)
    if not args.no_write:
        write_section(f"Engine on CPU (issue 3){quant}", body, "python -m benchmarks.bench_engine " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
