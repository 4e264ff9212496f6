"""The decode step's GEMMs (Llama-3.1-8B shapes, batch M) by layout and kernel, on the GPU.

    python -m benchmarks.bench_decode_gemm [--m 64 1] [--no-triton] [--steps-only]

Per weight shape (qkv, o, gate_up, down, LM head), 32 distinct weights (8 for the LM head) are
multiplied in a row inside one CUDA graph, as a decode step streams them from DRAM, and the graph
is replayed; µs per GEMM and the weight-read rate (weight bytes / time) for:
    TN      F.linear(x, W), W [N, K] (the engine now)
    NN      x @ Wt, Wt = W.T made contiguous ([K, N])
    triton  kernels/skinny_gemm.py (when present), best of its configs
Then one decode step's GEMMs (32 layers + LM head) in one graph: all cuBLAS, the sweep's best
mix, and the engine's launches (decode_config) with and without programmatic dependent launch
(kernels/pdl.py), and other launches for qkv, o_proj and down under PDL. --steps-only
skips the sweep and times the step with decode_config's launches only.
Prints a table; nothing is written to docs/ (the figures go there by hand with their command).
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F

from benchmarks.gpu_timing import graph_us
from benchmarks.report import table

H, I, V = 4096, 14336, 128256
CONFIGS_BY_NAME: dict = {}
SHAPES = {"qkv": (6144, H), "o": (H, H), "gate_up": (2 * I, H), "gate_up+silu": (2 * I, H), "down": (H, I),
          "lm_head": (V, H)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, nargs="+", default=[64, 1, 8192])
    ap.add_argument("--no-triton", action="store_true")
    ap.add_argument("--steps-only", action="store_true")
    ap.add_argument("--tma", action="store_true", help="the engine's launches against TMA-loaded twins "
                    "and a small TMA sweep per shape, then the step with each")
    args = ap.parse_args()
    if args.tma:
        for m in args.m:
            tma_sweep(m)
        return
    if args.steps_only:
        from sgl_lang.kernels.skinny_gemm import skinny_linear
        for m in args.m:
            layer_steps(m, None, skinny_linear)
        return
    global CONFIGS_BY_NAME
    try:
        from sgl_lang.kernels.skinny_gemm import CONFIGS, FUSED_CONFIGS, skinny_linear
    except ImportError:
        CONFIGS, FUSED_CONFIGS, skinny_linear = [], [], None
    CONFIGS_BY_NAME = {str(c): c for c in CONFIGS + FUSED_CONFIGS}
    if args.no_triton:
        CONFIGS = []
    from sgl_lang.kernels.silu_mul import silu_and_mul
    rows, best = [], {}
    torch.manual_seed(0)
    for name, (n, k) in SHAPES.items():
        fused = name == "gate_up+silu"
        copies = 8 if name == "lm_head" else 32
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        wts = [w.t().contiguous() for w in ws]
        nbytes = n * k * 2
        tickets = torch.zeros(n // 16, dtype=torch.int32, device="cuda")  # split-K counters, kept zero
        for m in args.m:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            act = silu_and_mul if fused else (lambda t: t)
            ref = act(F.linear(x, ws[0])).float()
            results = {}
            results["TN"] = graph_us(lambda: [act(F.linear(x, w)) for w in ws], copies)
            results["NN"] = graph_us(lambda: [act(x @ wt) for wt in wts], copies)
            for cfg in CONFIGS + (FUSED_CONFIGS if fused else []):
                if fused and cfg.split != 1:
                    continue
                if skinny_linear is None or not cfg.fits(m, n, k):
                    continue
                us = _checked_us(f"{name} m={m}", x, ws, ref, cfg, fused, tickets, skinny_linear)
                if us is not None:
                    results[f"triton {cfg}"] = us
            best_t = min((v, kk) for kk, v in results.items() if kk.startswith("triton")) if len(results) > 2 else None
            row = [name, m, f"{n}x{k}"]
            for key in ("TN", "NN"):
                row.append(f"{results[key]:.1f} ({nbytes / results[key] / 1e6:.2f})")
            if best_t and m <= 64:
                best[(name, m)] = (best_t[0], CONFIGS_BY_NAME[best_t[1][7:]], results["TN"])
            if best_t:
                row.append(f"{best_t[0]:.1f} ({nbytes / best_t[0] / 1e6:.2f}) {best_t[1][7:]}")
            else:
                row.append("-")
            rows.append(row)
            print(" | ".join(map(str, row)), flush=True)
        del ws, wts
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name(0)}: µs per GEMM (weight TB/s), inside a CUDA graph, distinct weights"
          " (gate_up+silu: the GEMM then the SiLU-mul kernel, or fused)")
    print(table(["weights", "M", "N x K", "TN (F.linear)", "NN (x @ W.T contiguous)", "triton best"], rows))
    for m in args.m:
        if m <= 64 and skinny_linear is not None:
            layer_steps(m, best, skinny_linear)


def _checked_us(label: str, x, ws, ref, cfg, fused: bool, tickets, skinny_linear):
    """µs per GEMM of launch cfg over the weights ws, in one graph; None (with a line printed)
    where the launch fails (e.g. out of shared memory for its tile and stage count) or its output
    is off the reference by more than 2% of the largest value."""
    try:
        y = skinny_linear(x, ws[0], cfg, silu_mul=fused, tickets=tickets)
        err = (y.float() - ref).abs().max().item() / ref.abs().max().item()
        if err > 2e-2:
            print(f"{label} {cfg}: max error {err:.3g} of the largest output, skipped")
            return None
        return graph_us(lambda: [skinny_linear(x, w, cfg, silu_mul=fused, tickets=tickets) for w in ws], len(ws))
    except Exception as e:
        print(f"{label} {cfg}: {type(e).__name__}: {str(e)[:120]}")
        return None


def tma_sweep(m: int) -> None:
    """Per shape at batch m: cuBLAS, the engine's launch (decode_config), its TMA twin and a few
    other TMA launches; then one decode step under PDL with the engine's launches, their TMA twins,
    and the best launch per shape."""
    from dataclasses import replace

    from sgl_lang.kernels.silu_mul import silu_and_mul
    from sgl_lang.kernels.skinny_gemm import GemmConfig, decode_config, skinny_linear
    rows, best, twins = [], {}, {}
    torch.manual_seed(0)
    for name, (n, k) in SHAPES.items():
        if name == "gate_up":
            continue
        fused = name == "gate_up+silu"
        nn = n // 2 if fused else n
        copies = 8 if name == "lm_head" else 32
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ref = (silu_and_mul(F.linear(x, ws[0])) if fused else F.linear(x, ws[0])).float()
        tickets = torch.zeros(n // 16, dtype=torch.int32, device="cuda")
        eng = decode_config(m, nn, k, fused)
        twin = twins[name] = replace(eng, tma=True) if eng else None
        cands = [] if eng is None else [eng, twin]
        splits = (1,) if fused else (1, 2, 4)
        cands += [GemmConfig(bn, bk, sp, st, tma=True) for bn in (32, 64, 128) for bk in (64, 128)
                  for sp in splits for st in (4, 6) if not (fused and bn == 128)]
        res = {"cuBLAS": graph_us(lambda: [F.linear(x, w) for w in ws], copies)}
        for cfg in cands:
            if not cfg.fits(m, nn, k) or str(cfg) in res:
                continue
            us = _checked_us(name, x, ws, ref, cfg, fused, tickets, skinny_linear)
            if us is not None:
                res[str(cfg)] = us
        nbytes = n * k * 2
        top = min((v, kk) for kk, v in res.items() if kk != "cuBLAS")
        best[name] = next(c for c in cands if str(c) == top[1])
        fmt = lambda us: f"{us:.1f} ({nbytes / us / 1e6:.2f})"
        rows.append([name, m, fmt(res["cuBLAS"]), fmt(res[str(eng)]) if eng else "-",
                     fmt(res[str(twin)]) if twin and str(twin) in res else "-", f"{fmt(top[0])} {top[1]}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
        del ws
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name(0)}: µs per GEMM (weight TB/s), in a CUDA graph, distinct weights")
    print(table(["weights", "M", "cuBLAS", "engine launch", "its TMA twin", "best (TMA sweep)"], rows))
    layer_steps(m, None, skinny_linear, extra=[("PDL, TMA twins", twins), ("PDL, best per shape", best)])


def layer_steps(m: int, best: dict, skinny_linear, extra=()) -> None:
    """One decode step's GEMMs as the model runs them (32 layers of qkv, o, gate_up, SiLU-mul,
    down, then the LM head; norms and attention left out), all cuBLAS vs the mix that takes the
    Triton kernel where its best config beat cuBLAS in the sweep above."""
    from sgl_lang.kernels.silu_mul import silu_and_mul
    layers = [{name: torch.randn(*SHAPES[name], device="cuda", dtype=torch.bfloat16) * 0.02
               for name in ("qkv", "o", "gate_up", "down")} for _ in range(32)]
    lm = torch.randn(V, H, device="cuda", dtype=torch.bfloat16) * 0.02
    x = torch.randn(m, H, device="cuda", dtype=torch.bfloat16)

    from sgl_lang.kernels.pdl import pdl_launches
    from sgl_lang.kernels.skinny_gemm import decode_config

    def pick(name):
        if best is None:  # the engine's launches
            n, k = SHAPES[name]
            return decode_config(m, n // 2 if name == "gate_up+silu" else n, k, silu_mul=name == "gate_up+silu")
        b = best.get((name, m))
        return b[1] if b and b[0] < b[2] else None
    chosen = {name: pick(name) for name in ("qkv", "o", "gate_up+silu", "down", "lm_head")}
    engine_picks = dict(chosen)
    tickets = {name: torch.zeros(SHAPES[name][0] // 16, dtype=torch.int32, device="cuda") for name in chosen}
    out = os.environ.get("OUT")
    if out and best is not None:  # the picks, for a run of the engine with them
        with open(os.path.join(out, f"gemm_picks_m{m}.json"), "w") as f:
            json.dump({k: [v.bn, v.bk, v.split, v.stages, v.warps] if v else None for k, v in chosen.items()}, f)

    def lin(name, t, w):
        cfg = chosen[name]
        return skinny_linear(t, w, cfg, tickets=tickets[name]) if cfg else F.linear(t, w)

    def step(mixed: bool):
        h = x
        for ly in layers:
            q = lin("qkv", h, ly["qkv"]) if mixed else F.linear(h, ly["qkv"])
            h = lin("o", q[:, :H], ly["o"]) if mixed else F.linear(q[:, :H], ly["o"])
            if mixed and chosen["gate_up+silu"]:
                a = skinny_linear(h, ly["gate_up"], chosen["gate_up+silu"], silu_mul=True)
            else:
                a = silu_and_mul(F.linear(h, ly["gate_up"]))
            h = lin("down", a, ly["down"]) if mixed else F.linear(a, ly["down"])
        return lin("lm_head", h, lm) if mixed else F.linear(h, lm)

    base = graph_us(lambda: step(False), 1)
    mix = graph_us(lambda: step(True), 1)
    print(f"\ndecode step GEMMs at M={m} (32 layers + LM head, in one graph): cuBLAS {base:.0f} µs, "
          f"mixed {mix:.0f} µs ({100 * (base - mix) / base:+.1f}%); triton for "
          + ", ".join(f"{k}: {v}" for k, v in chosen.items() if v))
    if not torch.cuda.get_device_capability()[0] >= 9:
        return
    from sgl_lang.kernels.skinny_gemm import GemmConfig
    variants = [("plain", False, {}), ("PDL", True, {})]
    variants += [(f"PDL, o_proj {c}", True, {"o": c}) for c in (
        GemmConfig(64, 128, 2, 5), GemmConfig(64, 128, 4, 4), GemmConfig(32, 128, 1, 5), GemmConfig(32, 128, 1, 8),
        GemmConfig(32, 64, 1, 8), GemmConfig(128, 128, 4, 3))]
    variants += [(f"PDL, qkv {c}", True, {"qkv": c}) for c in (
        GemmConfig(64, 128, 2, 5), GemmConfig(32, 128, 1, 6), GemmConfig(64, 128, 4, 3), GemmConfig(32, 128, 2, 5))]
    variants += [(f"PDL, down {c}", True, {"down": c}) for c in (GemmConfig(64, 128, 4, 3), GemmConfig(32, 256, 2, 4))]
    if extra:  # (label, {shape name: launch}) instead of the sweep above
        variants = [("plain", False, {}), ("PDL", True, {})] + [(lb, True, picks) for lb, picks in extra]
    rows = []
    for label, pdl, overrides in variants:
        chosen.clear()
        chosen.update(engine_picks, **overrides)
        try:
            with pdl_launches(pdl):
                us = graph_us(lambda: step(True), 1)
        except Exception as e:  # e.g. out of shared memory for this tile and stage count
            print(label, type(e).__name__)
            continue
        rows.append([label, f"{us:.0f}", f"{100 * (base - us) / base:+.1f}%"])
        print(rows[-1], flush=True)
    print(f"\nM={m}, decode_config launches unless named, all in one graph (vs cuBLAS {base:.0f} µs)")
    print(table(["launch", "µs", "vs cuBLAS"], rows))

if __name__ == "__main__":
    main()
