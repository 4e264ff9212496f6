"""TritonAttentionBackend vs TorchAttentionBackend through a whole random-weight model, and on the
GPU: CUDA-graph decode vs eager, GPU bf16 logits vs the CPU float32 reference."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.gpu_models import SHAPES, random_engine, random_loaded_model  # noqa: E402
from sgl_lang.runtime.forward_batch import ForwardBatch  # noqa: E402
from sgl_lang.runtime.layers.attention import get_attention_backend  # noqa: E402
from sgl_lang.runtime.mem.kv_pool import KVPool  # noqa: E402

CUDA = torch.cuda.is_available()
TINY = dict(SHAPES["tiny"], num_hidden_layers=2, hidden_size=64, intermediate_size=128)


def _batches(pool, device, prompt_lens, chunk, mixed=False):
    """A two-chunk prefill of ragged prompts (the second chunk has a cached prefix), then a decode
    step. mixed: the last prompt comes late, its whole prefill behind the others' decode step
    (a mixed batch: one-token sequences first). -> list of ForwardBatch, sharing one slot layout."""
    gen = torch.Generator().manual_seed(1)
    slots = [pool.alloc(n + 1) for n in prompt_lens]  # +1: the decode token
    ids = [torch.randint(0, TINY["vocab_size"], (n + 1,), generator=gen) for n in prompt_lens]
    out = []
    assert min(prompt_lens) > chunk
    early = len(prompt_lens) - 1 if mixed else len(prompt_lens)
    out.append(_fb(ids[:early], slots[:early], [(0, chunk)] * early, device))
    out.append(_fb(ids[:early], slots[:early], [(chunk, n) for n in prompt_lens[:early]], device))
    late = [(0, prompt_lens[-1])] if mixed else []
    out.append(_fb(ids, slots, [(n, n + 1) for n in prompt_lens[:early]] + late, device))
    return out


def _fb(ids, slots, ranges, device):
    rows = [s[:b] for s, (a, b) in zip(slots, ranges)]
    r2t = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    ext = torch.tensor([b - a for a, b in ranges])
    return ForwardBatch(
        input_ids=torch.cat([t[a:b] for t, (a, b) in zip(ids, ranges)]).to(device),
        positions=torch.cat([torch.arange(a, b) for a, b in ranges]).to(device),
        out_cache_loc=torch.cat([s[a:b] for s, (a, b) in zip(slots, ranges)]).to(device),
        req_to_token=r2t.to(device), seq_lens=torch.tensor([b for _, b in ranges]),
        prefix_lens=torch.tensor([a for a, _ in ranges]), extend_lens=ext,
        is_decode=bool((ext == 1).all()), logits_indices=(ext.cumsum(0) - 1).to(device))


def _logits(model, backend, device, dtype, prompt_lens=(12, 17, 9), chunk=8, mixed=False, config=TINY):
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    pool = KVPool(64, config["num_hidden_layers"], config["num_key_value_heads"], head_dim, dtype, device)
    attn = get_attention_backend(backend) if isinstance(backend, str) else backend
    outs = []
    with torch.inference_mode():
        for fb in _batches(pool, device, list(prompt_lens), chunk, mixed):
            hidden = model(fb, pool, attn)
            outs.append(model.compute_logits(hidden[fb.logits_indices]).float().cpu())
    return outs


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
@pytest.mark.parametrize("mixed", [False, True])
def test_triton_backend_matches_torch_backend_on_cpu(mixed):
    model = random_loaded_model(TINY, torch.float32, "cpu", seed=0).model
    ref = _logits(model, "torch", "cpu", torch.float32, mixed=mixed)
    got = _logits(model, "triton", "cpu", torch.float32, mixed=mixed)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mixed", [False, True])
def test_gpu_bf16_logits_match_cpu_reference(mixed):
    ref = _logits(random_loaded_model(TINY, torch.float32, "cpu", seed=0).model, "torch", "cpu", torch.float32,
                  mixed=mixed)
    got = _logits(random_loaded_model(TINY, torch.bfloat16, "cuda", seed=0).model, "triton", "cuda",
                  torch.bfloat16, mixed=mixed)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=0.1, rtol=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_cuda_graph_decode_equals_eager():
    prompts = [list(range(1 + i, 40 + 7 * i)) for i in range(5)]
    params = {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}
    outs = {}
    for disable in (False, True):
        eng = random_engine(TINY, device="cuda", disable_cuda_graph=disable, cuda_graph_max_bs=8,
                            max_total_tokens=4096)
        assert (eng.runner.graph_runner is None) == disable
        outs[disable] = [o["output_ids"] if "output_ids" in o else o["text"]
                         for o in eng.generate(input_ids=prompts, sampling_params=params)]
        eng.shutdown()
    assert outs[False] == outs[True]


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
def test_triton_backend_matches_torch_backend_on_cpu_with_qk_norm():
    """Qwen3's per-head q/k RMSNorm: fused into the Triton backend's RoPE + KV-store kernel."""
    model = random_loaded_model(dict(TINY, architectures=["Qwen3ForCausalLM"]), torch.float32, "cpu", seed=0).model
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "q_norm" in name or "k_norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))  # distinct q and k weights
    assert model.model.layers[0].self_attn.qk_norm
    ref = _logits(model, "torch", "cpu", torch.float32)
    got = _logits(model, "triton", "cpu", torch.float32)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-3)


def _flashinfer_imports() -> bool:
    try:
        import flashinfer  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: the backend's tests skip
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or not _flashinfer_imports(), reason="needs CUDA and the flashinfer package")
@pytest.mark.parametrize("mixed", [False, True])
def test_gpu_flashinfer_logits_match_cpu_reference(mixed):
    """The optional flashinfer backend (prefill wrapper for chunks and mixed batches, decode wrapper
    for the decode step) against the CPU float32 reference, as the Triton backend above; head_dim 64
    (flashinfer compiles 64, 128, 256) and 4 query heads per KV head (its tensor-core decode)."""
    config = dict(TINY, hidden_size=512, num_attention_heads=8, num_key_value_heads=2)
    ref = _logits(random_loaded_model(config, torch.float32, "cpu", seed=0).model, "torch", "cpu", torch.float32,
                  mixed=mixed, config=config)
    got = _logits(random_loaded_model(config, torch.bfloat16, "cuda", seed=0).model, "flashinfer", "cuda",
                  torch.bfloat16, mixed=mixed, config=config)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=0.1, rtol=0.05)


def test_flashinfer_backend_says_what_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # `import flashinfer` raises ImportError
    with pytest.raises(ImportError, match="pip install flashinfer-python"):
        get_attention_backend("flashinfer")


def test_flashinfer_backend_refuses_a_cpu_engine():
    with pytest.raises(ValueError, match="flashinfer.*CUDA devices only"):
        random_engine(TINY, device="cpu", attention_backend="flashinfer")


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
def test_hybrid_backend_sends_prefills_and_decodes_to_their_backends():
    """prefill_attention_backend="triton" with decode_attention_backend="torch": chunks and the
    mixed batch through the Triton kernels, the decode step through torch; logits as torch alone."""
    from sgl_lang.runtime.layers.hybrid_attention import HybridAttentionBackend
    from sgl_lang.runtime.layers.torch_attention import TorchAttentionBackend
    from sgl_lang.runtime.layers.triton_attention import TritonAttentionBackend

    seen = []

    class Seen:  # records which backend got each batch (by its kind)
        def forward_rope(self, *args, **kw):
            seen.append((self.name, args[5].is_decode))
            return super().forward_rope(*args, **kw)

    prefill = type("SeenTriton", (Seen, TritonAttentionBackend), {})()
    decode = type("SeenTorch", (Seen, TorchAttentionBackend), {})()
    hybrid = HybridAttentionBackend(prefill, decode)
    assert not hasattr(hybrid, "bind_static_decode") and hasattr(hybrid, "bind_static_extend")
    model = random_loaded_model(TINY, torch.float32, "cpu", seed=0).model
    for mixed in (False, True):
        seen.clear()
        ref = _logits(model, "torch", "cpu", torch.float32, mixed=mixed)
        got = _logits(model, hybrid, "cpu", torch.float32, mixed=mixed)
        for r, g in zip(ref, got):
            torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-3)
        layers = TINY["num_hidden_layers"]
        decode_kind = ("triton", False) if mixed else ("torch", True)  # a mixed batch is not a decode batch
        assert seen == [("triton", False)] * (2 * layers) + [decode_kind] * layers, seen


def test_hybrid_backend_flags():
    from sgl_lang.runtime.config import ConfigError, EngineConfig
    from sgl_lang.runtime.layers.attention import attention_backend_names
    assert attention_backend_names("auto", "flashinfer", None, torch.device("cuda")) == ("flashinfer", "triton")
    assert attention_backend_names("auto", "flashinfer", None, torch.device("cpu")) == ("flashinfer", "torch")
    assert attention_backend_names("auto", None, None, torch.device("cpu")) == ("torch", "torch")
    assert attention_backend_names("triton", None, "torch", torch.device("cpu")) == ("triton", "torch")
    with pytest.raises(ConfigError, match="decode_attention_backend must be None or one of"):
        EngineConfig(decode_attention_backend="flash")
    with pytest.raises(ValueError, match="flashinfer.*CUDA devices only"):
        random_engine(TINY, device="cpu", prefill_attention_backend="flashinfer")



@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
def test_engine_with_a_hybrid_backend_generates_as_torch_alone():
    prompts = [list(range(1 + i, 20 + 5 * i)) for i in range(3)]
    params = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
    outs = []
    for flags in ({}, {"prefill_attention_backend": "triton"}):
        eng = random_engine(TINY, device="cpu", dtype="float32", max_total_tokens=1024, **flags)
        assert eng.runner.attn.name == ("torch" if not flags else "triton (prefill) + torch (decode)")
        outs.append([o["output_ids"] for o in eng.generate(input_ids=prompts, sampling_params=params)])
        eng.shutdown()
    assert outs[0] == outs[1]


class _FakeFlashInfer:
    """Stands in for the flashinfer package on CPU (it is not a dependency, and CI has no GPU):
    its two paged wrappers with flashinfer's documented plan()/run() contract, computed by our
    plain-torch references, so the backend's own plumbing (page lists, indptrs, which wrapper
    for which batch, the rope + store before it) runs here."""

    class _Wrapper:
        def __init__(self, workspace, kv_layout, use_tensor_cores=False, use_cuda_graph=False,
                     paged_kv_indptr_buffer=None, paged_kv_indices_buffer=None,
                     paged_kv_last_page_len_buffer=None):
            assert kv_layout == "NHD" and workspace.dtype == torch.uint8
            self.plans = 0
            # CUDA-graph mode: plan() copies into these fixed buffers and run() reads them, as a
            # replayed graph does
            self.buffers = (paged_kv_indptr_buffer, paged_kv_indices_buffer) if use_cuda_graph else None

        def _pages(self, kv_indptr, indices, last_page_len, page_size):
            assert page_size == 1 and bool((last_page_len == 1).all()) and indices.dtype == torch.int32
            lens = (kv_indptr[1:] - kv_indptr[:-1]).tolist()
            r2t = torch.zeros(len(lens), max(lens), dtype=torch.int64)
            for i, n in enumerate(lens):
                r2t[i, :n] = indices[int(kv_indptr[i]):int(kv_indptr[i]) + n].long()
            self.plans += 1
            return r2t, torch.tensor(lens)

    class BatchDecodeWithPagedKVCacheWrapper(_Wrapper):
        def plan(self, indptr, indices, last_page_len, hq, hkv, d, page_size, **kw):
            if self.buffers is not None:
                indptr_buf, indices_buf = self.buffers
                assert indptr_buf.shape == indptr.shape and len(indices) <= len(indices_buf)
                indptr_buf.copy_(indptr)
                indices_buf[:len(indices)].copy_(indices)
            self.r2t, self.lens = self._pages(indptr, indices, last_page_len, page_size)

        def run(self, q, kv):
            from sgl_lang.kernels.attention_decode import decode_attention_ref
            k, v = (c.squeeze(1) for c in kv)  # [pages, 1, Hkv, D] -> [pages, Hkv, D]
            r2t, lens = self.r2t, self.lens
            if self.buffers is not None:  # a replay reads the buffers, not the plan's arguments
                indptr_buf, indices_buf = self.buffers
                r2t, lens = self._pages(indptr_buf, indices_buf, torch.ones(len(q), dtype=torch.int32), 1)
            return decode_attention_ref(q, k, v, r2t, lens).view(q.shape)

    class BatchPrefillWithPagedKVCacheWrapper(_Wrapper):
        def plan(self, qo_indptr, kv_indptr, indices, last_page_len, hq, hkv, d, page_size, causal=False, **kw):
            assert causal
            self.r2t, lens = self._pages(kv_indptr, indices, last_page_len, page_size)
            self.extend = qo_indptr[1:] - qo_indptr[:-1]
            self.prefix = lens - self.extend

        def run(self, q, kv):
            from sgl_lang.kernels.attention_extend import extend_attention_ref
            k, v = (c.squeeze(1) for c in kv)
            return extend_attention_ref(q, k, v, self.r2t, self.prefix, self.extend).view(q.shape)


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
@pytest.mark.parametrize("mixed", [False, True])
def test_flashinfer_backend_plumbing_on_cpu(monkeypatch, mixed):
    """The flashinfer backend over a stand-in package (above): logits as the torch backend's, one
    plan per batch (chunks and the mixed batch through the prefill wrapper, the decode step
    through the decode wrapper)."""
    import sys
    monkeypatch.setitem(sys.modules, "flashinfer", _FakeFlashInfer)
    model = random_loaded_model(TINY, torch.float32, "cpu", seed=0).model
    attn = get_attention_backend("flashinfer", workspace_bytes=1024)
    ref = _logits(model, "torch", "cpu", torch.float32, mixed=mixed)
    got = _logits(model, attn, "cpu", torch.float32, mixed=mixed)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-3)
    plans = {key[0]: w.plans for key, w in attn._wrappers.items()}
    assert plans == ({"prefill": 3} if mixed else {"prefill": 2, "decode": 1}), plans


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
def test_flashinfer_graph_replay_reads_the_real_batch_planned_into_the_graph_buffers(monkeypatch):
    """flashinfer decode in CUDA graphs, over the stand-in: the static batch's warm-up forward plans
    the graph wrapper that a capture records; before_decode_replay plans a real batch of 3 into
    that same wrapper's fixed buffers, so what the replay runs attends the real pages (and the
    padding row one key in slot 0)."""
    import sys
    monkeypatch.setitem(sys.modules, "flashinfer", _FakeFlashInfer)
    from sgl_lang.kernels.attention_decode import decode_attention_ref
    attn = get_attention_backend("flashinfer", workspace_bytes=1024)
    hq, hkv, d, g, width = 4, 2, 16, 4, 16
    pool = KVPool(64, 1, hkv, d, torch.float32, "cpu")
    gen = torch.Generator().manual_seed(0)
    k_cache, v_cache = pool.k_buffer[0], pool.v_buffer[0]  # [65, Hkv, D]
    k_cache.copy_(torch.randn(k_cache.shape, generator=gen))
    v_cache.copy_(torch.randn(v_cache.shape, generator=gen))

    def decode_batch(lens, r2t):
        n = len(lens)
        return ForwardBatch(input_ids=torch.zeros(n, dtype=torch.int64), positions=torch.zeros(n, dtype=torch.int64),
                            out_cache_loc=torch.zeros(n, dtype=torch.int64), req_to_token=r2t,
                            seq_lens=torch.tensor(lens), prefix_lens=torch.tensor(lens) - 1,
                            extend_lens=torch.ones(n, dtype=torch.int64), is_decode=True,
                            logits_indices=torch.arange(n))
    static = decode_batch([1] * g, torch.zeros(g, width, dtype=torch.int64))  # the graph runner's
    attn.bind_static_decode(static, torch.ones(g, dtype=torch.int32), hkv)
    attn._attend(torch.randn(g, hq, d, generator=gen), k_cache, v_cache, static)  # warm-up forward
    captured = attn._planned
    lens = [5, 9, 2]
    r2t = torch.zeros(3, width, dtype=torch.int64)
    for i, n in enumerate(lens):
        r2t[i, :n] = torch.randperm(64, generator=gen)[:n] + 1
    attn.before_decode_replay(static, decode_batch(lens, r2t))
    assert attn._planned is captured and attn._planned_fb is static
    q = torch.randn(g, hq, d, generator=gen)
    out = captured.run(q, (k_cache.unsqueeze(1), v_cache.unsqueeze(1)))  # what the replay runs
    ref = decode_attention_ref(q[:3], k_cache, v_cache, r2t, torch.tensor(lens)).view(3, hq, d)
    torch.testing.assert_close(out[:3], ref)
    torch.testing.assert_close(out[3], v_cache[0].repeat_interleave(hq // hkv, 0))  # padding: slot 0


@pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter, which is off when CUDA is present")
def test_triton_backend_warm_up_reaches_every_split_count_of_an_eager_batch(monkeypatch):
    """runtime/warmup.py compiles eager batches' attention at start-up through
    TritonAttentionBackend.warm_up: every decode split count that a mixed step's decodes (1 to
    max_rows - 1 of them) or an eager decode batch can pick, and the extend kernel, are launched;
    only the pool's dummy slot 0 is written."""
    from sgl_lang.runtime.layers import triton_attention as ta
    calls = []  # (kernel, mixed step's decodes (out= given) or not, split count)

    def spy(name, real):
        def call(*a, **kw):
            splits = a[-1] if name == "decode_attention_rope" else a[5] if name == "decode_attention" else None
            calls.append((name, "out" in kw, splits))
            return real(*a, **kw)
        return call
    for name in ("decode_attention", "decode_attention_rope", "extend_attention"):
        monkeypatch.setattr(ta, name, spy(name, getattr(ta, name)))
    pool = KVPool(32, 2, 2, 16, torch.float32, "cpu")
    pool.k_buffer[0][1:].fill_(3.0)
    before = [b.clone() for b in (pool.k_buffer[0], pool.v_buffer[0])]
    attn = ta.TritonAttentionBackend(num_sms=4)  # splits: 8 // (rows * 2 KV heads) rounded down to 2^k
    attn.warm_up(pool, 4, 9, range(5, 9))
    want = {ta.pick_num_kv_splits(n, 2, 4) for n in range(1, 9)}
    assert want == {8, 4, 2, 1}
    assert {s for name, mixed, s in calls if name == "decode_attention" and mixed} == want
    eager = {ta.pick_num_kv_splits(n, 2, 4) for n in range(5, 9)}
    assert {s for name, mixed, s in calls if name == "decode_attention" and not mixed} == eager
    assert {s for name, _, s in calls if name == "decode_attention_rope"} == eager
    assert sum(name == "extend_attention" for name, _, _ in calls) == 1 + len(want)
    for b, old in zip((pool.k_buffer[0], pool.v_buffer[0]), before):
        assert torch.equal(b[1:], old[1:])  # only slot 0 (the dummy slot) is ever written
    assert attn._meta is None
