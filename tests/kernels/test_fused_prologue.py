"""Fused kernels that cut launches per decoder layer: rotary embedding + KV store, and SiLU * mul.
Each against its plain-torch reference on fresh random inputs (Triton's interpreter on CPU)."""
import pytest
import torch

from sgl_lang.kernels.rope_store import rope_store_, rope_store_ref
from sgl_lang.kernels.silu_mul import silu_and_mul, silu_and_mul_ref

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]


def _rope_inputs(t, hq, hkv, d, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(t, hq + 2 * hkv, d, generator=gen).to(DEVICE, dtype)  # fused projection output
    ang = torch.randn(t, 1, d // 2, generator=gen).to(DEVICE)
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)
    sin = torch.cat([-ang.sin(), ang.sin()], -1).to(dtype)
    loc = (torch.randperm(3 * t, generator=gen)[:t] + 1).to(DEVICE)  # distinct slots, never slot 0
    caches = [torch.randn(3 * t + 1, hkv, d, generator=gen).to(DEVICE, dtype) for _ in range(2)]
    return qkv, cos, sin, loc, caches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,hq,hkv,d", [(1, 9, 3, 64), (7, 4, 2, 16), (5, 6, 1, 8), (3, 3, 3, 32)])
def test_rope_store_matches_rope_then_store(t, hq, hkv, d, dtype):
    qkv, cos, sin, loc, caches = _rope_inputs(t, hq, hkv, d, dtype, seed=t * 100 + hq)
    ref_qkv, ref_caches = qkv.clone(), [c.clone() for c in caches]
    qk, v = qkv[:, :hq + hkv], qkv[:, hq + hkv:]  # strided views, as the model passes them
    q = rope_store_(qk, v, cos, sin, caches[0], caches[1], loc)
    q_ref = rope_store_ref(ref_qkv[:, :hq + hkv], ref_qkv[:, hq + hkv:], cos, sin, ref_caches[0],
                           ref_caches[1], loc)
    assert q.shape == (t, hq, d) and q.data_ptr() == qkv.data_ptr()  # rotated in place
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else {}
    torch.testing.assert_close(q, q_ref, **tol)
    torch.testing.assert_close(caches[0], ref_caches[0], **tol)
    torch.testing.assert_close(caches[1], ref_caches[1], atol=0, rtol=0)  # values copied exactly
    # the key heads and values inside qkv, and every slot not in loc, are left as they were
    untouched = torch.ones(caches[0].shape[0], dtype=torch.bool)
    untouched[loc.cpu()] = False
    fresh = _rope_inputs(t, hq, hkv, d, dtype, seed=t * 100 + hq)
    assert torch.equal(qkv[:, hq:], fresh[0][:, hq:])
    assert torch.equal(caches[0][untouched.to(DEVICE)], fresh[4][0][untouched.to(DEVICE)])


def test_rope_store_rejects_bad_shapes():
    qkv, cos, sin, loc, caches = _rope_inputs(4, 4, 2, 16, torch.float32, seed=1)
    qk, v = qkv[:, :6], qkv[:, 6:]
    with pytest.raises(ValueError, match="loc"):
        rope_store_(qk, v, cos, sin, caches[0], caches[1], loc[:3])
    with pytest.raises(ValueError, match="caches"):
        rope_store_(qk, v, cos, sin, caches[0][:, :1], caches[1][:, :1], loc)
    with pytest.raises(ValueError, match="cos"):
        rope_store_(qk, v, cos[:2], sin[:2], caches[0], caches[1], loc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,i", [(1, 1536), (5, 24), (3, 1100), (0, 64)])
def test_silu_and_mul_matches_torch(t, i, dtype):
    gen = torch.Generator().manual_seed(t + i)
    x = (3 * torch.randn(t, 2 * i, generator=gen)).to(DEVICE, dtype)
    y = silu_and_mul(x)
    assert y.shape == (t, i) and y.dtype == dtype
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(y, silu_and_mul_ref(x), **tol)


def test_silu_and_mul_rejects_odd_width():
    with pytest.raises(ValueError, match="2\\*I"):
        silu_and_mul(torch.randn(2, 7))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,hq,hkv,d", [(1, 16, 8, 128), (5, 4, 2, 16), (3, 6, 1, 64)])
def test_rope_store_with_qk_norm_matches_norm_rope_then_store(t, hq, hkv, d, dtype):
    """Qwen3: per-head RMSNorm of q and k (their own weights) before the rotation."""
    qkv, cos, sin, loc, caches = _rope_inputs(t, hq, hkv, d, dtype, seed=7 * t + d)
    gen = torch.Generator().manual_seed(d)
    norm = ((1 + torch.rand(d, generator=gen)).to(DEVICE, dtype), torch.rand(d, generator=gen).to(DEVICE, dtype), 1e-6)
    ref_qkv, ref_caches = qkv.clone(), [c.clone() for c in caches]
    q = rope_store_(qkv[:, :hq + hkv], qkv[:, hq + hkv:], cos, sin, caches[0], caches[1], loc, norm)
    q_ref = rope_store_ref(ref_qkv[:, :hq + hkv], ref_qkv[:, hq + hkv:], cos, sin, ref_caches[0],
                           ref_caches[1], loc, norm)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(q, q_ref, **tol)
    torch.testing.assert_close(caches[0], ref_caches[0], **tol)
    torch.testing.assert_close(caches[1], ref_caches[1], atol=0, rtol=0)
    with pytest.raises(ValueError, match="norm weights"):
        rope_store_(qkv[:, :hq + hkv], qkv[:, hq + hkv:], cos, sin, caches[0], caches[1], loc,
                    (norm[0][:-1], norm[1], 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq_lens,hq,hkv,d,splits", [
    ([1, 5, 70], 4, 2, 16, 4),      # new key in the last split; a 1-token sequence (only the new key)
    ([33, 2, 9], 8, 2, 32, 1),      # one program per (sequence, KV head)
    ([130], 32, 8, 128, 2),         # Llama-3.1-8B heads
])
def test_decode_attention_rope_matches_rope_store_then_attention(seq_lens, hq, hkv, d, splits, dtype):
    """The rotation and KV store done inside the attention launch (decode_attention_rope) against
    rope_store_ref then decode_attention_ref: same output, same cache, qk left unrotated."""
    from sgl_lang.kernels.attention_decode import decode_attention_ref, decode_attention_rope
    bs = len(seq_lens)
    gen = torch.Generator().manual_seed(sum(seq_lens) + d)
    total = sum(seq_lens)
    caches = [torch.randn(total + 8, hkv, d, generator=gen).to(DEVICE, dtype) for _ in range(2)]
    slots = torch.randperm(total + 7, generator=gen)[:total] + 1
    r2t = torch.zeros(bs, max(seq_lens) + 2, dtype=torch.int64)
    start = 0
    for i, n in enumerate(seq_lens):
        r2t[i, :n] = slots[start:start + n]
        start += n
    r2t = r2t.to(DEVICE)
    lens = torch.tensor(seq_lens, device=DEVICE)
    loc = r2t[torch.arange(bs, device=DEVICE), lens - 1]  # the new token's slot
    qkv = torch.randn(bs, hq + 2 * hkv, d, generator=gen).to(DEVICE, dtype)
    ang = torch.randn(bs, 1, d // 2, generator=gen).to(DEVICE)
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)
    sin = torch.cat([-ang.sin(), ang.sin()], -1).to(dtype)
    ref_qkv, ref_caches, orig = qkv.clone(), [c.clone() for c in caches], qkv.clone()
    out = decode_attention_rope(qkv[:, :hq + hkv], qkv[:, hq + hkv:], cos, sin, caches[0], caches[1], loc,
                                r2t, lens, num_kv_splits=splits)
    q_ref = rope_store_ref(ref_qkv[:, :hq + hkv], ref_qkv[:, hq + hkv:], cos, sin, ref_caches[0],
                           ref_caches[1], loc)
    ref = decode_attention_ref(q_ref, ref_caches[0], ref_caches[1], r2t, lens)
    tol = dict(atol=2e-3, rtol=2e-3) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    torch.testing.assert_close(caches[0], ref_caches[0], **({} if dtype != torch.float32 else
                                                            dict(atol=1e-6, rtol=1e-6)))
    torch.testing.assert_close(caches[1], ref_caches[1], atol=0, rtol=0)  # values copied exactly
    assert torch.equal(qkv, orig)  # the projection output is left unrotated
