"""kernels/streamk_gemm.py (decode-sized GEMMs, stream-K) against F.linear on fresh random inputs.

On CPU the kernel runs under TRITON_INTERPRET=1 (conftest) in float32; the `gpu` test runs the
Llama-3.1-8B decode shapes in bf16 with one program per SM."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sgl_lang.kernels.streamk_gemm import StreamKConfig, streamk_linear

CUDA = torch.cuda.is_available()
interpreted = pytest.mark.skipif(CUDA, reason="CPU tensors need the Triton interpreter (off when CUDA is present)")


def _silu_mul_ref(y: torch.Tensor) -> torch.Tensor:
    gate, up = y.chunk(2, dim=-1)
    return F.silu(gate) * up


@interpreted
@pytest.mark.parametrize("m,cfg", [
    (5, StreamKConfig(64, 128, 3, 3)),   # 4 blocks x 8 units over 3 programs: blocks shared by 2
    (17, StreamKConfig(32, 128, 7, 2)),  # 8 x 8 over 7: ranges of 10 units, every block cut
    (33, StreamKConfig(64, 256, 2, 3)),  # 4 x 4 over 2: whole blocks only (no partials)
    (64, StreamKConfig(64, 128, 12, 2)),  # ranges of 3 units: 3 or 4 programs per block
])
@pytest.mark.parametrize("flat", [False, True])
def test_streamk_matches_f_linear(m, cfg, flat):
    cfg = dataclasses.replace(cfg, flat=flat)
    g = torch.Generator().manual_seed(m)
    n = 256
    x = torch.randn(m, 1024, generator=g)
    w = torch.randn(n, 1024, generator=g) * 0.05
    tickets = torch.zeros(n // cfg.bn, dtype=torch.int32)
    for _ in range(2):  # the tickets are left zero for the next call
        torch.testing.assert_close(streamk_linear(x, w, cfg, tickets=tickets), F.linear(x, w), atol=1e-4, rtol=1e-4)
        assert not tickets.any()


@interpreted
@pytest.mark.parametrize("flat", [False, True])
def test_streamk_silu_mul_and_float_output(flat):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 512, generator=g)
    w = torch.randn(512, 512, generator=g) * 0.05  # [gate (256 rows); up (256 rows)]
    y = streamk_linear(x, w, StreamKConfig(64, 128, 3, 2, flat=flat), silu_mul=True)
    assert y.shape == (20, 256)
    torch.testing.assert_close(y, _silu_mul_ref(F.linear(x, w)), atol=1e-4, rtol=1e-4)
    y = streamk_linear(x, w, StreamKConfig(128, 128, 5, 2, flat=flat), out_dtype=torch.float32)
    torch.testing.assert_close(y, F.linear(x, w), atol=1e-4, rtol=1e-4)


def test_streamk_bad_inputs():
    with pytest.raises(ValueError, match="M <= 64"):
        streamk_linear(torch.randn(65, 256), torch.randn(128, 256), StreamKConfig(64, 128, 4, 2))
    with pytest.raises(ValueError, match="divides"):
        streamk_linear(torch.randn(8, 256), torch.randn(96, 256), StreamKConfig(64, 128, 4, 2))
    with pytest.raises(ValueError, match="tickets"):
        streamk_linear(torch.randn(8, 256), torch.randn(128, 256), StreamKConfig(64, 128, 4, 2),
                       tickets=torch.zeros(1, dtype=torch.int32))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("n,k,silu", [(6144, 4096, False), (4096, 4096, False), (4096, 14336, False),
                                      (14336, 4096, True)])
@pytest.mark.parametrize("flat", [False, True])
def test_streamk_8b_shapes_bf16(n, k, silu, flat):
    g = torch.Generator(device="cuda").manual_seed(n + k)
    x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(2 * n if silu else n, k, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    y = streamk_linear(x, w, StreamKConfig(64, 128 if not silu else 64, sms, 4, flat=flat), silu_mul=silu)
    ref = F.linear(x, w)
    torch.testing.assert_close(y.float(), (_silu_mul_ref(ref) if silu else ref).float(), atol=2e-2, rtol=2e-2)
