"""Extend (prefill) attention launch shapes on the GPU: BLOCK_N x num_warps x num_stages x BLOCK_M.

    python -m benchmarks.bench_extend_attention

Shapes: an 8B prefill chunk (16 prompts of 512 tokens, 32 / 8 heads, D 128), one 4,096-token
8B prompt, and a 135M chunk (16 x 512, 9 / 3 heads, D 64); KV slots shuffled as a pool hands
them out. Each variant is checked against the default launch, then timed (do_bench median);
TFLOP/s counts the causal half of QK^T and PV. Prints a table; nothing is written to docs/.
"""
from __future__ import annotations

import torch
import triton
import triton.testing

from benchmarks.gpu_timing import extend_inputs
from benchmarks.report import table
from sgl_lang.kernels.attention_extend import BLOCK_M, EXTEND_LAUNCH, extend_attention, extend_blocks

CASES = [("8B 16x512", 16, 512, 32, 8, 128), ("8B 1x4096", 1, 4096, 32, 8, 128),
         ("135M 16x512", 16, 512, 9, 3, 64)]
LAUNCHES = [(bn, w, st, bm) for bm in (64, 128) for bn in (32, 64, 128) for w in (4, 8) for st in (2, 3)]


def main() -> None:
    rows = []
    for name, bs, seq, hq, hkv, d in CASES:
        q, kc, vc, r2t, starts, zeros, ext = extend_inputs(bs, seq, hq, hkv, d, shuffled=True)
        by_m = {bm: tuple(extend_blocks(ext.cpu(), block_m=bm).to("cuda")) for bm in (64, 128)}
        blocks = by_m[BLOCK_M]
        flops = 4 * bs * hq * d * seq * seq / 2
        ref = extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq, blocks=blocks)
        default = EXTEND_LAUNCH.get(triton.next_power_of_2(d)) + (BLOCK_M,)
        timed = []
        for launch in LAUNCHES:
            try:
                out = extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq, blocks=by_m[launch[3]],
                                       launch=launch)
            except Exception as e:  # out of shared memory or registers
                print(name, launch, type(e).__name__)
                continue
            err = (out.float() - ref.float()).abs().max().item()
            if err > 2e-2:
                print(name, launch, f"max error {err:.3g} vs the default launch: skipped")
                continue
            ms = triton.testing.do_bench(lambda: extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq,
                                                                  blocks=by_m[launch[3]], launch=launch))
            timed.append((ms, launch))
            print(name, launch, f"{ms * 1e3:.1f} µs", flush=True)
        timed.sort()
        dflt = next(ms for ms, la in timed if la == default)
        for ms, launch in timed[:3]:
            rows.append([name, f"{launch}", f"{ms * 1e3:.1f}", f"{flops / ms / 1e9:.0f}",
                         f"{dflt / ms:.2f}x" + (" (default)" if launch == default else "")])
        rows.append([name, f"{default} default", f"{dflt * 1e3:.1f}", f"{flops / dflt / 1e9:.0f}", "1.00x"])
    print(f"\n{torch.cuda.get_device_name(0)}: extend attention, best three launches per case and the default")
    print(table(["case", "(BLOCK_N, warps, stages, BLOCK_M)", "µs", "TFLOP/s", "vs default"], rows))


def orders() -> None:
    """The default launch over a token-major and a head-major cache (shuffled and in-order slots)."""
    rows = []
    for name, bs, seq, hq, hkv, d in CASES:
        flops = 4 * bs * hq * d * seq * seq / 2
        for shuffled in (True, False):
            for head_major in (False, True):
                q, kc, vc, r2t, starts, zeros, ext = extend_inputs(bs, seq, hq, hkv, d, shuffled, head_major)
                blocks = tuple(extend_blocks(ext.cpu()).to("cuda"))
                ms = triton.testing.do_bench(lambda: extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq,
                                                                      blocks=blocks))
                rows.append([name, "shuffled" if shuffled else "in order", "head" if head_major else "token",
                             f"{ms * 1e3:.1f}", f"{flops / ms / 1e9:.0f}"])
                print(rows[-1], flush=True)
    print(table(["case", "slots", "cache order", "µs", "TFLOP/s"], rows))


if __name__ == "__main__":
    import sys
    if "--orders" in sys.argv:
        orders()
    else:
        main()
