"""Fast checks of the tensor-parallel building blocks that need no process group: how heads are
split, that each rank's loaders take the right rows/columns of a checkpoint (read lazily from
safetensors), the "dummy" load format, and the config checks."""
import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from sgl_lang.runtime.config import ConfigError, EngineConfig  # noqa: E402
from sgl_lang.runtime.distributed.process_group import rank_device  # noqa: E402
from sgl_lang.runtime.layers.linear import (HeadShard, QKVParallelLinear, RowParallelLinear,  # noqa: E402
                                            WeightShapeError, shard_heads)
from sgl_lang.runtime.models.loader import CheckpointTensor, load_model  # noqa: E402

TINY = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=96, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3, vocab_size=256,
            max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False)


def test_heads_split_by_kv_group():
    # SmolLM2-135M at tp 2: uneven, rank 0 takes the extra KV group
    assert shard_heads(9, 3, 0, 2) == HeadShard(q_start=0, num_q=6, kv_start=0, num_kv=2)
    assert shard_heads(9, 3, 1, 2) == HeadShard(q_start=6, num_q=3, kv_start=2, num_kv=1)
    # Llama-3.1-70B at tp 4: even
    assert shard_heads(64, 8, 3, 4) == HeadShard(q_start=48, num_q=16, kv_start=6, num_kv=2)
    # more ranks than KV heads: each KV head on tp / num_kv ranks
    assert shard_heads(8, 2, 3, 4) == HeadShard(q_start=6, num_q=2, kv_start=1, num_kv=1)
    with pytest.raises(WeightShapeError, match="multiple of num_kv_heads"):
        shard_heads(9, 3, 0, 4)


def _save(tmp_path, tensors: dict) -> dict:
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = str(tmp_path / "w.safetensors")
    save_file(tensors, path)
    f = safe_open(path, framework="pt", device="cpu")
    return {name: CheckpointTensor(f.get_slice(name)) for name in f.keys()}


def test_rank_loaders_read_their_part(tmp_path):
    d = 4  # head_dim; 9 q heads, 3 KV heads, hidden 8
    q, k, v = torch.randn(9 * d, 8), torch.randn(3 * d, 8), torch.randn(3 * d, 8)
    o = torch.randn(8, 9 * d)
    lazy = _save(tmp_path, {"q": q, "k": k, "v": v, "o": o})
    got_q, got_k, got_o = [], [], []
    for rank in range(2):
        qkv = QKVParallelLinear(8, d, 9, 3, tp_rank=rank, tp_size=2)
        for sid in "qkv":
            qkv.weight_loader(qkv.weight, lazy[sid], sid)
        heads = qkv.heads
        row = RowParallelLinear(9 * d, 8, tp_rank=rank, tp_size=2,
                                in_shard=(heads.q_start * d, heads.num_q * d))
        row.weight_loader(row.weight, lazy["o"])
        wq, wk, wv = qkv.weight.split([qkv.q_size, qkv.kv_size, qkv.kv_size])
        torch.testing.assert_close(wv, v[heads.kv_start * d:(heads.kv_start + heads.num_kv) * d])
        got_q.append(wq), got_k.append(wk), got_o.append(row.weight)
    torch.testing.assert_close(torch.cat(got_q), q)
    torch.testing.assert_close(torch.cat(got_k), k)
    torch.testing.assert_close(torch.cat(got_o, dim=1), o)
    with pytest.raises(WeightShapeError, match="expected shape"):
        bad = RowParallelLinear(9 * d, 8, tp_rank=1, tp_size=2, in_shard=(6 * d, 3 * d))
        bad.weight_loader(bad.weight, _save(tmp_path, {"o": torch.randn(8, 4 * d)})["o"])


def test_dummy_load_format_needs_only_config(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]
    shards = [load_model(str(tmp_path), torch.float32, "cpu", tp_rank=r, tp_size=2, load_format="dummy", seed=5)
              for r in range(2)]
    assert [s.num_kv_heads for s in shards] == [2, 1]
    attn0 = shards[0].model.model.layers[0].self_attn
    assert attn0.num_heads == 4 and attn0.o_proj.weight.shape[1] == 4 * attn0.head_dim
    again = load_model(str(tmp_path), torch.float32, "cpu", tp_rank=0, tp_size=2, load_format="dummy", seed=5)
    w0, w1 = shards[0].model.lm_head.weight, again.model.lm_head.weight
    assert torch.equal(w0, w1) and 0.05 < w0.std().item() < 0.25  # seeded, about 1/sqrt(96)
    norm = shards[1].model.model.norm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    with pytest.raises(ValueError, match="load_format must be one of"):
        load_model(str(tmp_path), torch.float32, "cpu", load_format="pt")


def test_config_checks():
    with pytest.raises(ConfigError, match="tp_size must be >= 1"):
        EngineConfig(tp_size=0)
    with pytest.raises(ConfigError, match="load_format must be one of"):
        EngineConfig(load_format="random")
    with pytest.raises(ConfigError, match="needs tp_size 1"):
        EngineConfig(tp_size=2, quantization="int8")
    assert [rank_device("cuda", 1), rank_device("cuda:2", 1), rank_device("cpu", 3)] == ["cuda:1", "cuda:3", "cpu"]
