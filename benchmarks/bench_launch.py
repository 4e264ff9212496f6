"""Host cost of one eager kernel launch on the GPU, the unit of an eager prefill's host time
(a 30-layer model launches ~300 kernels per prefill step). Prints µs per call, host side only
(calls are queued back to back; the device work is tiny):

    python -m benchmarks.bench_launch

Rows: the rms_norm wrapper (checks, two allocations, Triton JIT dispatch), the bare Triton JIT
launch of its kernel, the same compiled kernel launched directly (what masked_sampling._launch
does: no JIT dispatch), a torch linear (cuBLAS) and a torch.empty, at a 135M prefill shape.
"""
from __future__ import annotations

import time

import torch

from benchmarks.report import table


def _host_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        torch.cuda.synchronize()
    return best


def main() -> None:
    import triton
    from sgl_lang.kernels.attention_prologue import _rms_norm_kernel, rms_norm
    x = torch.randn(512, 576, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(576, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    lin = torch.randn(960, 576, device="cuda", dtype=torch.bfloat16)
    args = (x, x, w, y, y, x.stride(0), x.stride(0), y.stride(0), y.stride(0), 1e-5)
    kw = dict(N=576, BLOCK=1024, HAS_RES=False)

    def jit():
        return _rms_norm_kernel[(512,)](*args, **kw, num_warps=4)
    kernel = jit()
    stream = torch._C._cuda_getCurrentRawStream(0)
    full = args + (576, 1024, False)

    def direct():
        kernel.run(512, 1, 1, stream, kernel.function, kernel.packed_metadata, None, None, None, *full)
    try:
        direct_us = _host_us(direct)
    except Exception as e:  # noqa: BLE001 - another Triton's launcher signature
        print(f"direct launch failed: {e!r}")
        direct_us = float("nan")
    rows = [["rms_norm wrapper", _host_us(lambda: rms_norm(x, w, 1e-5))],
            ["Triton JIT launch (_rms_norm_kernel[grid](...))", _host_us(jit)],
            ["compiled kernel launched directly", direct_us],
            ["torch.nn.functional.linear [512, 576] x [960, 576]^T", _host_us(lambda: torch.nn.functional.linear(x, lin))],
            ["torch.empty", _host_us(lambda: torch.empty(512, 576, device="cuda", dtype=torch.bfloat16))]]
    print(f"{torch.cuda.get_device_name(0)}, triton {triton.__version__}, torch {torch.__version__}: "
          "host µs per call")
    print(table(["call", "host µs"], rows))


if __name__ == "__main__":
    main()
