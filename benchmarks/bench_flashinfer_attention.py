"""Our Triton attention kernels against flashinfer's on the same paged inputs (GPU, flashinfer
importable; the lent machine gets its wheel through .whl, see ../shared/GPU.md).

    python -m benchmarks.bench_flashinfer_attention

Each KV pool slot is a flashinfer page of one token (NHD: the [slots + 1, Hkv, D] caches seen as
[slots + 1, 1, Hkv, D]), so both read the same cache through the same slot lists. Cases at the
8B shape (32 / 8 heads, D 128): decode at batch 64 x 640 keys and batch 1 x 640 (flashinfer's
decode kernel with and without tensor cores), and a fresh prefill of 16 x 512 and 1 x 4,096
tokens (causal, slots shuffled). Every flashinfer output is checked against ours first; times are
`triton.testing.do_bench` medians (L2 flushed between calls), flashinfer's plan() outside the
timing. The first call of each flashinfer variant compiles it (JIT, nvcc): the seconds are
printed. Prints a table; nothing is written to docs/.
"""
from __future__ import annotations

import math
import time

import torch
import triton.testing

from benchmarks.gpu_timing import extend_inputs, kv_cache
from benchmarks.report import table
from sgl_lang.kernels.attention_decode import decode_attention, pick_num_kv_splits
from sgl_lang.kernels.attention_extend import extend_attention, extend_blocks
from sgl_lang.runtime.layers.flashinfer_attention import page_list

HQ, HKV, D = 32, 8, 128
WORKSPACE_BYTES = 256 << 20


def _paged(kc: torch.Tensor) -> torch.Tensor:
    """[slots + 1, Hkv, D] -> [slots + 1, 1, Hkv, D]: one-token pages."""
    return kc.unsqueeze(1)


def _kv_lists(r2t: torch.Tensor, lens: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indptr [bs + 1], indices [sum], last_page_len [bs]) int32 on r2t's device, as the backend plans."""
    dev = r2t.device
    indptr = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    indices = page_list(r2t, torch.tensor(lens, device=dev), sum(lens))
    return indptr.to(dev), indices, torch.ones(len(lens), dtype=torch.int32, device=dev)


def _timed_first(fn) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _check(name: str, got: torch.Tensor, ref: torch.Tensor) -> str:
    err = (got.float().reshape(ref.shape) - ref.float()).abs().max().item()
    if err > 2e-2:
        raise AssertionError(f"{name}: flashinfer differs from ours by {err:.3g}")
    return f"{err:.1e}"


def decode_cases(flashinfer, workspace) -> list[list]:
    rows = []
    for bs, seq in ((64, 640), (1, 640)):
        kc, vc = kv_cache(bs * seq + 1, HKV, D), kv_cache(bs * seq + 1, HKV, D)
        r2t = (torch.randperm(bs * seq, device="cuda") + 1).view(bs, seq)
        q = torch.randn(bs, HQ, D, device="cuda", dtype=torch.bfloat16)
        lens = torch.full((bs,), seq, device="cuda", dtype=torch.int32)
        splits = pick_num_kv_splits(bs, HKV)
        ref = decode_attention(q, kc, vc, r2t, lens, splits)
        ours = triton.testing.do_bench(lambda: decode_attention(q, kc, vc, r2t, lens, splits)) * 1e3
        kv_bytes = 2 * bs * seq * HKV * D * 2
        rows.append([f"decode bs {bs} x {seq} keys", "ours (Triton)", f"{ours:.1f}", f"{kv_bytes / ours / 1e6:.2f}",
                     "", ""])
        indptr, indices, last = _kv_lists(r2t, [seq] * bs)
        for tc in (True, False):
            w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tc)
            w.plan(indptr, indices, last, HQ, HKV, D, 1, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16,
                   sm_scale=1.0 / math.sqrt(D))
            out, first_s = _timed_first(lambda: w.run(q, (_paged(kc), _paged(vc))))
            err = _check(f"decode bs {bs} tensor cores {tc}", out, ref)
            us = triton.testing.do_bench(lambda: w.run(q, (_paged(kc), _paged(vc)))) * 1e3
            rows.append([f"decode bs {bs} x {seq} keys", f"flashinfer, tensor cores {tc}", f"{us:.1f}",
                         f"{kv_bytes / us / 1e6:.2f}", err, f"{first_s:.1f}"])
            print(rows[-1], flush=True)
    return rows


def extend_cases(flashinfer, workspace) -> list[list]:
    rows = []
    for bs, seq in ((16, 512), (1, 4096)):
        q, kc, vc, r2t, starts, zeros, ext = extend_inputs(bs, seq, HQ, HKV, D, shuffled=True)
        blocks = tuple(extend_blocks(ext.cpu()).to("cuda"))
        ref = extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq, blocks=blocks)
        ours = triton.testing.do_bench(lambda: extend_attention(q, kc, vc, r2t, starts, zeros, ext, seq,
                                                                blocks=blocks)) * 1e3
        flops = 4 * bs * HQ * D * seq * seq / 2
        rows.append([f"prefill {bs} x {seq}", "ours (Triton)", f"{ours:.1f}", f"{flops / ours / 1e6:.0f} TFLOP/s",
                     "", ""])
        qo_indptr = (torch.arange(bs + 1, dtype=torch.int32) * seq).to("cuda")
        indptr, indices, last = _kv_lists(r2t, [seq] * bs)
        w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
        w.plan(qo_indptr, indptr, indices, last, HQ, HKV, D, 1, causal=True, q_data_type=torch.bfloat16,
               kv_data_type=torch.bfloat16, sm_scale=1.0 / math.sqrt(D))
        out, first_s = _timed_first(lambda: w.run(q, (_paged(kc), _paged(vc))))
        err = _check(f"prefill {bs} x {seq}", out, ref)
        us = triton.testing.do_bench(lambda: w.run(q, (_paged(kc), _paged(vc)))) * 1e3
        rows.append([f"prefill {bs} x {seq}", "flashinfer (auto backend)", f"{us:.1f}",
                     f"{flops / us / 1e6:.0f} TFLOP/s", err, f"{first_s:.1f}"])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    import flashinfer
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
    print(f"{torch.cuda.get_device_name(0)}, flashinfer {flashinfer.__version__}")
    rows = decode_cases(flashinfer, workspace) + extend_cases(flashinfer, workspace)
    print(table(["case", "kernel", "µs", "TB/s or TFLOP/s", "max |diff| vs ours", "first call s (JIT)"], rows))


if __name__ == "__main__":
    main()
