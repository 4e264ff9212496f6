"""Registers per thread of the fused sampling kernel's specialisations, compiled for sm_90 with
the installed Triton on any machine (no GPU needed: Triton compiles to a cubin offline and the
bundled cuobjdump reads its resource usage). A proxy for occupancy: an SM has 65,536 registers,
so 4 warps at 255 registers fit 2 blocks, at 128 fit 4.

    python -m benchmarks.kernel_registers

Prints a table; writes nothing (the Triton on the GPU machine may allocate a little differently).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from benchmarks.report import table
from sgl_lang.kernels.sampling_kernel import masked_sample_kernel

_POINTERS = {"logits_ptr": "*fp32", "mask_ptr": "*i32", "has_mask_ptr": "*i1", "greedy_ptr": "*i1",
             "temp_ptr": "*fp32", "top_k_ptr": "*i32", "top_p_ptr": "*fp32", "min_p_ptr": "*fp32",
             "keys_ptr": "*i32", "tok_ptr": "*i64", "lp_ptr": "*fp32", "part_ptr": "*fp32",
             "sync_ptr": "*i32", "rec_ptr": "*fp32"}


def registers(splits: int, kr: int, filters: bool, sample: bool, num_warps: int,
              kmax: int = 128) -> tuple[int, int]:
    """(registers per thread, stack bytes) of one specialisation (vocab 128256: kmax 128)."""
    names = masked_sample_kernel.arg_names
    consts = dict(HAS_BITMASK=True, HAS_ROW_FLAGS=True, HAS_GREEDY_FLAGS=True, SPLITS=splits, KR=kr,
                  KMAX=kmax, SEARCH_BLOCK=128, NP=16, FILTERS=filters, SAMPLE=sample)
    sig = {n: _POINTERS.get(n, "constexpr" if n in consts else "i32") for n in names}
    src = ASTSource(masked_sample_kernel, sig,
                    constexprs={(names.index(n),): v for n, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    try:
        usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
    return int(regs.group(1)), int(stack.group(1)) if stack else 0


def main() -> None:
    rows = []
    for splits in (1, 32):
        for tile, warps in ((1024, 4), (2048, 4), (1024, 8), (2048, 8)):
            kr = max(1, tile // (1024 // splits))
            for name, filters, sample in (("greedy", False, False), ("temperature", False, True),
                                          ("filters", True, True)):
                regs, stack = registers(splits, kr, filters, sample, warps)
                blocks = min(32, 65536 // (regs * 32 * warps))
                rows.append([splits, tile, warps, name, regs, stack, blocks, blocks * warps])
                print(rows[-1], flush=True)
    print(table(["splits", "tile", "warps", "kernel", "registers", "stack B", "blocks / SM (regs)",
                 "warps / SM"], rows))


if __name__ == "__main__":
    main()
