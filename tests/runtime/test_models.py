"""Model code, weight loading and CPU attention against transformers' reference implementations.

Tests marked slow load the real default model (SmolLM2-135M-Instruct, converted from its GGUF
once into the cache folder; they take about a minute on 2 cores); the rest use tiny random
configs or random tensors and take seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from sgl_lang.runtime.forward_batch import ForwardBatch
from sgl_lang.runtime.layers.attention import UnknownAttentionBackend, get_attention_backend
from sgl_lang.runtime.layers.torch_attention import TorchAttentionBackend
from sgl_lang.runtime.mem.kv_pool import KVPool
from sgl_lang.runtime.models.gguf_converter import unpermute_rope_rows
from sgl_lang.runtime.models.loader import LoadedModel, load_model, load_tokenizer
from sgl_lang.runtime.models.registry import UnsupportedModel, get_model_class

transformers = pytest.importorskip("transformers")


# ---------------------------------------------------------------- a minimal driver (prefill/decode)
@dataclass
class Seq:
    slots: list[int] = field(default_factory=list)  # KV slots of the tokens already in the pool


def make_batch(pool: KVPool, seqs: list[Seq], new_tokens: list[list[int]],
               all_logits: bool = False) -> ForwardBatch:
    """Allocate slots for each sequence's new tokens and build the ForwardBatch."""
    prefix_lens = [len(s.slots) for s in seqs]
    extend_lens = [len(t) for t in new_tokens]
    for s, n in zip(seqs, extend_lens):
        s.slots += pool.alloc(n).tolist()
    seq_lens = [len(s.slots) for s in seqs]
    req_to_token = torch.zeros(len(seqs), max(seq_lens), dtype=torch.int64)
    for i, s in enumerate(seqs):
        req_to_token[i, :len(s.slots)] = torch.tensor(s.slots)
    ends = torch.tensor(extend_lens).cumsum(0)
    total = int(ends[-1])
    return ForwardBatch(
        input_ids=torch.tensor([t for toks in new_tokens for t in toks], dtype=torch.int64),
        positions=torch.cat([torch.arange(p, p + e) for p, e in zip(prefix_lens, extend_lens)]),
        out_cache_loc=torch.cat([torch.tensor(s.slots[p:], dtype=torch.int64)
                                 for s, p in zip(seqs, prefix_lens)]),
        req_to_token=req_to_token,
        seq_lens=torch.tensor(seq_lens),
        prefix_lens=torch.tensor(prefix_lens),
        extend_lens=torch.tensor(extend_lens),
        is_decode=all(e == 1 for e in extend_lens),
        logits_indices=torch.arange(total) if all_logits else ends - 1,
    )


class Driver:
    def __init__(self, lm: LoadedModel, num_slots: int = 1024):
        self.lm = lm
        self.pool = KVPool(num_slots, lm.num_layers, lm.num_kv_heads, lm.head_dim, lm.dtype, lm.device)
        self.attn = get_attention_backend("torch")

    @torch.inference_mode()
    def step(self, seqs: list[Seq], new_tokens: list[list[int]], all_logits: bool = False):
        fb = make_batch(self.pool, seqs, new_tokens, all_logits)
        hidden = self.lm.model(fb, self.pool, self.attn)  # [T, hidden]
        return self.lm.model.compute_logits(hidden[fb.logits_indices])  # [n, vocab] float32

    def greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        seq = Seq()
        logits = self.step([seq], [prompt])
        out = []
        for _ in range(max_new_tokens):
            out.append(int(logits[-1].argmax()))
            logits = self.step([seq], [[out[-1]]])
        return out


# ---------------------------------------------------------------- the real default model
@pytest.fixture(scope="module")
def default_dir():
    from sgl_lang.runtime.default_model import default_model_dir
    return default_model_dir()


@pytest.fixture(scope="module")
def ours_fp32(default_dir):
    return load_model(default_dir, torch.float32, "cpu")


@pytest.fixture(scope="module")
def hf_fp32(default_dir):
    return transformers.LlamaForCausalLM.from_pretrained(default_dir, dtype=torch.float32).eval()


def _chat_ids(tok, question: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": question}],
                                  add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if not isinstance(ids, list) else ids)


@pytest.fixture(scope="module")
def prompt_ids(default_dir):
    return _chat_ids(load_tokenizer(default_dir), "What is the capital of France?")


@pytest.mark.slow
def test_default_model_folder_is_complete(default_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert os.path.isfile(os.path.join(default_dir, name)), name
    tok = load_tokenizer(default_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.convert_tokens_to_ids("<|im_end|>") == 2


@pytest.mark.slow
def test_prefill_logits_match_transformers(ours_fp32, hf_fp32, prompt_ids):
    logits = Driver(ours_fp32).step([Seq()], [prompt_ids], all_logits=True)
    with torch.no_grad():
        ref = hf_fp32(torch.tensor([prompt_ids])).logits[0].float()
    assert logits.shape == ref.shape == (len(prompt_ids), ours_fp32.vocab_size)
    assert (logits - ref).abs().max().item() < 2e-3


@pytest.mark.slow
def test_greedy_20_tokens_match_transformers(ours_fp32, hf_fp32, default_dir):
    tok = load_tokenizer(default_dir)
    prompt = _chat_ids(tok, "Explain photosynthesis in two sentences.")  # a long answer: no early EOS
    ours = Driver(ours_fp32).greedy(prompt, 20)
    with torch.no_grad():
        ref = hf_fp32.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                               pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    assert len(ref) == 20 and ours == ref


@pytest.mark.slow
def test_prefix_cached_extend_matches_full_prefill(ours_fp32, prompt_ids):
    full = Driver(ours_fp32).step([Seq()], [prompt_ids], all_logits=True)
    drv, seq, cut = Driver(ours_fp32), Seq(), len(prompt_ids) // 3
    head = drv.step([seq], [prompt_ids[:cut]], all_logits=True)
    tail = drv.step([seq], [prompt_ids[cut:]], all_logits=True)
    assert (torch.cat([head, tail]) - full).abs().max().item() < 1e-3


@pytest.mark.slow
def test_ragged_batch_matches_single_sequences(ours_fp32, prompt_ids):
    """Two prompts of different lengths prefilled and decoded together == each one alone."""
    prompts = [prompt_ids, prompt_ids[:7]]
    drv = Driver(ours_fp32)
    seqs = [Seq(), Seq()]
    batched = [drv.step(seqs, prompts)]
    batched.append(drv.step(seqs, [[batched[0][0].argmax().item()], [batched[0][1].argmax().item()]]))
    for i, p in enumerate(prompts):
        single_drv, seq = Driver(ours_fp32), Seq()
        first = single_drv.step([seq], [p])[0]
        second = single_drv.step([seq], [[first.argmax().item()]])[0]
        assert (first - batched[0][i]).abs().max().item() < 1e-3
        assert (second - batched[1][i]).abs().max().item() < 1e-3


@pytest.mark.slow
def test_bf16_greedy_answers_paris(default_dir, prompt_ids):
    lm = load_model(default_dir, torch.bfloat16, "cpu")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight  # tied after loading
    out = Driver(lm).greedy(prompt_ids, 12)
    assert "Paris" in load_tokenizer(default_dir).decode(out)


# ---------------------------------------------------------------- tiny random models vs transformers
def _tiny_common(**over):
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               rms_norm_eps=1e-6, tie_word_embeddings=False)
    cfg.update(over)
    return cfg


TINY_MODELS = {
    "qwen3": lambda: transformers.Qwen3Config(**_tiny_common(head_dim=32, rope_theta=10000.0)),
    "qwen2": lambda: transformers.Qwen2Config(**_tiny_common(rope_theta=10000.0)),
    "llama3-rope-tied": lambda: transformers.LlamaConfig(**_tiny_common(
        tie_word_embeddings=True, num_key_value_heads=1,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        rope_theta=500000.0)),
}


def _save_tiny(kind: str, path, shard: bool = False):
    torch.manual_seed(0)
    cfg = TINY_MODELS[kind]()
    hf = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # random biases/norms so that their loading is visible in the output
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(str(path), max_shard_size="100KB" if shard else "5GB")
    return hf


@pytest.mark.parametrize("kind", list(TINY_MODELS))
def test_tiny_model_matches_transformers(kind, tmp_path):
    hf = _save_tiny(kind, tmp_path, shard=(kind == "qwen2"))
    if kind == "qwen2":
        assert os.path.isfile(tmp_path / "model.safetensors.index.json")  # sharded checkpoint
    lm = load_model(str(tmp_path), torch.float32, "cpu")
    assert type(lm.model) is get_model_class(hf.config.architectures)
    prompt = torch.randint(3, 97, (150,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0]  # [150, vocab]
    drv, seq, cut = Driver(lm), Seq(), 100
    ours = torch.cat([drv.step([seq], [prompt[:cut]], all_logits=True),  # prefill, then
                      drv.step([seq], [prompt[cut:140]], all_logits=True)]  # cached-prefix extend
                     + [drv.step([seq], [[t]]) for t in prompt[140:]])  # then decode steps
    assert (ours - ref).abs().max().item() < 1e-4


def test_int8_weight_only_quantization_stays_close(tmp_path):
    from sgl_lang.runtime.layers.quantization import Int8WeightOnlyLinear, quantize_int8_weight_only
    _save_tiny("qwen2", tmp_path)
    ref_lm, lm = (load_model(str(tmp_path), torch.bfloat16, "cpu") for _ in range(2))
    replaced = quantize_int8_weight_only(lm.model)  # qkv, o, gate_up, down per layer + LM head
    assert replaced == 4 * lm.num_layers + 1 == sum(
        isinstance(m, Int8WeightOnlyLinear) for m in lm.model.modules())
    assert lm.model.model.embed_tokens.weight.dtype == torch.bfloat16  # embedding stays float
    prompt = torch.randint(3, 97, (40,), generator=torch.Generator().manual_seed(2)).tolist()
    ref = Driver(ref_lm).step([Seq()], [prompt], all_logits=True)
    out = Driver(lm).step([Seq()], [prompt], all_logits=True)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.05, f"int8 logits drift {rel:.3f} from bf16"


def test_missing_weights_are_named(tmp_path):
    _save_tiny("qwen3", tmp_path)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["model.layers.1.self_attn.k_proj.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match=r"layers\.1\.self_attn\.qkv_proj\.weight\[k\]"):
        load_model(str(tmp_path), torch.float32, "cpu")


def test_unsupported_architecture_lists_supported():
    with pytest.raises(UnsupportedModel, match="Qwen3ForCausalLM"):
        get_model_class(["GPTNeoXForCausalLM"])


# ---------------------------------------------------------------- attention backend
def _attention_reference(q, k_cache, v_cache, fb) -> torch.Tensor:
    """Dense softmax attention, one query at a time. Returns [T, Hq*D]."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    group = num_heads // k_cache.shape[1]
    out, row = [], 0
    for i in range(fb.batch_size):
        prefix, extend = int(fb.prefix_lens[i]), int(fb.extend_lens[i])
        for j in range(extend):
            slots = fb.req_to_token[i, :prefix + j + 1]
            keys = k_cache[slots].repeat_interleave(group, dim=1)  # [S, Hq, D]
            vals = v_cache[slots].repeat_interleave(group, dim=1)
            scores = torch.einsum("hd,shd->hs", q[row].double(), keys.double()) / math.sqrt(head_dim)
            out.append(torch.einsum("hs,shd->hd", scores.softmax(-1), vals.double()).reshape(-1))
            row += 1
    return torch.stack(out).to(q.dtype)


def _random_attention_case(prefix_lens, extend_lens, hq=6, hkv=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    pool = KVPool(256, num_layers=2, num_kv_heads=hkv, head_dim=d, dtype=torch.float32, device="cpu")
    seqs = []
    for p in prefix_lens:  # a cached prefix with random K/V already in the pool (layer 1)
        s = Seq(pool.alloc(p).tolist() if p else [])
        for buf in (pool.k_buffer[1], pool.v_buffer[1]):
            buf[s.slots] = torch.randn(p, hkv, d, generator=g)
        seqs.append(s)
    fb = make_batch(pool, seqs, [[0] * e for e in extend_lens])
    t = sum(extend_lens)
    q, k, v = (torch.randn(t, h, d, generator=g) for h in (hq, hkv, hkv))
    return pool, fb, q, k, v


def test_decode_batched_path_equals_per_sequence_path():
    prefix_lens = [5, 17, 1, 0, 9]  # ragged, including a brand-new sequence
    pool, fb, q, k, v = _random_attention_case(prefix_lens, [1] * 5)
    assert fb.is_decode
    batched = TorchAttentionBackend().forward(q, k, v, 1, fb, pool)
    per_seq_fb = ForwardBatch(**{**fb.__dict__, "is_decode": False})
    per_seq = TorchAttentionBackend().forward(q, k, v, 1, per_seq_fb, pool)
    assert batched.shape == (5, 6 * 16)
    torch.testing.assert_close(batched, per_seq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched, _attention_reference(q, pool.k_buffer[1], pool.v_buffer[1], fb),
                               atol=1e-5, rtol=1e-5)


def test_extend_with_cached_prefix_matches_reference_and_writes_pool():
    pool, fb, q, k, v = _random_attention_case([0, 6, 3], [4, 5, 1])
    out = get_attention_backend("torch").forward(q, k, v, 1, fb, pool)
    torch.testing.assert_close(pool.k_buffer[1][fb.out_cache_loc], k)
    torch.testing.assert_close(pool.v_buffer[1][fb.out_cache_loc], v)
    assert pool.k_buffer[0].abs().sum() == 0  # other layers untouched
    torch.testing.assert_close(out, _attention_reference(q, pool.k_buffer[1], pool.v_buffer[1], fb),
                               atol=1e-5, rtol=1e-5)


def test_unknown_attention_backend_lists_names():
    with pytest.raises(UnknownAttentionBackend, match="torch"):
        get_attention_backend("cudnn")


# ---------------------------------------------------------------- GGUF conversion pieces
def test_unpermute_inverts_llama_cpp_rope_permutation():
    def llama_cpp_permute(w, n_head):  # what llama.cpp's converter does to HF's Q/K rows
        return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))

    w = torch.randn(3 * 8, 5).numpy()
    assert (unpermute_rope_rows(llama_cpp_permute(w, 3), 3) == w).all()


def _convert_with_fake_converter(cache_dir: str, counter: str) -> str:
    """Child process: convert with a slow stand-in converter that records each run."""
    import time
    from sgl_lang.runtime import default_model
    from sgl_lang.runtime.models import gguf_converter

    def fake_convert(self, out_dir):
        with open(counter, "a") as f:
            f.write("run\n")
        time.sleep(0.5)  # long enough for the other process to reach the lock
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json"):
            with open(os.path.join(out_dir, name), "w") as f:
                f.write("{}")

    gguf_converter.GGUFConverter.convert = fake_convert
    os.environ["SGL_LANG_CACHE_DIR"] = cache_dir
    return default_model.converted_gguf_dir("/nonexistent/model.gguf", "tiny")


def test_concurrent_conversion_runs_once_and_publishes_a_complete_folder(tmp_path):
    import multiprocessing
    counter = str(tmp_path / "runs.txt")
    cache = str(tmp_path / "cache")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        dirs = pool.starmap(_convert_with_fake_converter, [(cache, counter)] * 2)
    assert dirs[0] == dirs[1] == os.path.join(cache, "tiny")
    assert open(counter).read().count("run") == 1
    assert sorted(os.listdir(dirs[0])) == sorted(["config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json", "generation_config.json"])
    assert [n for n in os.listdir(cache) if ".tmp-" in n] == []  # no leftovers


def test_mixed_batch_decodes_first_then_extends_matches_reference():
    """The scheduler puts decodes before prefill chunks; the torch backend serves the leading
    single-token rows with its batched path and the rest one by one: same result as the reference."""
    pool, fb, q, k, v = _random_attention_case([7, 2, 11, 0, 4], [1, 1, 1, 6, 3])
    assert not fb.is_decode
    out = TorchAttentionBackend().forward(q, k, v, 1, fb, pool)
    torch.testing.assert_close(out, _attention_reference(q, pool.k_buffer[1], pool.v_buffer[1], fb),
                               atol=1e-5, rtol=1e-5)


def test_int8_linear_uses_int8_for_few_rows_and_float_gemm_for_many():
    from sgl_lang.runtime.layers.quantization import INT8_MAX_ROWS, Int8WeightOnlyLinear
    g = torch.Generator().manual_seed(5)
    w = torch.randn(96, 64, generator=g).to(torch.bfloat16)
    lin = Int8WeightOnlyLinear(w, None)
    few = torch.randn(INT8_MAX_ROWS, 64, generator=g).to(torch.bfloat16)
    many = torch.randn(INT8_MAX_ROWS + 12, 64, generator=g).to(torch.bfloat16)
    exact_few = torch.nn.functional.linear(few, w)
    q_few = lin(few)
    assert not torch.equal(q_few, exact_few)  # the int8 kernel ran (rounding shows)
    assert ((q_few.float() - exact_few.float()).norm() / exact_few.float().norm()) < 0.02
    assert torch.equal(lin(many), torch.nn.functional.linear(many, w))  # the float GEMM ran


def test_prepacked_bf16_linears_give_the_same_logits(tmp_path):
    """pack_linears_for_cpu swaps every linear layer and the LM head for oneDNN-prepacked
    weights; the logits must stay bit-identical to the plain model's."""
    from sgl_lang.runtime.layers.cpu_packed_linear import PackedLinear, can_pack, pack_linears_for_cpu
    if not can_pack(torch.bfloat16, torch.device("cpu")):
        pytest.skip("oneDNN prepacking is not available in this torch build")
    _save_tiny("qwen2", tmp_path)
    ref_lm, lm = (load_model(str(tmp_path), torch.bfloat16, "cpu") for _ in range(2))
    replaced = pack_linears_for_cpu(lm.model)
    assert replaced == 4 * lm.num_layers + 1 == sum(isinstance(m, PackedLinear) for m in lm.model.modules())
    prompt = torch.randint(3, 97, (23,), generator=torch.Generator().manual_seed(3)).tolist()
    ref = Driver(ref_lm).step([Seq()], [prompt], all_logits=True)
    out = Driver(lm).step([Seq()], [prompt], all_logits=True)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert pack_linears_for_cpu(load_model(str(tmp_path), torch.float32, "cpu").model) == 0  # bf16 only
