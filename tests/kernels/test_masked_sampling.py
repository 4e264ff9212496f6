"""Fused masked sampling: the Triton kernel (under TRITON_INTERPRET=1 on CPU) against the torch
reference on fresh random inputs, plus properties of the reference itself."""
import os

import pytest
import torch

from sgl_lang.kernels.bitmask import apply_token_bitmask_inplace, apply_token_bitmask_inplace_ref, unpack_bitmask
from sgl_lang.kernels.masked_sampling import masked_sample, masked_sample_ref

triton = pytest.importorskip("triton", reason="triton is not installed")
needs_interpreter = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1 (set before triton is imported; run "
           "`TRITON_INTERPRET=1 pytest tests/kernels`)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_batch(bs, vocab, seed, temps, top_ks, top_ps, min_ps, masked):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(bs, vocab, generator=g) * 3).to(DEVICE)
    width = (vocab + 31) // 32
    bitmask = torch.randint(-2**31, 2**31 - 1, (bs, width), generator=g, dtype=torch.int32).to(DEVICE)
    as_t = lambda v, dt: torch.tensor(v, dtype=dt, device=DEVICE)
    return dict(logits=logits, bitmask=bitmask, temperature=as_t(temps, torch.float32),
                top_k=as_t(top_ks, torch.int32), top_p=as_t(top_ps, torch.float32),
                min_p=as_t(min_ps, torch.float32),
                seeds=torch.randint(0, 2**40, (bs,), generator=g).to(DEVICE),
                steps=torch.randint(0, 10**6, (bs,), generator=g).to(DEVICE),
                has_mask=as_t(masked, torch.bool))


MIXED = dict(temps=[0, 0, 1.0, 0.7, 1.0, 1.3, 0.5, 1.0], top_ks=[-1, 4, -1, 5, -1, 20, 3, -1],
             top_ps=[1, 1, 1, 1, 0.8, 0.9, 1, 1], min_ps=[0, 0, 0, 0, 0, 0.05, 0.1, 0],
             masked=[1, 0, 1, 0, 1, 1, 0, 1])


@needs_interpreter
@pytest.mark.parametrize("seed,vocab", [(0, 300), (1, 1000), (2, 77)])
def test_triton_matches_reference_on_mixed_batch(seed, vocab):
    batch = random_batch(8, vocab, seed, **MIXED)
    got = masked_sample(**batch, use_triton=True)
    ref = masked_sample_ref(batch["logits"], batch["bitmask"], batch["has_mask"], batch["temperature"],
                            batch["top_k"], batch["top_p"], batch["min_p"], batch["seeds"], batch["steps"])
    assert torch.equal(got.cpu(), ref.cpu())


@needs_interpreter
def test_triton_greedy_exact_and_unmasked_batch():
    batch = random_batch(4, 500, 3, temps=[0] * 4, top_ks=[-1] * 4, top_ps=[1] * 4, min_ps=[0] * 4,
                         masked=[1, 1, 0, 0])
    got = masked_sample(**batch, use_triton=True)
    allowed = unpack_bitmask(batch["bitmask"], 500) | ~batch["has_mask"][:, None]
    expected = batch["logits"].masked_fill(~allowed, float("-inf")).argmax(dim=1)
    assert torch.equal(got, expected)
    free = dict(batch, bitmask=None, has_mask=None)
    assert torch.equal(masked_sample(**free, use_triton=True), batch["logits"].argmax(dim=1))


@needs_interpreter
def test_triton_all_masked_row_returns_minus_one():
    batch = random_batch(2, 64, 4, temps=[0, 1.0], top_ks=[-1, -1], top_ps=[1, 0.5], min_ps=[0, 0],
                         masked=[1, 1])
    batch["bitmask"].zero_()
    assert masked_sample(**batch, use_triton=True).tolist() == [-1, -1]


@needs_interpreter
def test_triton_bitmask_kernel_matches_reference():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 1000, generator=g).to(DEVICE)
    bitmask = torch.randint(-2**31, 2**31 - 1, (3, 32), generator=g, dtype=torch.int32).to(DEVICE)
    a, b = logits.clone(), logits.clone()
    apply_token_bitmask_inplace(a, bitmask, use_triton=True)
    apply_token_bitmask_inplace_ref(b, bitmask)
    assert torch.equal(a, b)


def test_masked_out_tokens_never_drawn():
    for seed in range(5):
        batch = random_batch(8, 400, seed, **MIXED)
        out = masked_sample(**batch)
        allowed = unpack_bitmask(batch["bitmask"], 400) | ~batch["has_mask"][:, None]
        assert allowed[torch.arange(8), out].all()


def test_sampling_distribution_matches_softmax():
    """Many draws (fresh step each) of one small row: frequencies follow the filtered softmax."""
    vocab, n = 8, 4000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -2.0, 1.5]]).repeat(n, 1)
    bitmask = torch.full((n, 1), 0b11101111, dtype=torch.int32)  # token 4 banned
    ones = torch.ones(n)
    for top_k, top_p, keep in ((-1, 1.0, [0, 1, 2, 3, 5, 6, 7]), (3, 1.0, [0, 5, 7]), (-1, 0.7, [0, 5])):
        out = masked_sample(logits, bitmask, ones * 0.9, torch.full((n,), top_k, dtype=torch.int32),
                            ones * top_p, ones * 0, torch.full((n,), 11, dtype=torch.int64),
                            torch.arange(n, dtype=torch.int64))
        probs = torch.zeros(vocab)
        probs[keep] = torch.softmax(logits[0, keep] / 0.9, dim=0)
        freq = torch.bincount(out, minlength=vocab).float() / n
        assert set(out.unique().tolist()) <= set(keep)
        assert (freq - probs).abs().max() < 0.035, (freq, probs)


def test_same_seed_and_step_same_token_new_step_differs():
    batch = random_batch(8, 300, 9, temps=[1.0] * 8, top_ks=[-1] * 8, top_ps=[1] * 8, min_ps=[0] * 8,
                         masked=[0] * 8)
    assert torch.equal(masked_sample(**batch), masked_sample(**batch))
    other = dict(batch, steps=batch["steps"] + 1)
    assert not torch.equal(masked_sample(**batch), masked_sample(**other))


def test_wrapper_validates_with_expected_got():
    batch = random_batch(2, 64, 0, temps=[0, 1], top_ks=[-1, -1], top_ps=[1, 1], min_ps=[0, 0], masked=[1, 1])
    with pytest.raises(TypeError, match="bitmask: expected dtype torch.int32, got torch.int64"):
        masked_sample(**dict(batch, bitmask=batch["bitmask"].long()))
    with pytest.raises(ValueError, match=r"bitmask: expected shape \[2, 2\], got \[2, 3\]"):
        masked_sample(**dict(batch, bitmask=torch.zeros(2, 3, dtype=torch.int32)))
    with pytest.raises(TypeError, match="top_k: expected dtype torch.int32"):
        masked_sample(**dict(batch, top_k=batch["top_k"].long()))
    with pytest.raises(ValueError, match="logits: expected a 2-D tensor"):
        masked_sample(**dict(batch, logits=batch["logits"][0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_large_vocab_greedy_matches_reference():
    batch = random_batch(16, 49152, 0, temps=[0] * 16, top_ks=[-1] * 16, top_ps=[1] * 16,
                         min_ps=[0] * 16, masked=[1, 0] * 8)
    got = masked_sample(**batch)
    ref = masked_sample(**batch, use_triton=False)
    assert torch.equal(got, ref)
