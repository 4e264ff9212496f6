"""A Llama decode batch through the Triton decode GEMMs (layers/decode_gemm.py, kernels/skinny_gemm.py)
against the plain F.linear path, on CPU through Triton's interpreter (float32).

The tiny model's widths give qkv, gate_up + SiLU-mul and down a launch (hidden 256, intermediate
512, 4 / 2 heads of 64); a decode step of 20 rows is inside the kernel's 17..64. The GPU version (bf16, CUDA graphs,
against cuBLAS) is test_decode_gemm_gpu.py."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from sgl_lang.runtime.layers.decode_gemm import set_decode_gemm  # noqa: E402
from sgl_lang.runtime.models.loader import load_model  # noqa: E402
from tests.runtime.test_models import Driver, Seq  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="CPU tensors need the Triton interpreter (off when CUDA is present)")
BS = 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-wide-llama")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                   max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False)
    transformers.AutoModelForCausalLM.from_config(cfg).float().save_pretrained(str(path))
    return str(path)


def _decode_logits(model_dir, on: bool) -> torch.Tensor:
    lm = load_model(model_dir, torch.float32, "cpu")
    if on:
        set_decode_gemm(lm.model, True)
    drv = Driver(lm)
    g = torch.Generator().manual_seed(3)
    seqs = [Seq() for _ in range(BS)]
    prompts = [torch.randint(3, 97, (int(n),), generator=g).tolist() for n in torch.randint(2, 6, (BS,), generator=g)]
    drv.step(seqs, prompts)  # prefill: more than 64 rows, F.linear
    return drv.step(seqs, [[t] for t in torch.randint(3, 97, (BS,), generator=g).tolist()])  # [BS, vocab]


def test_skinny_decode_matches_f_linear(model_dir):
    ref = _decode_logits(model_dir, False)
    skinny = _decode_logits(model_dir, True)
    torch.testing.assert_close(skinny, ref, atol=2e-4, rtol=1e-4)
