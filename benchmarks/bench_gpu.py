"""GPU throughput: our engine vs HF transformers `generate` in the same run, on random-weight models
of real shapes (weights' values do not change step cost), fixed output lengths (ignore_eos).

    python -m benchmarks.bench_gpu [--shapes smollm2-135m,llama-3.1-8b] [--no-hf] [--no-offline]
                                   [--no-kernels] [--no-write]

Cases: batch 1 (in 512 / out 128), batch 64 (in 512 / out 256), the nano-vllm-style offline run
(256 sequences, input and output lengths uniform in [100, 1024], seed 0, llama-3.2-1b shape), and
attention-kernel microbenchmarks against their byte floors. Floors use the measured 3.0 TB/s of the
card (GPU.md: 3.0 TB/s H100, 4.2 TB/s H200): a decode step must read every weight once plus the KV of every sequence.
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

from benchmarks.gpu_models import SHAPES, hf_config, random_engine
from benchmarks.report import table, write_section
from benchmarks.triton_compiles import CompileLog

# bytes/s, measured device-to-device copy (GPU.md): 3.0 TB/s on the H100, 4.2 TB/s on the H200
BANDWIDTH = 4.2e12 if torch.cuda.is_available() and "H200" in torch.cuda.get_device_name(0) else 3.0e12


def _weights_bytes(cfg: dict) -> int:
    h, i, L, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    attn = h * d * (cfg["num_attention_heads"] * 2 + cfg["num_key_value_heads"] * 2)
    per_layer = attn + 3 * h * i
    return 2 * (L * per_layer + v * h)  # bf16; the LM head is read every step (tied or not)


def _kv_bytes_per_token(cfg: dict) -> int:
    d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * d


def _floor_tok_s(cfg, bs, in_len, out_len) -> float:
    """Decode-only bound: per step read weights + the KV of bs sequences at their mean length."""
    step_bytes = _weights_bytes(cfg) + bs * (in_len + out_len / 2) * _kv_bytes_per_token(cfg)
    return bs * BANDWIDTH / step_bytes


def _prompts(bs, in_len, vocab, seed):
    g = random.Random(seed)
    return [[g.randrange(10, vocab) for _ in range(in_len)] for _ in range(bs)]


ENGINE_FLAGS: dict = {}  # set from the command line, for every engine built here


def run_ours(cfg, bs, in_len, out_len, **flags) -> tuple[float, dict]:
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", **flags, **ENGINE_FLAGS)
    params = {"temperature": 0, "max_new_tokens": out_len, "ignore_eos": True}
    # warm-up at the timed shape (full-size prefill chunks, this batch size's decode), so no Triton
    # compile lands inside the timed run
    eng.generate(input_ids=_prompts(bs, in_len, cfg["vocab_size"], 99), sampling_params=dict(params, max_new_tokens=8))
    eng.flush_cache()
    prompts = _prompts(bs, in_len, cfg["vocab_size"], 0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with CompileLog() as log:
        outs = eng.generate(input_ids=prompts, sampling_params=params)
    dt = time.perf_counter() - t0
    if log.entries:
        print(f"batch {bs}: Triton compiled inside the timed run\n{log.summary()}", flush=True)
    n = sum(o["meta_info"]["completion_tokens"] for o in outs)
    # decode phase: from the last request's first token to the last request's end
    decode_s = max(o["meta_info"]["e2e_latency"] for o in outs) - max(o["meta_info"]["ttft"] for o in outs)
    stats = {"steps": eng.num_steps, "graph_ms": _graph_step_ms(eng, bs),
             "decode_tok_s": (n - len(outs)) / decode_s if decode_s > 0 else float("nan"),
             "overlapped_steps": eng.num_overlapped_steps, "decode_gemm": str(eng.runner.decode_gemm)}
    eng.shutdown()
    del eng
    gc.collect()
    torch.cuda.empty_cache()
    return n / dt, stats


def _graph_step_ms(eng, bs: int) -> float:
    """GPU time of one captured decode step of batch bs (the replay alone, no host work)."""
    gr = eng.runner.graph_runner
    if gr is None or bs > gr.max_bs:
        return float("nan")
    return 1e3 * gr.replay_seconds(next(s for s in gr.batch_sizes if s >= bs), replays=20)


def run_hf(cfg, bs, in_len, out_len) -> float:
    from transformers import AutoModelForCausalLM
    conf = hf_config(cfg)
    conf._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf, torch_dtype=torch.bfloat16)
    model = model.to_empty(device="cuda")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.tie_weights()
    model.eval()
    ids = torch.tensor(_prompts(bs, in_len, cfg["vocab_size"], 0), device="cuda")
    kw = dict(do_sample=False, max_new_tokens=out_len, min_new_tokens=out_len, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :32], **dict(kw, max_new_tokens=4, min_new_tokens=4))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n = (out.shape[1] - in_len) * bs
    del model, out
    gc.collect()
    torch.cuda.empty_cache()
    return n / dt


def run_offline(name="llama-3.2-1b", num_seqs=256) -> tuple[float, int]:
    cfg = SHAPES[name]
    g = random.Random(0)
    ins = [g.randint(100, 1024) for _ in range(num_seqs)]
    outs_len = [g.randint(100, 1024) for _ in range(num_seqs)]
    prompts = [[g.randrange(10, cfg["vocab_size"]) for _ in range(n)] for n in ins]
    eng = random_engine(cfg, device="cuda", dtype="bfloat16", max_running_requests=256,
                        cuda_graph_max_bs=256, chunked_prefill_size=8192, max_prefill_tokens=16384,
                        **ENGINE_FLAGS)
    eng.generate(input_ids=prompts[:2], sampling_params={"max_new_tokens": 8, "ignore_eos": True})
    eng.flush_cache()
    params = [{"temperature": 0.6, "max_new_tokens": n, "ignore_eos": True} for n in outs_len]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with CompileLog() as log:
        res = eng.generate(input_ids=prompts, sampling_params=params)
    dt = time.perf_counter() - t0
    if log.entries:
        print(f"offline: Triton compiled inside the timed run\n{log.summary()}", flush=True)
    total = sum(o["meta_info"]["completion_tokens"] for o in res)
    stats = eng.get_stats()
    print(f"offline: {stats['num_steps']} steps, {stats['num_prefill_graph_steps']} prefill graph replays, "
          f"{stats['num_graph_steps']} decode graph replays", flush=True)
    eng.shutdown()
    return total / dt, total


def run_kernels() -> list[list]:
    import triton.testing
    from sgl_lang.kernels.attention_decode import decode_attention, pick_num_kv_splits
    from sgl_lang.kernels.attention_extend import extend_attention
    from benchmarks.gpu_timing import extend_inputs
    rows = []
    for bs, seq, hq, hkv, d in ((64, 768, 32, 8, 128), (1, 640, 32, 8, 128), (256, 1024, 32, 8, 64)):
        slots = bs * seq
        kc = torch.randn(slots + 1, hkv, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        r2t = (torch.randperm(slots, device="cuda") + 1).view(bs, seq)
        q = torch.randn(bs, hq, d, device="cuda", dtype=torch.bfloat16)
        lens = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
        s = pick_num_kv_splits(bs, hkv)
        ms = triton.testing.do_bench(lambda: decode_attention(q, kc, vc, r2t, lens, s))
        floor_us = 2 * slots * hkv * d * 2 / BANDWIDTH * 1e6
        rows.append([f"decode bs={bs} len={seq} H={hq}/{hkv} D={d}", ms * 1e3, floor_us, "KV bytes"])
    # the SmolLM2-135M decode shape at batch 64 (9 q / 3 KV heads, D 64): the split count the
    # engine picks (pick_num_kv_splits) against the others, since a step runs 30 of these
    bs, seq, hq, hkv, d = 64, 768, 9, 3, 64
    kc = torch.randn(bs * seq + 1, hkv, d, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    r2t = (torch.randperm(bs * seq, device="cuda") + 1).view(bs, seq)
    q = torch.randn(bs, hq, d, device="cuda", dtype=torch.bfloat16)
    lens = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
    for s in (1, 2, 4, 8):
        ms = triton.testing.do_bench(lambda: decode_attention(q, kc, vc, r2t, lens, s))
        picked = " (picked)" if s == pick_num_kv_splits(bs, hkv) else ""
        rows.append([f"decode bs={bs} len={seq} H={hq}/{hkv} D={d} splits={s}{picked}", ms * 1e3,
                     2 * bs * seq * hkv * d * 2 / BANDWIDTH * 1e6, "KV bytes"])
    for bs, seq, hq, hkv, d in ((8, 1024, 32, 8, 128), (1, 4096, 32, 8, 128)):
        q, kc, vc, r2t, starts, zeros, ext = extend_inputs(bs, seq, hq, hkv, d, shuffled=False)
        ms = triton.testing.do_bench(lambda: extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq))
        flops = 4 * bs * hq * d * seq * seq / 2  # causal
        rows.append([f"prefill bs={bs} len={seq} H={hq}/{hkv} D={d}", ms * 1e3, flops / 770e12 * 1e6,
                     "FLOPs (770 TFLOP/s)"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="smollm2-135m,llama-3.1-8b")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-offline", action="store_true")
    ap.add_argument("--no-kernels", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--chunk", type=int, default=8192, help="chunked_prefill_size (prefill tokens per step)")
    ap.add_argument("--prefill-graph-tokens", type=int, default=None,
                    help="cuda_graph_max_prefill_tokens (0: eager prefills; default: the engine's)")
    ap.add_argument("--only-offline", action="store_true")
    ap.add_argument("--batches", default="1,64", help="which of the batch sizes 1 and 64 to run")
    ap.add_argument("--decode-gemm", default=None, help="the engine's decode_gemm (auto, triton, cublas)")
    ap.add_argument("--no-fuse-rope", action="store_true",
                    help="decode: rope_store_ then attention (two launches), not decode_attention_rope")
    ap.add_argument("--attention-backend", default=None, help="the engine's attention_backend (triton, flashinfer)")
    ap.add_argument("--prefill-attention-backend", default=None,
                    help="the engine's prefill_attention_backend (e.g. flashinfer beside triton's decode graphs)")
    ap.add_argument("--flag", action="append", default=[], metavar="NAME=INT",
                    help="an integer engine flag for every engine built here, e.g. disable_pdl=1")
    args = ap.parse_args()
    for item in args.flag:
        name, _, value = item.partition("=")
        ENGINE_FLAGS[name] = int(value)
    if args.no_fuse_rope:
        from sgl_lang.runtime.layers.triton_attention import TritonAttentionBackend
        TritonAttentionBackend.fuse_decode_rope = False
    if args.decode_gemm:
        ENGINE_FLAGS["decode_gemm"] = args.decode_gemm
    if args.attention_backend:
        ENGINE_FLAGS["attention_backend"] = args.attention_backend
    if args.prefill_attention_backend:
        ENGINE_FLAGS["prefill_attention_backend"] = args.prefill_attention_backend
    if args.prefill_graph_tokens is not None:
        ENGINE_FLAGS["cuda_graph_max_prefill_tokens"] = args.prefill_graph_tokens
    out_dir = os.environ.get("OUT", ".")
    rows, details = [], {}
    for name in ([] if args.only_offline else args.shapes.split(",")):
        cfg = SHAPES[name]
        for bs, in_len, out_len in ((1, 512, 128), (64, 512, 256)):
            if str(bs) not in args.batches.split(","):
                continue
            hf = run_hf(cfg, bs, in_len, out_len) if not args.no_hf else float("nan")
            ours, stats = run_ours(cfg, bs, in_len, out_len, max_running_requests=max(bs, 64),
                                   cuda_graph_max_bs=64, chunked_prefill_size=args.chunk,
                                   max_prefill_tokens=max(16384, args.chunk))
            floor = _floor_tok_s(cfg, bs, in_len, out_len)
            gpu_tok_s = bs * 1e3 / stats["graph_ms"]  # decode steps at the GPU's pace, no host work
            rows.append([name, f"{bs} ({in_len}/{out_len})", ours, stats["decode_tok_s"], hf, gpu_tok_s, floor,
                         f"{100 * stats['decode_tok_s'] / floor:.0f}%"])
            details[f"{name}/bs{bs}"] = dict(ours=ours, hf=hf, floor=floor, **stats)
            print(rows[-1], "decode GEMMs:", stats["decode_gemm"], flush=True)
    if not args.no_offline:
        tok_s, total = run_offline()
        rows.append(["llama-3.2-1b offline", "256 ([100,1024]/[100,1024])", tok_s, float("nan"), float("nan"),
                     float("nan"), float("nan"), "-"])
        details["offline"] = dict(tok_s=tok_s, total=total)
        print(rows[-1], flush=True)
    text = table(["shape", "batch (in/out)", "ours out tok/s", "ours decode-phase tok/s", "HF out tok/s",
                  "graph-replay-only tok/s", "decode floor tok/s", "decode-phase/floor"], rows)
    if not args.no_kernels:
        krows = run_kernels()
        text += "\n\nAttention kernels (median, triton.testing.do_bench):\n\n" + table(
            ["kernel", "time us", "floor us", "floor from"], krows)
    print(text)
    with open(os.path.join(out_dir, "bench_gpu.json"), "w") as f:
        json.dump(details, f, indent=1, default=str)
    if not args.no_write:
        with open(os.path.join(out_dir, "section.md"), "w") as f:
            f.write(text)
        write_section("GPU (issue 6)", text, "python -m benchmarks.bench_gpu " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
