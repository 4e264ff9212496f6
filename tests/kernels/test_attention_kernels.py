"""Triton attention kernels vs their torch references on fresh random inputs.

On CPU the kernels run under TRITON_INTERPRET=1 (conftest) on small shapes; the `gpu` tests run
real shapes on CUDA with bf16 tolerance.
"""
import pytest
import torch

from sgl_lang.kernels.attention_decode import decode_attention, decode_attention_ref, pick_num_kv_splits
from sgl_lang.kernels.attention_extend import (ExtendMetaLayout, extend_attention, extend_attention_ref,
                                               extend_blocks)
from sgl_lang.kernels.attention_prologue import rms_norm, rms_norm_ref, rope_, rope_ref
from sgl_lang.kernels.attention_store import store_kv, store_kv_ref

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def _paged_cache(seq_lens, hkv, d, dtype, device, gen):
    """Random caches and a req_to_token whose slots are a random permutation (non-contiguous)."""
    total = sum(seq_lens)
    num_slots = total + 7
    k_cache = torch.randn(num_slots + 1, hkv, d, generator=gen).to(device, dtype)
    v_cache = torch.randn(num_slots + 1, hkv, d, generator=gen).to(device, dtype)
    perm = torch.randperm(num_slots, generator=gen)[:total] + 1
    req_to_token = torch.zeros(len(seq_lens), max(seq_lens) + 3, dtype=torch.int64)
    start = 0
    for i, n in enumerate(seq_lens):
        req_to_token[i, :n] = perm[start:start + n]
        start += n
    return k_cache, v_cache, req_to_token.to(device)


def _tol(dtype):
    return dict(atol=2e-2, rtol=2e-2) if dtype != torch.float32 else dict(atol=2e-3, rtol=2e-3)


def _run_decode(seq_lens, hq, hkv, d, splits, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    k_cache, v_cache, r2t = _paged_cache(seq_lens, hkv, d, dtype, device, gen)
    q = torch.randn(len(seq_lens), hq, d, generator=gen).to(device, dtype)
    lens = torch.tensor(seq_lens, device=device)
    out = decode_attention(q, k_cache, v_cache, r2t, lens, num_kv_splits=splits)
    ref = decode_attention_ref(q, k_cache, v_cache, r2t, lens)
    torch.testing.assert_close(out.float(), ref.float(), **_tol(dtype))


@pytest.mark.parametrize("seq_lens,hq,hkv,d,splits", [
    ([1, 5, 70], 4, 2, 16, 4),       # GQA group 2, splits longer and shorter than a sequence
    ([33, 2], 3, 1, 32, 1),          # group 3 (padded to 16 rows), no split
    ([9], 2, 2, 24, 2),              # head_dim not a power of two, MHA
])
def test_decode_matches_ref(seq_lens, hq, hkv, d, splits):
    device = "cuda" if CUDA else "cpu"
    _run_decode(seq_lens, hq, hkv, d, splits, torch.float32, device, seed=len(seq_lens) + d)


@pytest.mark.parametrize("knobs", [dict(num_warps=8, kv_evict="evict_first", block_n=32, num_stages=2),
                                   dict(num_warps=2, kv_evict="evict_last", num_stages=4)])
def test_decode_launch_knobs_match_ref(knobs):
    """The launch knobs bench_decode_attention sweeps (warps, K/V eviction policy, keys per step,
    stages) leave the result as the reference's."""
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator().manual_seed(5)
    seq_lens = [1, 37, 70]
    k_cache, v_cache, r2t = _paged_cache(seq_lens, 2, 16, torch.float32, device, gen)
    q = torch.randn(len(seq_lens), 8, 16, generator=gen).to(device)
    lens = torch.tensor(seq_lens, device=device)
    out = decode_attention(q, k_cache, v_cache, r2t, lens, num_kv_splits=2, **knobs)
    ref = decode_attention_ref(q, k_cache, v_cache, r2t, lens)
    torch.testing.assert_close(out.float(), ref.float(), **_tol(torch.float32))
    with pytest.raises(ValueError, match="kv_evict"):
        decode_attention(q, k_cache, v_cache, r2t, lens, num_kv_splits=2, kv_evict="evict_never")


@pytest.mark.parametrize("splits", [2, 8])
def test_decode_merge_in_the_last_program_matches_two_launches(splits):
    """fused_merge (the last of a sequence's split programs merges) == the separate merge
    launch == the reference, call after call: the arrival counters are back at 0 after each."""
    from sgl_lang.kernels.attention_decode import _ARRIVALS
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator().manual_seed(splits)
    seq_lens = [3, 40, 1, 17]
    k_cache, v_cache, r2t = _paged_cache(seq_lens, 2, 16, torch.float32, device, gen)
    lens = torch.tensor(seq_lens, device=device)
    for _ in range(3):
        q = torch.randn(len(seq_lens), 6, 16, generator=gen).to(device)
        fused = decode_attention(q, k_cache, v_cache, r2t, lens, num_kv_splits=splits, fused_merge=True)
        assert int(_ARRIVALS[q.device][-1].abs().sum()) == 0
        two = decode_attention(q, k_cache, v_cache, r2t, lens, num_kv_splits=splits, fused_merge=False)
        ref = decode_attention_ref(q, k_cache, v_cache, r2t, lens)
        torch.testing.assert_close(fused, two, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.float(), ref.float(), **_tol(torch.float32))


def _run_extend(prefix_lens, extend_lens, hq, hkv, d, dtype, device, seed, blocks=None, launch=None):
    gen = torch.Generator().manual_seed(seed)
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens)]
    k_cache, v_cache, r2t = _paged_cache(seq_lens, hkv, d, dtype, device, gen)
    q = torch.randn(sum(extend_lens), hq, d, generator=gen).to(device, dtype)
    starts = torch.tensor([0] + extend_lens[:-1], device=device).cumsum(0)
    p_t = torch.tensor(prefix_lens, device=device)
    e_t = torch.tensor(extend_lens, device=device)
    listed = None
    block_m = launch[3] if launch else 64
    if blocks is not None:  # the block list: exact, or padded with no-work blocks (as a graph does)
        table = extend_blocks(torch.tensor(extend_lens), None if blocks == "exact" else
                              -(-sum(extend_lens) // block_m) + len(extend_lens) + 3, block_m=block_m).to(device)
        listed = (table[0], table[1])
    out = extend_attention(q, k_cache, v_cache, r2t, starts, p_t, e_t,
                           0 if blocks == "padded" else max(extend_lens), blocks=listed, launch=launch)
    ref = extend_attention_ref(q, k_cache, v_cache, r2t, p_t, e_t)
    torch.testing.assert_close(out.float(), ref.float(), **_tol(dtype))


@pytest.mark.parametrize("prefix_lens,extend_lens,hq,hkv,d", [
    ([0, 3, 70], [5, 1, 9], 4, 2, 16),   # fresh prefill, decode-like row, long cached prefix
    ([0], [70], 2, 1, 32),               # several query and key tiles, causal across tiles
    ([4, 0], [0, 3], 3, 3, 24),          # a sequence with nothing new; odd head_dim
])
@pytest.mark.parametrize("blocks", [None, "exact", "padded"])
def test_extend_matches_ref(prefix_lens, extend_lens, hq, hkv, d, blocks):
    device = "cuda" if CUDA else "cpu"
    _run_extend(prefix_lens, extend_lens, hq, hkv, d, torch.float32, device, seed=sum(extend_lens),
                blocks=blocks)


@pytest.mark.parametrize("blocks", [None, "padded"])
def test_extend_with_128_row_blocks_matches_ref(blocks):
    """A launch with block_m 128 (blocks listed at that size): several query blocks, a cached
    prefix, a one-token row, causal across key tiles."""
    device = "cuda" if CUDA else "cpu"
    _run_extend([0, 5, 40], [200, 1, 130], 4, 2, 16, torch.float32, device, seed=11, blocks=blocks,
                launch=(32, 4, 2, 128))


def test_extend_blocks_lists_each_sequences_blocks_then_padding():
    table = extend_blocks(torch.tensor([130, 0, 64, 1]), num_blocks=8)
    assert table.dtype == torch.int32
    assert table[0].tolist() == [0, 0, 0, 2, 3, -1, -1, -1]
    assert table[1].tolist() == [0, 1, 2, 0, 0, 0, 0, 0]
    assert extend_blocks(torch.tensor([5])).tolist() == [[0], [0]]
    assert extend_blocks(torch.tensor([130, 0, 64]), block_m=128).tolist() == [[0, 0, 2], [0, 1, 0]]
    with pytest.raises(ValueError, match="do not fit"):
        extend_blocks(torch.tensor([200]), num_blocks=3)


def test_extend_meta_layout_packs_lengths_and_blocks_in_aligned_rows():
    extend, prefix = torch.tensor([130, 0, 5]), torch.tensor([7, 0, 2])
    layout = ExtendMetaLayout.for_batch(extend)  # 3 + 0 + 1 blocks, 3 sequences: rows of 4
    assert layout == ExtendMetaLayout(4, 4) and layout.size == 20
    q_starts, prefix_lens, extend_lens, (seq, mb) = layout.views(layout.pack(prefix, extend), 3)
    assert q_starts.tolist() == [0, 130, 130] and prefix_lens.tolist() == [7, 0, 2]
    assert extend_lens.tolist() == [130, 0, 5]
    assert seq.tolist() == [0, 0, 0, 2] and mb.tolist() == [0, 1, 2, 0]
    assert all(t.storage_offset() % 4 == 0 for t in (q_starts, prefix_lens, extend_lens, seq, mb))
    wide = ExtendMetaLayout.of(6, 9)  # a graph's layout: room for 6 sequences, 9 blocks
    assert wide == ExtendMetaLayout(8, 12)
    *_, (seq, mb) = wide.views(wide.pack(prefix, extend), 3, num_blocks=6)
    assert seq.tolist() == [0, 0, 0, 2, -1, -1] and len(mb) == 6


def test_store_kv_on_strided_views():
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, 4 + 2 * 2, 8, generator=gen).to(device)  # [T, Hq + 2*Hkv, D]
    k, v = qkv[:, 4:6], qkv[:, 6:8]  # strided [T, Hkv, D] views
    loc = torch.tensor([3, 1, 9, 4, 7], device=device)
    caches = [torch.randn(11, 2, 8, generator=gen).to(device) for _ in range(2)]
    expect = [c.clone() for c in caches]
    store_kv(caches[0], caches[1], loc, k, v)
    store_kv_ref(expect[0], expect[1], loc, k, v)
    torch.testing.assert_close(caches[0], expect[0], atol=0, rtol=0)
    torch.testing.assert_close(caches[1], expect[1], atol=0, rtol=0)


def test_rms_norm_and_rope_match_ref():
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 48, generator=gen).to(device)
    res = torch.randn(6, 48, generator=gen).to(device)
    w = torch.randn(48, generator=gen).to(device)
    torch.testing.assert_close(rms_norm(x, w, 1e-5), rms_norm_ref(x, w, 1e-5))
    y, s = rms_norm(x, w, 1e-5, res)
    y_ref, s_ref = rms_norm_ref(x, w, 1e-5, res)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)

    qk = torch.randn(6, 5, 16, generator=gen).to(device)
    ang = torch.randn(6, 1, 8, generator=gen).to(device)
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([-ang.sin(), ang.sin()], -1)
    expect = rope_ref(qk, cos, sin)
    untouched = qk[:, 0].clone()
    view = qk[:, 1:4]  # strided heads, rotated in place
    rope_(view, cos, sin)
    torch.testing.assert_close(qk[:, 1:4], expect[:, 1:4])
    assert torch.equal(qk[:, 0], untouched)  # heads outside the view are left alone


def test_kernels_reject_bad_shapes():
    q = torch.randn(2, 3, 8)
    cache = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="Hq % Hkv"):
        decode_attention(q, cache, cache, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="power of two"):
        decode_attention(torch.randn(2, 4, 8), cache, cache, torch.zeros(2, 4, dtype=torch.long),
                         torch.ones(2, dtype=torch.long), num_kv_splits=3)


def test_pick_num_kv_splits_is_power_of_two():
    for bs in (1, 3, 64, 512):
        s = pick_num_kv_splits(bs, 8)
        assert s >= 1 and s & (s - 1) == 0 and s <= 16


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("hq,hkv,d", [(9, 3, 64), (32, 8, 128), (16, 8, 128)])
def test_gpu_bf16_real_shapes(hq, hkv, d):
    seq_lens = [1, 17, 300, 1029]
    for splits in (1, 8, 32):
        _run_decode(seq_lens, hq, hkv, d, splits, torch.bfloat16, "cuda", seed=splits)
    _run_extend([0, 100, 0, 513], [130, 1, 700, 64], hq, hkv, d, torch.bfloat16, "cuda", seed=d)
