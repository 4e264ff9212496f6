"""Decode GEMMs through kernels/skinny_gemm.py (runtime/layers/decode_gemm.py) against cuBLAS, on
the same seeded random weights: an engine forced to the Triton kernel and one forced to cuBLAS
decode a batch of 24 (the kernel's 17..64 rows) and must agree on every request's output-token
log-probabilities and top 5 (bf16 tolerance); "auto" times both at start-up and records it.

The model is the default model's tokenizer with wider layers (hidden 1024, intermediate 4096, 16 / 4
heads of 64), so that qkv, the SiLU-mul MLP and down all have a Triton config."""
import json
import os
import random
import shutil

import pytest

torch = pytest.importorskip("torch")

from tests.runtime.test_overlap_gpu import _config_dir  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    src = _config_dir(tmp_path_factory)
    folder = tmp_path_factory.mktemp("wide-config")
    for name in os.listdir(src):
        if not name.endswith(".safetensors"):
            shutil.copy(os.path.join(src, name), folder)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_key_value_heads=4,
               head_dim=64, num_hidden_layers=4)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(folder)


def _engine(model_dir, decode_gemm, **flags):
    from sgl_lang.runtime.engine import Engine
    return Engine(model_path=model_dir, load_format="dummy", device="cuda", dtype="bfloat16",
                  max_total_tokens=16384, max_running_requests=32, cuda_graph_max_bs=32,
                  skip_warmup=True, decode_gemm=decode_gemm, **flags)


def _decode(engine, prompts):
    outs = engine.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 4},
                           return_logprob=True, top_logprobs_num=5)
    return [(o["meta_info"]["output_token_logprobs"], o["meta_info"]["output_top_logprobs"]) for o in outs]


def test_triton_decode_gemms_match_cublas(model_dir):
    g = random.Random(0)
    prompts = [[g.randrange(10, 40000) for _ in range(g.randrange(20, 90))] for _ in range(24)]
    results = {}
    for mode in ("triton", "cublas"):
        eng = _engine(model_dir, mode)
        model = eng.runner.model
        flagged = [m.decode_gemm for m in model.modules() if hasattr(m, "decode_gemm")]
        assert flagged and all(f == (mode == "triton") for f in flagged), mode
        steps = eng.runner.num_graph_steps
        results[mode] = _decode(eng, prompts)
        assert eng.runner.num_graph_steps > steps  # the decode steps replayed graphs
        eng.shutdown()
    checked = 0
    for (lp_t, top_t), (lp_c, top_c) in zip(results["triton"], results["cublas"]):
        for pos in range(4):
            if pos and lp_t[pos - 1][1] != lp_c[pos - 1][1]:
                break  # greedy paths parted on a near tie: later steps see different inputs
            a = {t: lp for lp, t, _ in top_t[pos]}
            b = {t: lp for lp, t, _ in top_c[pos]}
            shared = set(a) & set(b)
            assert len(shared) >= 4, (pos, sorted(a), sorted(b))
            assert all(abs(a[t] - b[t]) < 0.1 for t in shared), (pos, a, b)
            checked += pos > 0  # positions 1.. were decode steps
    assert checked >= 24  # most requests compared on decode steps


def test_auto_times_both_and_keeps_one(model_dir):
    eng = _engine(model_dir, "auto")
    try:
        choice = eng.runner.decode_gemm
        assert choice is not None and choice.cublas_s > 0 and choice.triton_s > 0
        flagged = {m.decode_gemm for m in eng.runner.model.modules() if hasattr(m, "decode_gemm")}
        assert flagged == {choice.on}
        out = eng.generate(input_ids=[[5, 6, 7]] * 20, sampling_params={"temperature": 0, "max_new_tokens": 3})
        assert all(len(o["output_ids"]) == 3 for o in out)
    finally:
        eng.shutdown()


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="PDL needs sm90+")
def test_pdl_decode_graphs_match_plain_launches(model_dir):
    """Decode graphs captured with programmatic dependent launch give bitwise the same log-probs
    as graphs without it (same kernels; a kernel running ahead of its input would not)."""
    g = random.Random(1)
    prompts = [[g.randrange(10, 40000) for _ in range(g.randrange(20, 90))] for _ in range(24)]
    results = {}
    for disable in (True, False):
        eng = _engine(model_dir, "triton", disable_pdl=disable)
        try:
            assert eng.runner.graph_runner.pdl == (not disable)
            results[disable] = _decode(eng, prompts)
        finally:
            eng.shutdown()
    assert results[True] == results[False]


def test_decode_sized_prefill_logits_compile_nothing_after_start(model_dir):
    """A prefill whose logits have 17..64 rows runs the LM head through the Triton kernel eagerly,
    with plain launches, while the decode graphs were captured with PDL launches: start-up must have
    compiled both kinds (cuda_graph_runner.py's warm-up), so serving such a batch compiles no GEMM."""
    knobs = pytest.importorskip("triton.knobs")
    if not hasattr(knobs.runtime, "jit_cache_hook"):
        pytest.skip("this Triton has no jit_cache_hook")
    eng = _engine(model_dir, "triton")
    compiled = []
    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = lambda *a, **kw: compiled.append(str(kw.get("repr", "?"))) or False
    try:
        g = random.Random(2)
        for n in (20, 24, 40):  # prefill logits rows 20, 24, then 32 and 8 (32 requests run at once)
            prompts = [[g.randrange(10, 40000) for _ in range(g.randrange(20, 40))] for _ in range(n)]
            outs = eng.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 2})
            assert all(len(o["output_ids"]) == 2 for o in outs)
    finally:
        knobs.runtime.jit_cache_hook = saved
        eng.shutdown()
    assert not [c for c in compiled if "skinny_gemm" in c], compiled
