"""kernels/skinny_gemm.py (decode-sized GEMMs) against F.linear on fresh random inputs.

On CPU the kernel runs under TRITON_INTERPRET=1 (conftest) in float32 (the interpreter has no
bf16); the `gpu` tests run the Llama-3.1-8B decode shapes in bf16, with the configs the engine
picks (decode_config) and the other launch shapes the benchmark sweeps."""
import pytest
import torch
import torch.nn.functional as F

from sgl_lang.kernels.skinny_gemm import GemmConfig, _tma_ok, decode_config, skinny_linear

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# CPU tensors run through Triton's interpreter, which conftest turns on only where there is no GPU
interpreted = pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter (off when CUDA is present)")


def _silu_mul_ref(y: torch.Tensor) -> torch.Tensor:
    gate, up = y.chunk(2, dim=-1)
    return F.silu(gate) * up


@interpreted
@pytest.mark.parametrize("m,cfg", [(5, GemmConfig(64, 128, 1, 3)), (17, GemmConfig(64, 128, 2, 3)),
                                   (33, GemmConfig(128, 256, 4, 2)), (64, GemmConfig(32, 256, 1, 2)),
                                   (5, GemmConfig(64, 128, 1, 3, tma=True)), (40, GemmConfig(64, 128, 4, 3, tma=True))])
def test_skinny_linear_matches_f_linear(m, cfg):
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, 1024, generator=g)
    w = torch.randn(256, 1024, generator=g) * 0.05
    torch.testing.assert_close(skinny_linear(x, w, cfg), F.linear(x, w), atol=1e-4, rtol=1e-4)


@interpreted
def test_skinny_silu_mul_and_float_output():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 512, generator=g)
    w = torch.randn(512, 512, generator=g) * 0.05  # [gate (256 rows); up (256 rows)]
    for tma in (False, True):
        y = skinny_linear(x, w, GemmConfig(64, 128, 1, 3, tma=tma), silu_mul=True)
        assert y.shape == (20, 256)
        torch.testing.assert_close(y, _silu_mul_ref(F.linear(x, w)), atol=1e-4, rtol=1e-4)
    tickets = torch.zeros(8, dtype=torch.int32)
    for _ in range(2):  # split-K tickets are left zero for the next call
        y = skinny_linear(x, w, GemmConfig(128, 128, 2, 3), out_dtype=torch.float32, tickets=tickets)
        torch.testing.assert_close(y, F.linear(x, w), atol=1e-4, rtol=1e-4)
        assert not tickets.any()


def test_bad_inputs_and_configs():
    x = torch.randn(65, 256)
    with pytest.raises(ValueError, match="M <= 64"):
        skinny_linear(x, torch.randn(128, 256), GemmConfig(64, 128, 1, 3))
    with pytest.raises(ValueError, match="split 1"):
        skinny_linear(x[:8], torch.randn(256, 256), GemmConfig(64, 128, 2, 3), silu_mul=True)
    # decode_config: only 17..64 rows, and shapes it has a launch for
    assert decode_config(16, 6144, 4096) is None and decode_config(65, 6144, 4096) is None
    assert decode_config(64, 960, 576) is None  # 135M: widths not multiples of 128
    assert decode_config(64, 2048, 2048) is None  # a narrow o_proj: too few programs
    for n, k, silu in ((6144, 4096, False), (4096, 4096, False), (4096, 14336, False), (128256, 4096, False),
                       (14336, 4096, True)):
        cfg = decode_config(64, n, k, silu)
        assert cfg is not None and cfg.fits(64, n, k), (n, k, silu)


@gpu
@pytest.mark.parametrize("m", [17, 40, 64])
def test_decode_shapes_on_gpu(m):
    torch.manual_seed(m)
    for n, k in ((6144, 4096), (4096, 4096), (4096, 14336), (128256, 4096)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        ref = F.linear(x, w).float()
        tickets = torch.zeros(n // 16, dtype=torch.int32, device="cuda")
        for cfg in (decode_config(m, n, k), GemmConfig(64, 128, 2, 3), GemmConfig(128, 128, 4, 3),
                    GemmConfig(64, 128, 2, 4, tma=True), GemmConfig(128, 64, 1, 6, tma=True)):
            y = skinny_linear(x, w, cfg, out_dtype=torch.float32, tickets=tickets)
            assert not tickets.any()
            err = (y - ref).abs().max().item()
            assert err <= 0.02 * ref.abs().max().item(), (n, k, str(cfg), err)
    w = torch.randn(2 * 14336, 4096, device="cuda", dtype=torch.bfloat16) * 0.02
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    ref = _silu_mul_ref(F.linear(x, w)).float()
    for cfg in (decode_config(m, 14336, 4096, silu_mul=True), GemmConfig(64, 64, 1, 4, tma=True)):
        y = skinny_linear(x, w, cfg, silu_mul=True).float()
        assert (y - ref).abs().max().item() <= 0.02 * ref.abs().max().item(), str(cfg)


@interpreted
def test_runtime_wrappers_pick_launches_and_keep_tickets():
    from sgl_lang.runtime.layers.decode_gemm import decode_linear, decode_silu_mul
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 1024, generator=g)
    w = torch.randn(256, 1024, generator=g) * 0.05  # down-like (k >= 2n): split-K
    owner = torch.nn.Module()
    for _ in range(2):
        torch.testing.assert_close(decode_linear(x, w, owner=owner), F.linear(x, w), atol=1e-4, rtol=1e-4)
    assert owner._gemm_tickets.numel() >= 256 // 64 and not owner._gemm_tickets.any()
    assert decode_linear(x[:16], w) is None  # 16 rows: cuBLAS
    assert decode_linear(x[:, ::2], w[:, ::2]) is None  # rows not contiguous
    wg = torch.randn(512, 512, generator=g) * 0.05
    xs = x[:, :512].contiguous()
    torch.testing.assert_close(decode_silu_mul(xs, wg), _silu_mul_ref(F.linear(xs, wg)), atol=1e-4, rtol=1e-4)


@gpu
@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability()[0] < 9, reason="PDL needs sm90+")
def test_pdl_chain_in_a_graph_matches_plain_launches():
    """A chain where each kernel reads the one before (norm -> GEMM -> norm -> split-K GEMM -> ...),
    captured in a CUDA graph with programmatic dependent launch: bitwise the same
    as without (a kernel that ran ahead of its input would read stale memory)."""
    from sgl_lang.kernels.attention_prologue import rms_norm
    from sgl_lang.kernels.pdl import pdl_launches
    torch.manual_seed(3)
    m, h = 48, 4096
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
          for n, k in ((h, h), (2 * 14336, h), (h, 14336))] * 4
    norm_w = torch.randn(h, device="cuda", dtype=torch.bfloat16)
    tickets = torch.zeros(h // 16, dtype=torch.int32, device="cuda")
    x = torch.randn(m, h, device="cuda", dtype=torch.bfloat16)

    def chain():
        t, res = x, torch.zeros_like(x)
        for i in range(0, len(ws), 3):
            t, res = rms_norm(t, norm_w, 1e-5, res)
            t = skinny_linear(t, ws[i], GemmConfig(64, 128, 1, 5))
            a = skinny_linear(t, ws[i + 1], GemmConfig(64, 64, 1, 4), silu_mul=True)
            t = skinny_linear(a, ws[i + 2], GemmConfig(64, 128, 2, 5), tickets=tickets)
        return t

    outs = {}
    for on in (False, True):
        with pdl_launches(on):
            chain()  # compile
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = chain()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        outs[on] = out.clone()
    assert torch.equal(outs[True], outs[False])
    assert not tickets.any()


@interpreted
def test_tma_launch_falls_back_on_unaligned_inputs():
    """A TMA config on an input whose base is not 16-byte aligned runs the pointer kernel instead
    (a TMA descriptor needs aligned bases and row strides)."""
    g = torch.Generator().manual_seed(3)
    buf = torch.randn(20 * 256 + 1, generator=g)
    x = buf[1:].view(20, 256)  # base 4 bytes past an aligned allocation
    w = torch.randn(128, 256, generator=g) * 0.05
    assert not _tma_ok(x, w) and _tma_ok(x.clone(), w)
    torch.testing.assert_close(skinny_linear(x, w, GemmConfig(64, 128, 1, 3, tma=True)), F.linear(x, w),
                               atol=1e-4, rtol=1e-4)
