"""Fused masked sampling: the Triton kernel (under TRITON_INTERPRET=1 on CPU, one program per
row; on a GPU also split rows) against the torch reference on fresh random inputs, plus
properties of the reference itself."""
import os

import pytest
import torch

from sgl_lang.kernels.bitmask import apply_token_bitmask_inplace, apply_token_bitmask_inplace_ref, unpack_bitmask
from sgl_lang.kernels.masked_sampling import masked_sample, masked_sample_ref, num_splits

triton = pytest.importorskip("triton", reason="triton is not installed")
needs_interpreter = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1 (set before triton is imported; run "
           "`TRITON_INTERPRET=1 pytest tests/kernels`)")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_batch(bs, vocab, seed, temps, top_ks, top_ps, min_ps, masked, scale=3.0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(bs, vocab, generator=g) * scale).to(device)
    width = (vocab + 31) // 32
    bitmask = torch.randint(-2**31, 2**31 - 1, (bs, width), generator=g, dtype=torch.int32).to(device)
    as_t = lambda v, dt: torch.tensor(v, dtype=dt, device=device)
    return dict(logits=logits, bitmask=bitmask, temperature=as_t(temps, torch.float32),
                top_k=as_t(top_ks, torch.int32), top_p=as_t(top_ps, torch.float32),
                min_p=as_t(min_ps, torch.float32),
                noise_keys=torch.randint(-2**31, 2**31 - 1, (bs, 2), generator=g,
                                         dtype=torch.int32).to(device),
                has_mask=as_t(masked, torch.bool))


def reference(batch, **extra):
    return masked_sample(**batch, **extra, use_triton=False)


def assert_same(got, ref):
    assert torch.equal(got.token_ids.cpu(), ref.token_ids.cpu()), (got.token_ids, ref.token_ids)
    torch.testing.assert_close(got.logprobs.cpu(), ref.logprobs.cpu(), rtol=1e-4, atol=1e-4)


MIXED = dict(temps=[0, 0, 1.0, 0.7, 1.0, 1.3, 0.5, 1.0], top_ks=[-1, 4, -1, 5, -1, 20, 3, 2],
             top_ps=[1, 1, 1, 1, 0.8, 0.9, 1, 0.5], min_ps=[0, 0, 0, 0, 0, 0.05, 0.1, 0],
             masked=[1, 0, 1, 0, 1, 1, 0, 1])
# filters that reject the first draw often: the redraws and the threshold search run
HARSH = dict(temps=[2.0, 3.0, 1.5, 2.0, 4.0, 1.0, 2.5, 3.0], top_ks=[1, 2, 0, 3, 7, 0, 40, 5],
             top_ps=[1, 1, 0.05, 0.2, 0.3, 1, 0.1, 0.6], min_ps=[0, 0, 0, 0, 0, 0.6, 0.2, 0.5],
             masked=[1, 1, 0, 1, 0, 1, 1, 0])


@needs_interpreter
@pytest.mark.parametrize("seed,vocab", [(0, 300), (1, 1000), (2, 77)])
def test_triton_matches_reference_on_mixed_batch(seed, vocab):
    batch = random_batch(8, vocab, seed, **MIXED)
    assert_same(masked_sample(**batch, use_triton=True), reference(batch))


@needs_interpreter
@pytest.mark.parametrize("seed", range(4))
def test_triton_threshold_search_and_redraw_match_reference(seed):
    batch = random_batch(8, 700, 10 + seed, **HARSH, scale=1.0)
    assert_same(masked_sample(**batch, use_triton=True), reference(batch))


# rows that reach the rare branches: rejection rounds running out (then a draw on K itself),
# tests that cannot decide (top-p over top-k's set: the exact threshold search), min-p redraws
RARE = {"rounds run out": dict(temps=[5.0] * 8, top_ks=[1, 2, 1, 3, 1, 2, 1, 1], top_ps=[1] * 8, min_ps=[0] * 8),
        "search": dict(temps=[2.0] * 8, top_ks=[50, 30, 80, 20, 60, 40, 10, 100],
                       top_ps=[0.5, 0.6, 0.4, 0.7, 0.3, 0.5, 0.8, 0.2], min_ps=[0] * 8),
        "min-p": dict(temps=[3.0] * 8, top_ks=[0] * 8, top_ps=[1] * 8,
                      min_ps=[0.5, 0.9, 0.3, 0.7, 0.95, 0.6, 0.8, 0.99])}


@needs_interpreter
@pytest.mark.parametrize("case", sorted(RARE))
def test_triton_rare_branches_match_reference(case):
    for seed in range(2):
        batch = random_batch(8, 3000, seed, masked=[1, 0] * 4, **RARE[case])
        assert_same(masked_sample(**batch, use_triton=True), reference(batch))


@needs_interpreter
def test_triton_lean_kernel_without_filters_matches_reference():
    """may_filter=False (no top-k / top-p / min-p row): the one-pass kernel; may_sample=False (all
    greedy): the argmax kernel."""
    batch = random_batch(6, 900, 21, temps=[0, 1.0, 0.7, 2.0, 3.0, 0], top_ks=[0, -1, 900, 0, 0, -1],
                         top_ps=[1, 1, 1, 1, 1, 1], min_ps=[0] * 6, masked=[1, 0, 1, 1, 0, 1], scale=1.0)
    assert_same(masked_sample(**batch, may_filter=False, use_triton=True), reference(batch))
    greedy = dict(batch, temperature=torch.zeros_like(batch["temperature"]))
    assert_same(masked_sample(**greedy, may_filter=False, may_sample=False, use_triton=True),
                reference(greedy))


@needs_interpreter
def test_triton_greedy_exact_and_unmasked_batch():
    batch = random_batch(4, 500, 3, temps=[0] * 4, top_ks=[-1] * 4, top_ps=[1] * 4, min_ps=[0] * 4,
                         masked=[1, 1, 0, 0])
    got = masked_sample(**batch, use_triton=True)
    allowed = unpack_bitmask(batch["bitmask"], 500) | ~batch["has_mask"][:, None]
    expected = batch["logits"].masked_fill(~allowed, float("-inf")).argmax(dim=1)
    assert torch.equal(got.token_ids, expected)
    free = dict(batch, bitmask=None, has_mask=None)
    got = masked_sample(**free, use_triton=True)
    assert torch.equal(got.token_ids, batch["logits"].argmax(dim=1))
    torch.testing.assert_close(got.logprobs, batch["logits"].log_softmax(dim=1).amax(dim=1))


@needs_interpreter
@pytest.mark.parametrize("word_tiles", [True, False])
@pytest.mark.parametrize("seed,vocab", [(0, 300), (3, 2100)])
def test_word_tiles_match_reference(seed, vocab, word_tiles, monkeypatch):
    """Pass 1 on [rows, words, 32] tiles (masked_sampling.WORD_TILES, the default) and on
    [rows, lanes] tiles (SGL_LANG_WORD_TILES=0) gives what the reference gives, in every kernel
    (filters, lean, greedy) and for a row with nothing allowed."""
    import sgl_lang.kernels.masked_sampling as ms
    monkeypatch.setattr(ms, "WORD_TILES", word_tiles)
    batch = random_batch(8, vocab, seed, **MIXED)
    assert_same(masked_sample(**batch, use_triton=True), reference(batch))
    lean = dict(batch, top_k=torch.zeros_like(batch["top_k"]), top_p=torch.ones_like(batch["top_p"]),
                min_p=torch.zeros_like(batch["min_p"]))
    assert_same(masked_sample(**lean, may_filter=False, use_triton=True), reference(lean))
    greedy = dict(lean, temperature=torch.zeros_like(batch["temperature"]))
    greedy["bitmask"] = greedy["bitmask"].clone()
    greedy["bitmask"][0].zero_()  # row 0: nothing allowed (it has the mask on: MIXED masks it)
    got = masked_sample(**greedy, may_filter=False, may_sample=False, use_triton=True)
    assert_same(got, reference(greedy))


@needs_interpreter
@pytest.mark.parametrize("seed", [1, 2])
def test_lists_and_row_passes_match_reference(seed):
    """At vocab 20,000 a tile position sees ~10 tokens, so a filtered row's candidate tests take
    every way (checked by breaking each): from the per-position top values pass 1 stored
    (sampling_lists.py), from those plus a re-read of the few positions that may miss a token
    above the candidate, or from a pass over the row. All give what the reference gives."""
    for filters in (HARSH, MIXED):
        batch = random_batch(8, 20000, seed, **filters)
        assert_same(masked_sample(**batch, use_triton=True), reference(batch))


@needs_interpreter
def test_lists_with_ties_match_reference():
    """Logits on a half-integer grid (a few dozen values, so ties everywhere, also between a
    candidate and the lists' levels): the same tokens as the reference."""
    batch = random_batch(8, 20000, 3, **HARSH)
    batch["logits"] = (batch["logits"] * 2).round() / 2
    assert_same(masked_sample(**batch, use_triton=True), reference(batch))


@needs_interpreter
def test_triton_takes_the_samplers_tensors_as_they_are():
    """[bs, 1] temperature with greedy flags, int64 top-k with V = off, no has_mask, bf16 logits."""
    batch = random_batch(4, 260, 6, temps=[1.0, 0.8, 1.0, 1.2], top_ks=[260, 3, 260, 260],
                         top_ps=[1, 1, 0.7, 1], min_ps=[0, 0, 0, 0.1], masked=[1] * 4)
    batch.update(temperature=batch["temperature"][:, None], top_k=batch["top_k"].long(),
                 is_greedy=torch.tensor([True, False, False, False], device=DEVICE), has_mask=None,
                 logits=batch["logits"].bfloat16())
    got = masked_sample(**batch, use_triton=True)
    assert_same(got, reference(batch))
    x = batch["logits"].float().masked_fill(~unpack_bitmask(batch["bitmask"], 260), float("-inf"))
    assert got.token_ids[0] == x[0].argmax()


@needs_interpreter
def test_triton_all_masked_row_is_dead():
    batch = random_batch(3, 64, 4, temps=[0, 1.0, 1.0], top_ks=[-1, -1, 2], top_ps=[1, 0.5, 1],
                         min_ps=[0, 0, 0], masked=[1, 1, 0])
    batch["bitmask"][:2].zero_()
    got = masked_sample(**batch, use_triton=True)
    assert got.token_ids[:2].tolist() == [-1, -1]
    assert got.logprobs[:2].tolist() == [float("-inf")] * 2
    assert got.token_ids[2] >= 0
    assert masked_sample(**batch, dead_token=0, use_triton=True).token_ids[:2].tolist() == [0, 0]
    assert_same(got, reference(batch))


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
        for params in (MIXED, HARSH):
            batch = random_batch(8, 400, seed, **params)
            out = masked_sample(**batch).token_ids
            allowed = unpack_bitmask(batch["bitmask"], 400) | ~batch["has_mask"][:, None]
            assert allowed[torch.arange(8), out.cpu()].all()


def test_sampling_distribution_matches_softmax():
    """Many draws (a fresh noise key each) of one small row: frequencies follow the filtered softmax."""
    vocab, n = 8, 4000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -2.0, 1.5]]).repeat(n, 1)
    bitmask = torch.full((n, 1), 0b11101111, dtype=torch.int32)  # token 4 banned
    ones = torch.ones(n)
    keys = torch.randint(-2**31, 2**31 - 1, (n, 2), generator=torch.Generator().manual_seed(1),
                         dtype=torch.int32)
    for top_k, top_p, keep in ((-1, 1.0, [0, 1, 2, 3, 5, 6, 7]), (3, 1.0, [0, 5, 7]), (-1, 0.7, [0, 5])):
        out = masked_sample(logits, bitmask, ones * 0.9, torch.full((n,), top_k, dtype=torch.int32),
                            ones * top_p, ones * 0, keys).token_ids
        probs = torch.zeros(vocab)
        probs[keep] = torch.softmax(logits[0, keep] / 0.9, dim=0)
        freq = torch.bincount(out, minlength=vocab).float() / n
        assert set(out.unique().tolist()) <= set(keep)
        assert (freq - probs).abs().max() < 0.035, (freq, probs)


def test_same_key_same_token_new_key_differs():
    batch = random_batch(8, 300, 9, temps=[1.0] * 8, top_ks=[-1] * 8, top_ps=[1] * 8, min_ps=[0] * 8,
                         masked=[0] * 8)
    assert torch.equal(masked_sample(**batch).token_ids, masked_sample(**batch).token_ids)
    other = dict(batch, noise_keys=batch["noise_keys"] + 1)
    assert not torch.equal(masked_sample(**batch).token_ids, masked_sample(**other).token_ids)


def test_wrapper_validates_with_expected_got():
    batch = random_batch(2, 64, 0, temps=[0, 1], top_ks=[-1, -1], top_ps=[1, 1], min_ps=[0, 0], masked=[1, 1])
    with pytest.raises(TypeError, match="bitmask: expected dtype torch.int32, got torch.int64"):
        masked_sample(**dict(batch, bitmask=batch["bitmask"].long()))
    with pytest.raises(ValueError, match=r"bitmask: expected shape \[2, 2\], got \[2, 3\]"):
        masked_sample(**dict(batch, bitmask=torch.zeros(2, 3, dtype=torch.int32, device=DEVICE)))
    with pytest.raises(TypeError, match="top_k: expected dtype torch.int32 or torch.int64"):
        masked_sample(**dict(batch, top_k=batch["top_k"].float()))
    with pytest.raises(ValueError, match=r"top_p: expected shape \[2\], got \[3\]"):
        masked_sample(**dict(batch, top_p=torch.ones(3, device=DEVICE)))
    with pytest.raises(ValueError, match="noise_keys: expected a contiguous int32 tensor"):
        masked_sample(**dict(batch, noise_keys=batch["noise_keys"].long()))
    with pytest.raises(ValueError, match="logits: expected a 2-D tensor"):
        masked_sample(**dict(batch, logits=batch["logits"][0]))
    with pytest.raises(ValueError, match="has_mask marks constrained rows but bitmask is None"):
        masked_sample(**dict(batch, bitmask=None))


def test_num_splits_keeps_every_program_resident():
    assert num_splits(1, 128256, 132) == 32 or num_splits(1, 128256, 132) == 64
    for bs in (1, 2, 3, 5, 16, 33, 64, 65, 512):
        s = num_splits(bs, 128256, 132)
        assert s & (s - 1) == 0 and (s == 1 or bs * s <= 132)
    assert num_splits(1, 1000, 132) == 1  # short rows stay whole
    assert num_splits(512, 128256, 132) == 1


# ---- on a GPU: large vocab, every mode, split rows (the barrier path) ----

MODES = {
    "greedy": dict(temps=0.0, top_ks=0, top_ps=1.0, min_ps=0.0),
    "temperature": dict(temps=0.8, top_ks=0, top_ps=1.0, min_ps=0.0),
    "top-k": dict(temps=0.8, top_ks=50, top_ps=1.0, min_ps=0.0),
    "top-p": dict(temps=0.8, top_ks=0, top_ps=0.9, min_ps=0.0),
    "min-p": dict(temps=1.0, top_ks=0, top_ps=1.0, min_ps=0.1),
    "top-k+top-p": dict(temps=1.5, top_ks=20, top_ps=0.7, min_ps=0.0),
    "harsh": dict(temps=3.0, top_ks=2, top_ps=0.3, min_ps=0.0),
}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("bs,vocab", [(1, 128256), (3, 49152), (64, 128256)])
def test_gpu_every_mode_matches_reference(mode, bs, vocab):
    p = MODES[mode]
    batch = random_batch(bs, vocab, bs + vocab, [p["temps"]] * bs, [p["top_ks"]] * bs,
                         [p["top_ps"]] * bs, [p["min_ps"]] * bs, [1, 0] * (bs // 2) + [1] * (bs % 2),
                         scale=2.0 if mode == "harsh" else 4.0)
    ref = reference(batch)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    filters = p["top_ks"] > 0 or p["top_ps"] < 1 or p["min_ps"] > 0
    for splits in sorted({1, num_splits(bs, vocab, num_sms)}):  # whole rows, then split rows
        for may_filter, may_sample in sorted({(True, True), (filters, mode != "greedy")}):
            for _ in range(2):  # the first call compiles; the second launches directly
                assert_same(masked_sample(**batch, splits=splits, may_filter=may_filter,
                                          may_sample=may_sample), ref)


@pytest.mark.gpu
@gpu
def test_gpu_split_rows_leave_the_barrier_counters_at_zero():
    from sgl_lang.kernels.masked_sampling import _workspace
    batch = random_batch(2, 128256, 7, **{k: v[:2] for k, v in HARSH.items()})
    first = masked_sample(**batch)
    for _ in range(50):
        again = masked_sample(**batch)
    torch.cuda.synchronize()
    assert torch.equal(first.token_ids, again.token_ids)
    assert int(_workspace(torch.device("cuda", torch.cuda.current_device())).sync.abs().sum()) == 0


def test_inverse_cdf_walks_lanes_in_order():
    """Lane order (sampling_chain): token j sorts by (j % 1024, j // 1024), so with equal weights
    on tokens 7, 5 and 1029 the cumulative mass meets them as 5, 1029, 7."""
    from sgl_lang.kernels.sampling_chain import LANES, inverse_cdf
    weights = torch.zeros(3, 2500, dtype=torch.float64)
    weights[:, [7, 5, LANES + 5]] = 1.0
    got = inverse_cdf(weights, torch.tensor([0.1, 0.5, 0.9]))
    assert got.tolist() == [5, LANES + 5, 7]
    # a row's last positive weight catches a target that rounding would put past the end
    assert inverse_cdf(weights[:1], torch.tensor([1.0])).tolist() == [7]


def test_filtered_draws_follow_the_filtered_softmax_over_many_lanes():
    """The rejection rounds on a 3000-token row (three grid rows per lane): top-k 3 and top-p
    keep their sets and the frequencies match the renormalised softmax."""
    n, vocab = 3000, 3000
    g = torch.Generator().manual_seed(5)
    row = torch.randn(vocab, generator=g) * 0.5
    row[[10, 1500, 2999, 1034]] = torch.tensor([4.0, 3.5, 3.0, 2.5])  # the head, spread over lanes
    logits = row.repeat(n, 1)
    keys = torch.randint(-2**31, 2**31 - 1, (n, 2), generator=g, dtype=torch.int32)
    ones = torch.ones(n)
    for top_k, top_p, keep in ((3, 1.0, [10, 1500, 2999]), (-1, 0.3, None)):
        out = masked_sample(logits, None, ones, torch.full((n,), top_k, dtype=torch.int32), ones * top_p,
                            ones * 0, keys, use_triton=False).token_ids
        probs = torch.softmax(row, dim=0)
        if keep is None:  # top-p: the smallest head whose mass reaches top_p
            order = probs.argsort(descending=True)
            head = int((probs[order].cumsum(0) - probs[order] < top_p).sum())
            keep = order[:head].tolist()
        expected = torch.zeros(vocab)
        expected[keep] = probs[keep] / probs[keep].sum()
        freq = torch.bincount(out, minlength=vocab).float() / n
        assert set(out.unique().tolist()) <= set(keep)
        assert (freq - expected).abs().max() < 0.035, (freq[keep], expected[keep])
