"""Row access and cross-program exchange for the masked-sampling kernel (sampling_kernel.py).

    _load_raw / _masked_block / _row_block: one BLOCK of a logits row as float32, with the grammar
        bitmask applied (disallowed tokens -inf) and, for _row_block, scaled by 1 / temperature
    _ordered_key: float32 -> int32 key with the same order (for the threshold search)
    _sync / _publish / _exchange / _column / _int_column / _records: the SPLITS programs of one row publish
        per-pass partials into a workspace, meet at an atomic barrier, and read every partial back
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_raw(logits_ptr, mask_ptr, row_masked, offs, V, HAS_BITMASK: tl.constexpr):
    """Issue one block's loads: (logits [BLOCK] float32, bitmask words [BLOCK] int32), unused
    until _apply_mask, so a loop can carry them while the previous block computes."""
    in_vocab = offs < V
    x = tl.load(logits_ptr + offs, mask=in_vocab, other=float("-inf")).to(tl.float32)
    words = tl.full(offs.shape, -1, tl.int32)
    if HAS_BITMASK:  # (offs >= 0: a shift, not a signed division)
        is_row_masked = (offs * 0 + row_masked) != 0  # [BLOCK] broadcast of the row's flag
        words = tl.load(mask_ptr + (offs >> 5), mask=in_vocab & is_row_masked, other=-1)
    return x, words


@triton.jit
def _lane_bits(offs):
    """[BLOCK] int32: each token's bit in its bitmask word. A streaming pass's tiles step by whole
    grid rows (multiples of 32 tokens), so it computes them once, before its loop."""
    return 1 << (offs & 31)


@triton.jit
def _apply_mask(x, words, bits):
    """x where the token's bit (bits: _lane_bits) is set in its word, else -inf."""
    return tl.where((words & bits) != 0, x, float("-inf"))


@triton.jit
def _tile_words(k0, q0, L: tl.constexpr, KR: tl.constexpr, NW: tl.constexpr):
    """[KR, NW, 32] int32 token ids of grid rows k0.. and lanes q0.. (q0 a multiple of 32): one
    bitmask word per [.., w, :] row, so a thread loads each word once (_load_words)."""
    rows = (k0 + tl.arange(0, KR))[:, None, None] * L
    return rows + (q0 + tl.arange(0, NW) * 32)[None, :, None] + tl.arange(0, 32)[None, None, :]


@triton.jit
def _load_words(logits_ptr, mask_ptr, row_masked, k0, q0, V, HAS_BITMASK: tl.constexpr,
                L: tl.constexpr, KR: tl.constexpr, NW: tl.constexpr):
    """_load_raw on a _tile_words tile: (logits [KR, NW, 32] float32, words [KR, NW, 1] int32)."""
    offs = _tile_words(k0, q0, L, KR, NW)
    x = tl.load(logits_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    words = tl.full((KR, NW, 1), -1, tl.int32)
    if HAS_BITMASK:
        w = (k0 + tl.arange(0, KR))[:, None, None] * (L // 32) + (q0 // 32 + tl.arange(0, NW))[None, :, None]
        words = tl.load(mask_ptr + w, mask=(w * 32 < V) & ((w * 0 + row_masked) != 0), other=-1)
    return x, words


@triton.jit
def _masked_block(logits_ptr, mask_ptr, row_masked, offs, V, HAS_BITMASK: tl.constexpr):
    """[BLOCK] float32 logits, -inf where the bitmask bans the token or offs >= V."""
    x, words = _load_raw(logits_ptr, mask_ptr, row_masked, offs, V, HAS_BITMASK)
    if HAS_BITMASK:
        x = _apply_mask(x, words, _lane_bits(offs))
    return x


@triton.jit
def _ordered_key(s):
    """float32 -> int32 with the same order (negative floats get their low 31 bits flipped)."""
    b = s.to(tl.int32, bitcast=True)
    return tl.where(b >= 0, b, b ^ 0x7FFFFFFF)


@triton.jit
def _sync(sync_ptr, row, n, SPLITS: tl.constexpr):
    """Barrier number n (1, 2, ...) of the SPLITS programs of one row."""
    tl.debug_barrier()
    tl.atomic_add(sync_ptr + row * 2, 1, sem="release")
    seen = tl.atomic_add(sync_ptr + row * 2, 0, sem="acquire")
    while seen < n * SPLITS:
        seen = tl.atomic_add(sync_ptr + row * 2, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _publish(sync_ptr, row, n, SPLITS: tl.constexpr):
    """Barrier n of the row's programs (SPLITS > 1), or of this program's threads: what was
    stored before it is visible after it (read it back with volatile loads)."""
    if SPLITS > 1:
        _sync(sync_ptr, row, n, SPLITS)
    else:
        tl.debug_barrier()


@triton.jit
def _exchange(part_ptr, sync_ptr, row, split, nb, vals, SPLITS: tl.constexpr, NF: tl.constexpr):
    """Publish this program's record vals [NF] float32, wait for the row's other programs and
    return the base of the row's [SPLITS, NF] records (read them with _column / _records)."""
    base = part_ptr + ((row * 2 + nb % 2) * SPLITS) * NF  # double-buffered by pass parity
    tl.store(base + split * NF + tl.arange(0, NF), vals)
    _sync(sync_ptr, row, nb, SPLITS)
    return base


@triton.jit
def _column(base, i: tl.constexpr, SPLITS: tl.constexpr, NF: tl.constexpr):
    """Field i of every program's record -> [SPLITS] float32 (loaded, so bit patterns survive)."""
    return tl.load(base + tl.arange(0, SPLITS) * NF + i, volatile=True)


@triton.jit
def _int_column(base, i: tl.constexpr, SPLITS: tl.constexpr, NF: tl.constexpr):
    """Field i as int32 (stored bitcast) -> [SPLITS] int32."""
    return tl.load(base.to(tl.pointer_type(tl.int32)) + tl.arange(0, SPLITS) * NF + i, volatile=True)


@triton.jit
def _records(base, SPLITS: tl.constexpr, NF: tl.constexpr):
    """Every program's record -> [SPLITS, NF] float32."""
    j = tl.arange(0, SPLITS)
    return tl.load(base + j[:, None] * NF + tl.arange(0, NF)[None, :], volatile=True)


@triton.jit
def _row_block(logits_ptr, mask_ptr, row_masked, offs, V, inv_t, HAS_BITMASK: tl.constexpr):
    """(x, s) for one block: masked logits and s = x * (1 / T), [BLOCK] float32 each."""
    x = _masked_block(logits_ptr, mask_ptr, row_masked, offs, V, HAS_BITMASK)
    return x, x * inv_t
