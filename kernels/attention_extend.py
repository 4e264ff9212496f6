"""Extend (prefill) attention over a paged KV cache: ragged batches, cached prefixes, GQA, causal.

    extend_attention(q, k_cache, v_cache, req_to_token, q_starts, prefix_lens, extend_lens,
                     max_extend_len, blocks=None) -> out
        q: [T, Hq, D]  the new tokens of all sequences back to back (sequence i owns rows
                       q_starts[i] .. q_starts[i] + extend_lens[i] - 1)
        k_cache, v_cache: [num_slots + 1, Hkv, D], already holding the new tokens' K/V
        req_to_token: [bs, L] pool slots of every token of each sequence
        q_starts, prefix_lens, extend_lens: [bs] ints on the device; max_extend_len: a host int
        out: [T, Hq * D], q's dtype

    new token j of sequence i sits at position p = prefix_lens[i] + j and attends to keys
    0 .. p of its sequence (the prefix is cached; causal inside the new part):
        out[q_starts[i] + j, h] = softmax(q . K[:p+1]^T / sqrt(D)) @ V[:p+1],  K/V of head h // G

Grid (num_blocks, Hq): a block is BLOCK_M new tokens of one sequence, listed by
`blocks = (block_seq, block_mb)` ([num_blocks] int32 on the device: sequence, block number in it;
`extend_blocks` builds them from the host's extend lengths, so a ragged batch launches no empty
programs; without them the grid is every sequence times cdiv(max_extend_len, BLOCK_M)). A block
whose sequence is -1 does no work: a CUDA graph captures a grid for its largest batch and pads
the list. Each program takes one block and one query head and streams the sequence's keys
0 .. (last position of the block) from the pool in BLOCK_N tiles (flash-attention online softmax);
the causal mask only bites on the diagonal tiles.

    keys:    0 ........ prefix_len-1 | prefix_len ........ prefix_len+extend_len-1
             [ cached prefix, all     | new tokens: key n visible to query j iff n <= prefix+j ]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .attention_checks import check_last_dim_contiguous, check_paged_qkv, paged_qkv_strides


@triton.jit
def _attend_rows(q, q_pos, kv_end, full_end, K, V, ReqToToken, b, kvh, stride_rb, stride_kt, stride_kh,
                 stride_vt, stride_vh, offs_d, mask_d, qk_scale, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """q [ROWS, BLOCK_D] (rows at positions q_pos [ROWS]) against keys 0 .. kv_end - 1 of sequence
    b, KV head kvh, from the pool (flash-attention online softmax, scores in log2 units) ->
    [ROWS, BLOCK_D] float32. Keys below full_end are visible to every row (no mask but the
    sequence bound); the tiles from there, the diagonal, are masked causally."""
    m_i = tl.full([ROWS], float("-inf"), tl.float32)  # running max of the scores
    l_i = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, BLOCK_D], tl.float32)
    for n0 in range(0, kv_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < kv_end
        slots = tl.load(ReqToToken + b * stride_rb + offs_n, mask=mask_n, other=0).to(tl.int64)
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(K + slots[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
        s = tl.dot(q, tl.trans(k).to(q.dtype)) * qk_scale  # [ROWS, BLOCK_N] f32
        if n0 + BLOCK_N > full_end:  # a tile that reaches the diagonal or the sequence's end
            visible = mask_n[None, :] & (offs_n[None, :] <= q_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + slots[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
        m_i = m_new
    return acc / tl.where(l_i > 0, l_i, 1.0)[:, None]


# the row stride of req_to_token is the batch's longest sequence, different almost every batch:
# not specialised on (divisible by 16 or not), so it never makes a new compile mid-serving
@triton.jit(do_not_specialize=["stride_rb"])
def _extend_kernel(Q, K, V, Out, ReqToToken, QStarts, PrefixLens, ExtendLens, BlockSeq, BlockMb,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot,
                   stride_rb, sm_scale, G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    blk = tl.program_id(0)
    h = tl.program_id(1)
    seq = tl.load(BlockSeq + blk)  # -1: a padding block, no work
    mb = tl.load(BlockMb + blk)
    b = tl.maximum(seq, 0)
    kvh = h // G
    extend_len = tl.where(seq >= 0, tl.load(ExtendLens + b).to(tl.int32), 0)
    prefix_len = tl.load(PrefixLens + b).to(tl.int32)
    q_start = tl.load(QStarts + b).to(tl.int64)

    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < extend_len
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    q = tl.load(Q + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    q_pos = prefix_len + offs_m  # [BLOCK_M] position of each query
    # keys needed by this block: 0 .. position of its last real query (0 when the block is empty)
    kv_end = tl.where(mb * BLOCK_M < extend_len,
                      prefix_len + tl.minimum((mb + 1) * BLOCK_M, extend_len), 0)

    qk_scale = sm_scale * 1.4426950408889634  # scores in log2 units: exp2 instead of exp
    full_end = tl.minimum(prefix_len + mb * BLOCK_M, kv_end)  # keys visible to all the block's queries
    out = _attend_rows(q, q_pos, kv_end, full_end, K, V, ReqToToken, b, kvh, stride_rb, stride_kt, stride_kh,
                       stride_vt, stride_vh, offs_d, mask_d, qk_scale, BLOCK_M, BLOCK_D, BLOCK_N)
    tl.store(Out + (q_start + offs_m)[:, None] * stride_ot + h * D + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


BLOCK_M = 64  # new tokens per program
# (BLOCK_N keys per tile, num_warps, num_stages) by padded head dim
EXTEND_LAUNCH = {64: (64, 4, 3), 128: (64, 4, 3)}  # H200 sweep: bench_extend_attention.py


def _block_counts(extend_lens: torch.Tensor, block_m: int = BLOCK_M) -> torch.Tensor:
    """[bs] host ints -> [bs] int64: block_m-token blocks per sequence."""
    return (extend_lens.to(torch.int64) + block_m - 1) // block_m


def extend_blocks(extend_lens: torch.Tensor, num_blocks: int | None = None, block_m: int = BLOCK_M) -> torch.Tensor:
    """extend_lens: [bs] ints on the host -> [2, num_blocks] int32 on the host: row 0 the sequence
    of each block_m-token block, row 1 its block number in that sequence; padded with
    (-1, 0) up to num_blocks when given (at least cdiv(sum, block_m) + bs covers any batch)."""
    counts = _block_counts(extend_lens, block_m)
    total = int(counts.sum())
    size = total if num_blocks is None else num_blocks
    if size < total:
        raise ValueError(f"{total} blocks do not fit in {num_blocks}")
    out = torch.empty(2, size, dtype=torch.int32)
    out[0, :total] = torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int32), counts)
    firsts = torch.cumsum(counts, 0) - counts  # [bs] index of each sequence's first block
    out[1, :total] = (torch.arange(total) - torch.repeat_interleave(firsts, counts)).to(torch.int32)
    out[0, total:] = -1
    out[1, total:] = 0
    return out


def _round4(n: int) -> int:
    return -(-n // 4) * 4


@dataclass(frozen=True)
class ExtendMetaLayout:
    """One int32 buffer holding a batch's extend metadata, so it reaches the device in one copy:

        [0, width)            q_starts      (first row of each sequence in q; zero past bs)
        [width, 2 width)      prefix_lens
        [2 width, 3 width)    extend_lens
        [3 width, +nb)        block_seq     (extend_blocks, padded with no-work blocks)
        [3 width + nb, +nb)   block_mb

    width and num_blocks are multiples of 4, so every row starts 16-byte aligned and Triton sees
    one pointer alignment whatever the batch (one compiled kernel, not four)."""
    width: int  # >= the batch size
    num_blocks: int  # >= the batch's block count

    @classmethod
    def of(cls, max_seqs: int, max_blocks: int) -> "ExtendMetaLayout":
        return cls(_round4(max_seqs), _round4(max_blocks))

    @classmethod
    def for_batch(cls, extend_lens: torch.Tensor) -> "ExtendMetaLayout":
        """The smallest layout of one batch (extend_lens: [bs] ints on the host)."""
        return cls.of(len(extend_lens), int(_block_counts(extend_lens).sum()))

    @property
    def size(self) -> int:
        return 3 * self.width + 2 * self.num_blocks

    def pack(self, prefix_lens: torch.Tensor, extend_lens: torch.Tensor) -> torch.Tensor:
        """[bs] host ints each -> the buffer's contents, int32 [size] on the host."""
        extend = extend_lens.to(torch.int32)
        out = torch.zeros(self.size, dtype=torch.int32)
        lens = out[:3 * self.width].view(3, self.width)
        bs = len(extend)
        lens[0, :bs] = torch.cumsum(extend, 0, dtype=torch.int32) - extend
        lens[1, :bs], lens[2, :bs] = prefix_lens.to(torch.int32), extend
        out[3 * self.width:] = extend_blocks(extend, self.num_blocks).flatten()
        return out

    def views(self, buffer: torch.Tensor, bs: int, num_blocks: int | None = None):
        """buffer [size] (on the device) -> (q_starts, prefix_lens, extend_lens) [bs] each and
        blocks ([num_blocks], [num_blocks]) for extend_attention (num_blocks: all by default)."""
        lens = buffer[:3 * self.width].view(3, self.width)[:, :bs]
        blocks = buffer[3 * self.width:].view(2, self.num_blocks)[:, :num_blocks or self.num_blocks]
        return lens[0], lens[1], lens[2], (blocks[0], blocks[1])


def extend_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     req_to_token: torch.Tensor, q_starts: torch.Tensor, prefix_lens: torch.Tensor,
                     extend_lens: torch.Tensor, max_extend_len: int,
                     out: torch.Tensor | None = None,
                     blocks: tuple[torch.Tensor, torch.Tensor] | None = None,
                     launch: tuple[int, ...] | None = None) -> torch.Tensor:
    """See the module docstring. launch = (BLOCK_N, num_warps, num_stages[, block_m]) overrides
    the default launch shape (benchmarks/bench_extend_attention.py compares them); blocks must
    then be built with the same block_m (extend_blocks(..., block_m=))."""
    check_paged_qkv(q, k_cache, v_cache, "[T, Hq, D]")
    num_tokens, hq, d = q.shape
    hkv = k_cache.shape[1]
    bs = req_to_token.shape[0]
    for name, t in (("q_starts", q_starts), ("prefix_lens", prefix_lens), ("extend_lens", extend_lens)):
        if t.shape != (bs,) or t.device != q.device:
            raise ValueError(f"expected {name} [{bs}] on {q.device}, got {tuple(t.shape)} on {t.device}")
    check_last_dim_contiguous(q, k_cache, v_cache, req_to_token)
    if out is None:
        out = torch.empty(num_tokens, hq * d, dtype=q.dtype, device=q.device)
    if bs == 0 or (max_extend_len <= 0 if blocks is None else blocks[0].numel() == 0):
        return out
    block_d = triton.next_power_of_2(d)
    block_n, warps, stages, *rest = launch or EXTEND_LAUNCH.get(block_d, (32, 4, 2))
    block_m = rest[0] if rest else BLOCK_M
    if blocks is None:  # every sequence times the longest one's block count
        per_seq = triton.cdiv(max_extend_len, block_m)
        seqs = torch.arange(bs, dtype=torch.int32, device=q.device)
        blocks = (seqs.repeat_interleave(per_seq), torch.arange(per_seq, dtype=torch.int32, device=q.device).repeat(bs))
    block_seq, block_mb = blocks
    if block_seq.shape != block_mb.shape or block_seq.dim() != 1 or block_seq.device != q.device:
        raise ValueError(f"expected blocks two [num_blocks] tensors on {q.device}, got "
                         f"{tuple(block_seq.shape)}, {tuple(block_mb.shape)} on {block_seq.device}")
    grid = (block_seq.shape[0], hq)
    _extend_kernel[grid](
        q, k_cache, v_cache, out, req_to_token, q_starts, prefix_lens, extend_lens, block_seq, block_mb,
        *paged_qkv_strides(q, k_cache, v_cache), out.stride(0), req_to_token.stride(0),
        1.0 / math.sqrt(d), G=hq // hkv, D=d, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=warps, num_stages=stages)
    return out


def extend_attention_ref(q, k_cache, v_cache, req_to_token, prefix_lens, extend_lens) -> torch.Tensor:
    """The semantics above in plain torch (float32 math), one sequence at a time.
    prefix_lens, extend_lens: [bs] (any device)."""
    num_tokens, hq, d = q.shape
    group = hq // k_cache.shape[1]
    out = torch.empty(num_tokens, hq * d, dtype=q.dtype, device=q.device)
    start = 0
    for i, (p, e) in enumerate(zip(prefix_lens.tolist(), extend_lens.tolist())):
        slots = req_to_token[i, :p + e].long()
        k = k_cache[slots].float().repeat_interleave(group, dim=1)  # [p+e, Hq, D]
        v = v_cache[slots].float().repeat_interleave(group, dim=1)
        qi = q[start:start + e].float()  # [e, Hq, D]
        scores = torch.einsum("ehd,nhd->hen", qi, k) / math.sqrt(d)  # [Hq, e, p+e]
        visible = torch.arange(p + e, device=q.device)[None, :] <= (p + torch.arange(e, device=q.device))[:, None]
        scores = scores.masked_fill(~visible, float("-inf"))
        o = torch.einsum("hen,nhd->ehd", scores.softmax(-1), v)  # [e, Hq, D]
        out[start:start + e] = o.reshape(e, hq * d).to(q.dtype)
        start += e
    return out
