"""Kernels launched a few times each, for Nsight Compute to profile one launch of (GPU only).

    ncu --kernel-name regex:masked_sample --launch-skip 2 --launch-count 1 \
        python -m benchmarks.ncu_targets sample-greedy

Targets: sample-greedy / sample-temp (masked_sample at bs 512 x vocab 128,256 with a grammar
bitmask on every row, the lean kernels bench_sampling_kernel times) and gemm-qkv / gemm-down
(kernels/skinny_gemm.py at M = 64 with the engine's launch for Llama-3.1-8B's qkv / down). It
only launches; read the profile with ncu's own report.
"""
from __future__ import annotations

import sys

import torch


def main() -> None:
    target = sys.argv[1]
    gen = torch.Generator(device="cuda").manual_seed(0)
    if target.startswith("sample"):
        from sgl_lang.kernels.masked_sampling import masked_sample
        bs, vocab = 512, 128256
        logits = torch.randn(bs, vocab, device="cuda", generator=gen) * 3
        words = (vocab + 31) // 32
        bitmask = torch.randint(-2**31, 2**31 - 1, (bs, words), device="cuda", dtype=torch.int32, generator=gen)
        greedy = target == "sample-greedy"
        temperature = torch.full((bs,), 0.0 if greedy else 0.8, device="cuda")
        top_k = torch.zeros(bs, dtype=torch.int32, device="cuda")
        top_p = torch.ones(bs, device="cuda")
        min_p = torch.zeros(bs, device="cuda")
        keys = torch.randint(0, 2**31 - 1, (bs, 2), device="cuda", dtype=torch.int32, generator=gen)
        for _ in range(4):
            masked_sample(logits, bitmask, temperature, top_k, top_p, min_p, keys,
                          may_filter=False, may_sample=not greedy)
    else:
        from sgl_lang.kernels.skinny_gemm import decode_config, skinny_linear
        n, k = {"gemm-qkv": (6144, 4096), "gemm-down": (4096, 14336)}[target]
        x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16, generator=gen)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02
        tickets = torch.zeros(n // 16, dtype=torch.int32, device="cuda")
        for _ in range(4):
            skinny_linear(x, w, decode_config(64, n, k), tickets=tickets)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
