"""How many candidate tests the masked-sampling kernel's filtered rows need, and how many of
those tests fall below the per-position lists (sampling_lists.py) and so re-read positions or
the row. Runs the reference chain (sampling_chain.py) in torch on the CPU on the inputs of
bench_sampling_kernel (logits randn x 4, temperature 0.8, about half the tokens allowed).

    python -m benchmarks.sampling_rounds [--bs 512] [--vocab 128256] [--tile 2048]
"""
from __future__ import annotations

import argparse

import torch

from sgl_lang.kernels.sampling_chain import LANES, MAX_ROUNDS, inverse_cdf
from sgl_lang.kernels.sampling_lists import NUM_LEVELS
from sgl_lang.kernels.sampling_noise import uniform_noise


def kept_sets(s: torch.Tensor) -> dict:
    """{mode: [bs, V] bool} what top-k 50 and top-p 0.9 keep (no ties in randn inputs)."""
    ordered = s.sort(dim=1, descending=True).values
    probs = (ordered - ordered.logsumexp(dim=1, keepdim=True)).exp()
    keep = ((probs.cumsum(dim=1) - probs) < 0.9).sum(dim=1, keepdim=True)
    return {"top-k 50": s >= ordered[:, 49:50], "top-p 0.9": s >= ordered.gather(1, keep - 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bs", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--tile", type=int, default=2048, help="tokens per tile: positions per row")
    args = ap.parse_args()
    torch.manual_seed(0)
    bs, vocab, temp = args.bs, args.vocab, 0.8
    x = (torch.randn(bs, vocab) * 4).masked_fill(torch.rand(bs, vocab) >= 0.5, float("-inf"))
    s = x / temp
    p = (s - s.max(dim=1, keepdim=True).values).double().exp()
    keys = torch.randint(-2**31, 2**31 - 1, (bs, 2), dtype=torch.int32)
    rows = torch.arange(bs)
    kr = args.tile // LANES  # grid rows per tile: a position is (grid row % kr, lane)
    padded = torch.nn.functional.pad(x, (0, (-vocab) % args.tile), value=float("-inf"))
    last = padded.view(bs, -1, kr * LANES).topk(NUM_LEVELS, dim=1).values[:, -1]  # [bs, positions]
    for mode, kept in kept_sets(s).items():
        tok = inverse_cdf(p, uniform_noise(keys, 0))
        tests = torch.ones(bs, dtype=torch.long)
        below = torch.zeros(bs, dtype=torch.long)  # tests whose candidate some list may miss
        pending = torch.ones(bs, dtype=torch.bool)
        for n in range(1, MAX_ROUNDS + 1):
            v = s[rows, tok]
            unlisted = (last / temp >= v[:, None]).sum(dim=1)
            below += (pending & (unlisted > 0)).long()
            pending = pending & ~kept[rows, tok]
            if n == MAX_ROUNDS or not bool(pending.any()):
                break
            support = (s > v[:, None]) | ~pending[:, None]
            tok = torch.where(pending, inverse_cdf(torch.where(support, p, 0.0), uniform_noise(keys, n)), tok)
            tests += pending.long()
        print(f"{mode}: K median {int(kept.sum(dim=1).median())} tokens; rows by tests "
              f"{torch.bincount(tests).tolist()[1:]}; rows by tests below the lists "
              f"{torch.bincount(below).tolist()}; rounds ran out: {int(pending.sum())}")


if __name__ == "__main__":
    main()
