"""Sampler and penalties: exact semantics checked against small references on fresh random
inputs; sampled distributions checked against the exact filtered softmax with a chi-square test
(false-alarm rate about 1e-6 per test)."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from sgl_lang.runtime import sampler as sampler_module
from sgl_lang.runtime.penalties import apply_penalties, count_tokens
from sgl_lang.runtime.sampler import (SamplingBatchInfo, _mix32, apply_token_bitmask,
                                      mix32_ref, sample, top_logprobs, uniform_noise)
from sgl_lang.runtime.sampling_params import SamplingParams as SP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_bitmask(bs: int, vocab: int, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed int32 bitmask [bs, ceil(V/32)], allowed bool [bs, V]); every row allows >= 1."""
    allowed = torch.rand(bs, vocab) < keep
    allowed[torch.arange(bs), torch.randint(0, vocab, (bs,))] = True
    words = []
    for row in allowed.tolist():
        packed = []
        for w in range(0, vocab, 32):
            v = sum(1 << b for b, a in enumerate(row[w:w + 32]) if a)
            packed.append(v - (1 << 32) if v >= 1 << 31 else v)
        words.append(packed)
    return torch.tensor(words, dtype=torch.int32), allowed


def exact_probs(logits: torch.Tensor, p: SP) -> torch.Tensor:
    """The documented filter semantics for one row, in float64, written the slow obvious way."""
    x = logits.double() / p.temperature
    order = sorted(range(len(x)), key=lambda t: -x[t].item())
    keep = set(order)
    if p.top_k > 0:
        kth = x[order[p.top_k - 1]].item()
        keep = {t for t in keep if x[t].item() >= kth}
    if p.top_p < 1:
        kept = [t for t in order if t in keep]
        z = sum(math.exp(x[t].item()) for t in kept)
        mass, new_keep = 0.0, set()
        for t in kept:
            if mass < p.top_p:
                new_keep.add(t)
            mass += math.exp(x[t].item()) / z
        keep = new_keep
    if p.min_p > 0:
        xmax = x.max().item()
        keep = {t for t in keep if x[t].item() >= xmax + math.log(p.min_p)}
    probs = torch.zeros(len(x), dtype=torch.float64)
    for t in keep:
        probs[t] = math.exp(x[t].item())
    return probs / probs.sum()


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[bool, str]:
    n = counts.sum().item()
    assert counts[probs == 0].sum() == 0, f"drew filtered-out tokens: {counts[probs == 0]}"
    support = probs > 0
    expected = probs[support] * n
    stat = (((counts[support] - expected) ** 2) / expected).sum().item()
    df = max(int(support.sum()) - 1, 1)
    z = 4.75  # upper 1e-6 quantile of the normal; Wilson-Hilferty for chi-square
    crit = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat < crit, f"chi2={stat:.1f} crit={crit:.1f} df={df}"


def test_mix32_is_exact_uint32_arithmetic():
    x = torch.randint(-2 ** 31, 2 ** 31 - 1, (5000,), dtype=torch.int32)
    got = [v & 0xFFFFFFFF for v in _mix32(x.clone()).tolist()]
    assert got == [mix32_ref(v & 0xFFFFFFFF) for v in x.tolist()]


def test_uniforms_are_a_function_of_key_and_round_only():
    keys = torch.randint(-2 ** 31, 2 ** 31 - 1, (20000, 2), dtype=torch.int32)
    u = uniform_noise(keys, 0)
    assert torch.equal(uniform_noise(keys[5:9], 0), u[5:9])
    assert not torch.equal(uniform_noise(keys, 1), u)  # each round draws afresh
    assert bool(((u > 0) & (u < 1)).all())
    # uniform on (0, 1): mean 1/2, variance 1/12; rounds 0 and 1 uncorrelated
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.003
    assert abs(torch.corrcoef(torch.stack([u, uniform_noise(keys, 1)]))[0, 1].item()) < 0.03
    # the formula, on one row, in Python integers
    k0, k1 = (v & 0xFFFFFFFF for v in keys[0].tolist())
    h = mix32_ref(mix32_ref((3 + k0) & 0xFFFFFFFF) ^ k1)
    assert uniform_noise(keys[:1], 3).item() == ((h >> 9) + 0.5) / 2 ** 23  # exact in float32


@pytest.mark.parametrize("vocab,words", [(100, 4), (96, 3), (33, 2)])
def test_apply_token_bitmask_matches_bit_by_bit_reference(vocab, words):
    bs = 5
    bitmask = torch.randint(-2 ** 31, 2 ** 31 - 1, (bs, words), dtype=torch.int32)
    logits = torch.randn(bs, vocab)
    out = apply_token_bitmask(logits, bitmask)
    for i in range(bs):
        for t in range(vocab):
            bit = t < 32 * words and (bitmask[i, t // 32].item() >> (t % 32)) & 1
            assert out[i, t].item() == (logits[i, t].item() if bit else float("-inf"))
    with pytest.raises(TypeError, match="bitmask: expected dtype torch.int32"):
        apply_token_bitmask(logits, bitmask.long())
    with pytest.raises(ValueError, match="bitmask: expected shape"):
        apply_token_bitmask(logits, bitmask[:, :-1])  # one word short of the vocabulary


def test_greedy_rows_are_argmax_in_a_mixed_batch_and_logprobs_are_raw():
    bs, vocab = 12, 1000
    logits = torch.randn(bs, vocab) * 3
    params = [SP(temperature=0.0) if i % 3 == 0 else SP(top_k=1) if i % 3 == 1 else
              SP(temperature=1.7, top_p=0.5, top_k=40) for i in range(bs)]
    out = sample(logits, SamplingBatchInfo.build(params, vocab), return_full_logprobs=True)
    greedy = torch.tensor([p.is_greedy for p in params])
    assert torch.equal(out.next_token_ids[greedy], logits.argmax(-1)[greedy])
    raw = torch.log_softmax(logits, -1)
    assert torch.allclose(out.full_logprobs, raw, atol=1e-5)
    assert torch.allclose(out.logprobs, raw.gather(1, out.next_token_ids[:, None]).squeeze(1),
                          atol=1e-5)
    values, ids = top_logprobs(out.full_logprobs, 5)
    ref_values, _ = raw.sort(-1, descending=True)
    assert torch.allclose(values, ref_values[:, :5], atol=1e-5)
    assert torch.allclose(raw.gather(1, ids), values, atol=1e-5)


def test_all_greedy_batch_matches_argmax():
    logits = torch.randn(7, 333)
    out = sample(logits, SamplingBatchInfo.build([SP(temperature=0)] * 7, 333))
    assert torch.equal(out.next_token_ids, logits.argmax(-1))
    assert out.full_logprobs is None


@pytest.mark.parametrize("params", [SP(temperature=1.5), SP(temperature=0),
                                    SP(top_k=3, top_p=0.7), SP(min_p=0.3, temperature=2.0)])
def test_masked_tokens_are_never_drawn(params):
    bs, vocab = 3000, 70
    bitmask, allowed = random_bitmask(bs, vocab, keep=0.2)
    logits = torch.randn(bs, vocab) * 2
    info = SamplingBatchInfo.build([params] * bs, vocab, vocab_mask=bitmask)
    out = sample(logits, info)
    assert allowed[torch.arange(bs), out.next_token_ids].all()
    masked = logits.masked_fill(~allowed, float("-inf"))
    lp = torch.log_softmax(masked, -1).gather(1, out.next_token_ids[:, None]).squeeze(1)
    assert torch.allclose(out.logprobs, lp, atol=1e-5)


@pytest.mark.parametrize("params", [
    SP(temperature=0.7),
    SP(top_k=4),
    SP(top_p=0.8),  # full-sort path
    SP(top_p=0.6, top_k=7, temperature=1.3),  # top-k candidates path
    SP(min_p=0.2),
    SP(top_k=9, top_p=0.9, min_p=0.05, temperature=1.6),
])
def test_empirical_distribution_matches_exact_filtered_softmax(params):
    vocab, n = 12, 40000
    logits = torch.randn(vocab) * 1.5
    info = SamplingBatchInfo.build([params] * n, vocab)  # unseeded: a fresh key per row
    draws = sample(logits.expand(n, vocab).contiguous(), info).next_token_ids
    counts = torch.bincount(draws, minlength=vocab).double()
    ok, msg = chi_square_ok(counts, exact_probs(logits, params))
    assert ok, msg


@pytest.mark.parametrize("scale", [6.0, 0.05])  # nucleus inside the CPU candidates / beyond
def test_cpu_top_p_candidate_path_equals_full_sort(monkeypatch, scale):
    vocab, bs = 5000, 64
    logits = torch.randn(bs, vocab) * scale
    params = [SP(seed=random.randrange(1 << 40), top_p=random.uniform(0.3, 0.99),
                 temperature=random.uniform(0.5, 1.5)) for _ in range(bs)]
    info = SamplingBatchInfo.build(params, vocab, steps=[0] * bs)
    fast = sample(logits, info).next_token_ids
    monkeypatch.setattr(sampler_module, "_CPU_TOP_P_CANDIDATES", 10 ** 9)  # always full sort
    assert torch.equal(sample(logits, info).next_token_ids, fast)


def test_sampling_over_steps_of_one_seeded_request_matches_distribution():
    vocab, steps = 10, 6000
    logits = torch.randn(vocab)
    params = SP(seed=random.randrange(1 << 40), temperature=0.9)
    info = SamplingBatchInfo.build([params] * steps, vocab, steps=list(range(steps)))
    draws = sample(logits.expand(steps, vocab).contiguous(), info).next_token_ids
    ok, msg = chi_square_ok(torch.bincount(draws, minlength=vocab).double(),
                            exact_probs(logits, params))
    assert ok, msg


def test_seeded_request_is_reproducible_and_independent_of_batch_position():
    vocab = 5000
    seeded = SP(seed=random.randrange(1 << 62), temperature=1.2, top_p=0.95, top_k=200)
    others = [SP(temperature=0.8), SP(top_k=700), SP(temperature=0), SP(top_p=0.5)]
    base = random.randrange(1 << 30)
    runs = []
    for layout in range(3):
        tokens = []
        for step in range(25):
            batch = others[:layout + 1]
            params = batch[:layout] + [seeded] + batch[layout:]
            logits = torch.randn(len(params), vocab)  # the other rows differ every run
            step_gen = torch.Generator().manual_seed(base + step)
            logits[layout] = torch.randn(vocab, generator=step_gen) * 2  # the seeded row's
            info = SamplingBatchInfo.build(params, vocab, steps=[step] * len(params))
            tokens.append(sample(logits, info).next_token_ids[layout].item())
        runs.append(tokens)
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) > 1  # the noise advances with the step


def test_different_seeds_draw_differently_and_seed_needs_steps():
    vocab = 1000
    logits = torch.zeros(2, vocab)
    info = SamplingBatchInfo.build([SP(seed=1), SP(seed=2)], vocab, steps=[0, 0])
    a, b = sample(logits, info).next_token_ids.tolist()
    assert a != b  # equal only with probability 1/1000
    with pytest.raises(ValueError, match="steps are required"):
        SamplingBatchInfo.build([SP(seed=1)], vocab)


def test_penalties_follow_the_documented_formula():
    bs, vocab = 4, 50
    logits = torch.randn(bs, vocab) * 3
    outputs = [[random.randrange(vocab) for _ in range(random.randrange(0, 30))]
               for _ in range(bs)]
    prompt_mask = torch.rand(bs, vocab) < 0.2
    params = [SP(frequency_penalty=random.uniform(-2, 2), presence_penalty=random.uniform(-2, 2),
                 repetition_penalty=random.uniform(0.5, 2.0)) for _ in range(bs)]
    info = SamplingBatchInfo.build(params, vocab)
    counts = count_tokens(outputs, vocab)
    assert counts.dtype == torch.int32
    got = apply_penalties(logits, counts, info, prompt_mask=prompt_mask)
    for i, p in enumerate(params):
        c = Counter(outputs[i])
        for t in range(vocab):
            assert counts[i, t].item() == c[t]
            ref = logits[i, t].item()
            if c[t] > 0 or prompt_mask[i, t]:
                ref = ref / p.repetition_penalty if ref > 0 else ref * p.repetition_penalty
            ref -= p.frequency_penalty * c[t] + p.presence_penalty * (c[t] > 0)
            assert got[i, t].item() == pytest.approx(ref, rel=1e-5, abs=1e-5)
    untouched = SamplingBatchInfo.build([SP()] * bs, vocab)
    assert apply_penalties(logits, counts, untouched) is logits


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_draws_match_across_devices(device):
    vocab = 2000
    logits = torch.randn(3, vocab)
    params = [SP(seed=7, top_k=50), SP(seed=8, top_p=0.9), SP(seed=9, min_p=0.1)]
    cpu = sample(logits, SamplingBatchInfo.build(params, vocab, steps=[3, 3, 3])).next_token_ids
    dev = sample(logits.to(device),
                 SamplingBatchInfo.build(params, vocab, device=device, steps=[3, 3, 3]))
    assert dev.next_token_ids.cpu().tolist() == cpu.tolist()


def _mixed_params(n: int, vocab: int) -> list:
    rng = random.Random(n)
    choices = [SP(temperature=0.0), SP(temperature=0.8), SP(top_k=rng.randint(1, 40)),
               SP(top_p=0.3 + 0.6 * rng.random(), temperature=1.3), SP(min_p=0.2, temperature=2.0),
               SP(top_k=20, top_p=0.7, temperature=1.5), SP(top_k=vocab + 5, top_p=0.95),
               SP(top_k=2, top_p=0.2, min_p=0.05, temperature=3.0)]
    return [rng.choice(choices) for _ in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_fused_kernel_reference_equals_the_torch_path(seed):
    """The fused kernel's reference, fed the batch info's tensors as `sample` feeds the kernel on
    CUDA, draws the same tokens and logprobs as the torch path (the semantics are one)."""
    from sgl_lang.kernels.masked_sampling import masked_sample_ref
    torch.manual_seed(seed)
    bs, vocab = 24, 1500
    logits = torch.randn(bs, vocab) * 3
    bitmask, _ = random_bitmask(bs, vocab, keep=0.6)
    info = SamplingBatchInfo.build(_mixed_params(bs, vocab), vocab, vocab_mask=bitmask)
    old = sample(logits, info)
    ref = masked_sample_ref(logits, info.vocab_mask, info.temperatures, info.top_ks, info.top_ps,
                            info.min_ps, info.noise_keys, is_greedy=info.is_greedy, dead_token=0)
    assert torch.equal(old.next_token_ids, ref.token_ids)
    torch.testing.assert_close(old.logprobs, ref.logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bs,vocab", [(1, 128256), (5, 49152), (96, 49152)])
def test_cuda_sample_uses_the_fused_kernel_and_matches_cpu(bs, vocab, monkeypatch):
    calls = []
    real = sampler_module.masked_sample
    monkeypatch.setattr(sampler_module, "masked_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(bs)
    logits = torch.randn(bs, vocab) * 4
    bitmask = torch.randint(-2**31, 2**31 - 1, (bs, (vocab + 31) // 32), dtype=torch.int32)
    params = _mixed_params(bs, vocab)
    info = SamplingBatchInfo.build(params, vocab, device="cuda", vocab_mask=bitmask)
    dev = sample(logits.cuda(), info)
    assert calls, "the CUDA path did not use the fused kernel"
    assert dev.full_logprobs is None
    cpu_info = SamplingBatchInfo.build(params, vocab, vocab_mask=bitmask)
    cpu_info.noise_keys = info.noise_keys.cpu()  # unseeded rows: the same fresh keys on both
    cpu = sample(logits, cpu_info)
    agree = (dev.next_token_ids.cpu() == cpu.next_token_ids).float().mean().item()
    assert agree == 1.0, agree
    torch.testing.assert_close(dev.logprobs.cpu(), cpu.logprobs, rtol=1e-4, atol=1e-4)
