"""Per-position top values of a logits row, for the masked-sampling kernel's filtered rows.

Pass 1 of a whole-row program (SPLITS == 1, sampling_kernel.py) keeps, per tile position, the
NUM_LEVELS largest masked logits it streams past (level 0 is pass 1's running max) and stores
them: lists row [NUM_LEVELS, KR * L] float32 x (not s), indexed by the position's token id in the
first tile (grid row k < KR, lane), _FLOOR where a position saw fewer tokens. Every token whose
x is above X, the largest last level over the row's positions, is in some list, so a support
{s > v} with v > X * inv_t is known exactly from the lists: its lane records come from
NUM_LEVELS * KR * L values (24 KB at a 2048-token tile) instead of a pass over the row. Below
X, only the positions whose last level is >= v can miss a token of the support; _list_pass
re-reads just those positions' tokens (V / (KR * L) each) while they are few (MAX_UNLISTED).
A rejection round of a filtered row then costs a few KB of reads, not a pass of V * 4 bytes:
with randn * 4 logits, top-k 50 or top-p 0.9 keep ~50 tokens of 128k and X is near the ~270th
largest value; ~3% of rows draw a first candidate below it, and those re-read a few positions.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .sampling_records import _write_records
from .sampling_row import _row_block

NUM_LEVELS = 3  # values kept per position: the running max and two below it
_LEVELS = tl.constexpr(NUM_LEVELS)
MAX_UNLISTED = 64  # positions _list_pass re-reads at most; more: a pass over the row


@triton.jit
def _store_lists(lists, pos, lm, l1, l2, KRL: tl.constexpr):
    """Store the three levels at positions pos (tile-shaped, any rank) of a lists row whose
    levels are KRL apart; returns X, the largest last level (in x)."""
    tl.store(lists + pos, lm)
    tl.store(lists + KRL + pos, l1)
    tl.store(lists + 2 * KRL + pos, l2)
    return tl.max(l2)  # the order of a max does not matter: reduced over every axis at once


@triton.jit
def _unlisted(lists, inv_t, v, L: tl.constexpr, KR: tl.constexpr):
    """[KR, L] bool: positions whose list may miss a token with s >= v (last level >= v)."""
    pos = tl.arange(0, KR)[:, None] * L + tl.arange(0, L)[None, :]
    return tl.load(lists + (_LEVELS - 1) * (KR * L) + pos) * inv_t >= v


@triton.jit
def _list_pass(lists, inv_t, m, v, rec, q, logits_ptr, mask_ptr, row_masked, V, HAS_BITMASK: tl.constexpr,
               L: tl.constexpr, KR: tl.constexpr, KPOS: tl.constexpr):
    """The lane records of parity q (as sampling_records._support_pass writes them) of the
    support {s > v}: from the lists where a position's list holds every token >= v, and from
    re-reading the KPOS tokens of each other position (its tokens are KR * L apart). Meant for
    few such positions (_unlisted): one gather of a position's tokens per position."""
    pos = tl.arange(0, KR)[:, None] * L + tl.arange(0, L)[None, :]  # [KR, L]
    full = _unlisted(lists, inv_t, v, L, KR)
    lz = tl.zeros((KR, L), tl.float32)  # per position: mass exp(s - m), count, ties with v
    lc = tl.zeros((KR, L), tl.float32)
    le = tl.zeros((KR, L), tl.float32)
    for lev in tl.static_range(_LEVELS):
        s = tl.load(lists + lev * (KR * L) + pos) * inv_t
        keep = (s > v) & (full == 0)
        lz += tl.where(keep, tl.exp(s - m), 0.0)
        lc += keep.to(tl.float32)
        le += ((s == v) & (full == 0)).to(tl.float32)
    lanes = tl.arange(0, L)
    rz = tl.sum(lz, axis=0)  # [L]
    rc = tl.sum(lc, axis=0)
    re = tl.sum(le, axis=0)
    BIG = 2147483647
    p = tl.zeros((), tl.int32) - 1
    for _ in range(tl.sum(full.to(tl.int32))):  # the unlisted positions, in order
        p = tl.min(tl.where(full & (pos > p), pos, BIG))
        offs = p + tl.arange(0, KPOS) * (KR * L)  # [KPOS] the position's tokens
        sp = _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK)[1]
        above = sp > v
        here = lanes == p % L
        rz += tl.where(here, tl.sum(tl.where(above, tl.exp(sp - m), 0.0)), 0.0)
        rc += tl.where(here, tl.sum(above.to(tl.float32)), 0.0)
        re += tl.where(here, tl.sum((sp == v).to(tl.float32)), 0.0)
    _write_records(rec, q, lanes, rz, rc, re, L)
