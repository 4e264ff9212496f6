"""The prefill graph runner's buckets and flag (CPU; its replay is tested on the GPU in
test_prefill_graph_gpu.py)."""
import pytest

from sgl_lang.runtime.config import ConfigError, EngineConfig
from sgl_lang.runtime.prefill_graph_runner import prefill_buckets


def test_buckets_pad_by_under_a_quarter_above_128_and_end_at_the_largest():
    sizes = prefill_buckets(2048)
    assert sizes[:8] == [16, 32, 48, 64, 80, 96, 112, 128]
    assert sizes[-1] == 2048 and sizes == sorted(set(sizes))
    for n in range(1, 2049):
        g = next(s for s in sizes if s >= n)
        assert g - n < 16 or (g - n) * 4 < n
    assert prefill_buckets(300)[-1] == 300 and max(prefill_buckets(300)[:-1]) < 300
    assert prefill_buckets(16) == [16]


def test_flag_rejects_negative_and_zero_turns_it_off():
    with pytest.raises(ConfigError, match="cuda_graph_max_prefill_tokens"):
        EngineConfig(cuda_graph_max_prefill_tokens=-1)
    assert EngineConfig(cuda_graph_max_prefill_tokens=0).cuda_graph_max_prefill_tokens == 0


def test_cpu_engine_has_no_prefill_graphs(engine_fp32):
    assert engine_fp32.runner.prefill_graphs is None
    assert engine_fp32.get_stats()["num_prefill_graph_steps"] == 0
