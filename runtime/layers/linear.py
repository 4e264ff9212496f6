"""Linear layers shaped for tensor parallelism.

    ColumnParallelLinear        W: [out / tp, in]    each rank computes a slice of the outputs
    MergedColumnParallelLinear  several column-parallel outputs in one matmul (gate_up)
    QKVParallelLinear           q, k, v in one matmul; heads split across ranks by KV group
    RowParallelLinear           W: [out, in / tp]    each rank computes a partial sum, all-reduced
                                (or an uneven column range, `in_shard`, to match o_proj to its heads)

Attention heads are split by KV group (`shard_heads`), so a rank always holds whole groups; when
tp_size does not divide num_kv_heads the first ranks take one group more. SmolLM2-135M (9 q /
3 KV heads) at tp 2:

    rank 0: KV heads 0-1, q heads 0-5   o_proj input columns [0, 6*D)
    rank 1: KV head  2,   q heads 6-8   o_proj input columns [6*D, 9*D)

When tp_size > num_kv_heads each KV head is replicated on tp_size / num_kv_heads ranks.

Each layer has a `weight_loader(param, loaded, shard_id=None)` that copies this rank's part of a
checkpoint tensor into the right rows/columns of its weight or bias, so the model loader never
knows the layout. (It is a method of the module, not an attribute of the parameter, because
`Module.to` / `to_empty` replace parameter objects.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed.collectives import all_reduce
from .decode_gemm import decode_linear


class WeightShapeError(ValueError):
    """A checkpoint tensor does not fit the parameter it is loaded into."""


@dataclass(frozen=True)
class HeadShard:
    """One rank's attention heads: query heads [q_start, q_start + num_q), KV heads
    [kv_start, kv_start + num_kv) of the full model."""
    q_start: int
    num_q: int
    kv_start: int
    num_kv: int


def shard_heads(num_heads: int, num_kv_heads: int, tp_rank: int, tp_size: int) -> HeadShard:
    """Split heads across ranks by whole KV groups (uneven when tp_size does not divide
    num_kv_heads: ranks below the remainder get one group more)."""
    if num_heads % num_kv_heads:
        raise WeightShapeError(f"num_heads {num_heads} not divisible by num_kv_heads {num_kv_heads}")
    group = num_heads // num_kv_heads  # q heads per KV head
    if tp_size <= num_kv_heads:
        base, extra = divmod(num_kv_heads, tp_size)
        num_kv = base + (1 if tp_rank < extra else 0)
        kv_start = tp_rank * base + min(tp_rank, extra)
        return HeadShard(kv_start * group, num_kv * group, kv_start, num_kv)
    if tp_size % num_kv_heads or num_heads % tp_size:
        raise WeightShapeError(f"tp_size {tp_size} > num_kv_heads {num_kv_heads} needs tp_size to be a "
                               f"multiple of num_kv_heads and to divide num_heads {num_heads}")
    num_q = num_heads // tp_size
    return HeadShard(tp_rank * num_q, num_q, tp_rank // (tp_size // num_kv_heads), 1)


def read_whole(loaded) -> torch.Tensor:
    """A checkpoint tensor read in full (loaded may be a lazy CheckpointTensor: shape + narrow)."""
    return loaded.narrow(0, 0, loaded.shape[0])


def _check_copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if dst.shape != src.shape:
        raise WeightShapeError(f"{what}: expected shape {tuple(dst.shape)}, got {tuple(src.shape)}")
    dst.copy_(src)


class LinearBase(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, tp_rank: int, tp_size: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        raise NotImplementedError

    decode_gemm = False  # decode batches through kernels/skinny_gemm.py (layers/decode_gemm.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.decode_gemm:
            y = decode_linear(x, self.weight, owner=self)
            if y is not None:
                return y
        return F.linear(x, self.weight, self.bias)


class ColumnParallelLinear(LinearBase):
    """y = x W^T + b with W split by output rows across tp ranks (no gather: callers keep shards)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 tp_rank: int = 0, tp_size: int = 1):
        if out_features % tp_size:
            raise WeightShapeError(f"out_features {out_features} not divisible by tp_size {tp_size}")
        super().__init__(in_features, out_features // tp_size, bias, tp_rank, tp_size)

    def weight_loader(self, param, loaded, shard_id=None):
        rows = param.shape[0]
        _check_copy(param.data, loaded.narrow(0, self.tp_rank * rows, rows), "column-parallel")


class MergedColumnParallelLinear(LinearBase):
    """Several column-parallel projections of the same input fused into one matmul.

    Output layout: [shard0 (out0/tp) | shard1 (out1/tp) | ...]; shard_id is the index.
    """

    def __init__(self, in_features: int, output_sizes: Sequence[int], bias: bool = False,
                 tp_rank: int = 0, tp_size: int = 1):
        for s in output_sizes:
            if s % tp_size:
                raise WeightShapeError(f"output size {s} not divisible by tp_size {tp_size}")
        self.shard_sizes = [s // tp_size for s in output_sizes]
        super().__init__(in_features, sum(self.shard_sizes), bias, tp_rank, tp_size)

    def weight_loader(self, param, loaded, shard_id: Optional[int] = None):
        if shard_id is None:
            raise WeightShapeError("merged column-parallel weights need a shard_id")
        size = self.shard_sizes[shard_id]
        offset = sum(self.shard_sizes[:shard_id])
        src = loaded.narrow(0, self.tp_rank * size, size)
        _check_copy(param.data.narrow(0, offset, size), src, f"merged shard {shard_id}")


class QKVParallelLinear(LinearBase):
    """q, k, v projections in one matmul. Output: [q (Hq*D) | k (Hkv*D) | v (Hkv*D)] per rank,
    with this rank's heads chosen by `shard_heads` (self.heads)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int,
                 bias: bool = False, tp_rank: int = 0, tp_size: int = 1):
        self.head_dim = head_dim
        self.heads = shard_heads(num_heads, num_kv_heads, tp_rank, tp_size)
        self.num_heads = self.heads.num_q  # per rank
        self.num_kv_heads = self.heads.num_kv
        out = (self.num_heads + 2 * self.num_kv_heads) * head_dim
        super().__init__(hidden_size, out, bias, tp_rank, tp_size)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def weight_loader(self, param, loaded, shard_id: Optional[str] = None):
        d = self.head_dim
        if shard_id == "q":
            offset, size, start = 0, self.q_size, self.heads.q_start * d
        elif shard_id in ("k", "v"):
            offset = self.q_size + (self.kv_size if shard_id == "v" else 0)
            size, start = self.kv_size, self.heads.kv_start * d
        else:
            raise WeightShapeError(f"qkv shard_id must be 'q', 'k' or 'v', got {shard_id!r}")
        src = loaded.narrow(0, start, size)
        _check_copy(param.data.narrow(0, offset, size), src, f"qkv shard {shard_id}")


class RowParallelLinear(LinearBase):
    """y = x W^T + b with W split by input columns; partial sums are all-reduced when tp_size > 1.
    The bias is added once, after the reduction.

    in_shard: (first column, number of columns) of this rank, for an uneven split (o_proj under
    an uneven head split); None splits in_features evenly."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 tp_rank: int = 0, tp_size: int = 1, in_shard: Optional[tuple[int, int]] = None):
        if in_shard is None:
            if in_features % tp_size:
                raise WeightShapeError(f"in_features {in_features} not divisible by tp_size {tp_size}")
            in_shard = (tp_rank * (in_features // tp_size), in_features // tp_size)
        elif not (0 <= in_shard[0] and in_shard[1] > 0 and in_shard[0] + in_shard[1] <= in_features):
            raise WeightShapeError(f"in_shard {in_shard} outside in_features {in_features}")
        self.in_start = in_shard[0]
        super().__init__(in_shard[1], out_features, bias, tp_rank, tp_size)

    def weight_loader(self, param, loaded, shard_id=None):
        if param.dim() == 1:  # bias: full on every rank
            _check_copy(param.data, read_whole(loaded), "row-parallel bias")
            return
        cols = param.shape[1]
        _check_copy(param.data, loaded.narrow(1, self.in_start, cols), "row-parallel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return super().forward(x)
        y = F.linear(x, self.weight)  # [n, out] this rank's partial sum
        all_reduce(y)
        return y if self.bias is None else y + self.bias
