"""Program-level benchmarks (benchmarks/programs): pure helpers without a model, then every
workload run with 2 programs on the REAL default model (marked slow: about a minute or two on the
2-core CPU box; run with `pytest tests/benchmarks`)."""
from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.programs import WORKLOAD_NAMES, load_workload  # noqa: E402
from benchmarks.programs.metrics import RunMetrics, TokenCounts, percentile  # noqa: E402
from benchmarks.programs.runner import BackendSpec, BenchmarkSetupError, run_workload  # noqa: E402


# ---- no model --------------------------------------------------------------------------------

def test_percentile_interpolates_and_handles_empty():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_pooled_metrics_sum_work_and_concatenate_latencies():
    a = RunMetrics("w", "cache on", 2, 2, 0, 4.0, TokenCounts(100, 90, 10, 1), [1.0, 2.0])
    b = RunMetrics("w", "cache on", 2, 1, 1, 1.0, TokenCounts(100, 50, 6, 0), [3.0], "Boom: x")
    p = RunMetrics.pooled([a, b])
    assert (p.num_programs, p.num_valid, p.num_errors) == (4, 3, 1)
    assert p.programs_per_s == pytest.approx(3 / 5.0)  # the failed program does not count
    assert p.cache_hit_rate == pytest.approx(140 / 200)
    assert p.tokens == TokenCounts(200, 140, 16, 1)
    assert sorted(p.latencies_s) == [1.0, 2.0, 3.0] and p.first_error == "Boom: x"
    assert len(p.row()) == 12


def test_usage_only_counters_report_no_hit_rate():
    usage = TokenCounts(50, 0, 5, 0, has_cache_counts=False) - TokenCounts(10, 0, 1, 0, has_cache_counts=False)
    r = RunMetrics("w", "openai @ x", 1, 1, 0, 1.0, usage, [1.0])
    assert r.cache_hit_rate is None and r.total_tokens_per_s == pytest.approx(44.0)
    assert r.row()[10] == "n/a" and r.row()[11] == "n/a"


@pytest.mark.parametrize("name", WORKLOAD_NAMES)
def test_data_is_deterministic_and_seed_dependent(name):
    w = load_workload(name)
    first, again, other = w.make_batch(3, 0), w.make_batch(3, 0), w.make_batch(3, 1)
    assert len(first) == 3
    dump = lambda b: json.dumps(b, sort_keys=True)  # noqa: E731
    assert dump(first) == dump(again)
    assert dump(first) != dump(other)
    assert all(set(item) <= set(w.program.arg_names) for item in first)


def test_backend_spec_rejects_remote_without_url():
    with pytest.raises(BenchmarkSetupError, match="needs --url"):
        BackendSpec("endpoint")
    with pytest.raises(BenchmarkSetupError, match="backend must be one of"):
        BackendSpec("tgi", url="http://x")


def test_plots_and_doc_section_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.programs.doc import section_body
    from benchmarks.programs.plots import plot_hit_rates, plot_latency_cdfs, plot_throughput
    runs = [RunMetrics("few_shot", "cache on", 4, 4, 0, 2.0, TokenCounts(1000, 950, 4, 0), [0.5, 1.0, 1.5, 2.0]),
            RunMetrics("few_shot", "cache off", 4, 4, 0, 8.0, TokenCounts(1000, 0, 4, 0), [2.0, 4.0, 6.0, 8.0])]
    paths = [f(runs, str(tmp_path / f"{i}.png")) for i, f in
             enumerate((plot_throughput, plot_hit_rates, plot_latency_cdfs))]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    class Args:
        parallel, scale, configs = 8, 1.0, "cache on,cache off"
    pairs = [["few_shot", 1, "2.000", "0.500", "4.00x", "95.0%"]]
    body = section_body(Args, [load_workload("few_shot")], runs, pairs, 60.0, ["0.png"])
    assert "4.00x" in body and "**met**" in body and "images/0.png" in body and "llama" in body


# ---- the real default model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime():
    import sgl_lang as sgl
    rt = sgl.Runtime()
    yield rt
    rt.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKLOAD_NAMES)
def test_workload_runs_on_default_model(runtime, name):
    w = load_workload(name)
    r = run_workload(w, runtime, num_requests=2, parallel=2, config="cache on", progress_bar=False)
    assert r.num_errors == 0, r.first_error
    assert r.num_programs == 2 and r.num_valid == 2, f"{name}: {r.num_valid}/2 outputs well-formed"
    assert len(r.latencies_s) == 2 and all(0 < x <= r.wall_s + 1e-6 for x in r.latencies_s)
    assert r.programs_per_s > 0 and r.tokens is not None
    assert r.tokens.prompt_tokens > 0 and 0.0 <= r.cache_hit_rate <= 1.0
    if not w.uses_choices or name == "react_agent":
        assert r.tokens.completion_tokens > 0
    if name in ("few_shot", "tree_of_thought", "select_endings", "react_agent"):
        assert r.cache_hit_rate > 0.3, f"{name}: shared prefix not reused (hit rate {r.cache_hit_rate:.1%})"


@pytest.mark.slow
def test_cache_off_ablation_reports_no_hits():
    import sgl_lang as sgl
    rt = sgl.Runtime(disable_radix_cache=True)
    try:
        r = run_workload(load_workload("few_shot"), rt, num_requests=2, parallel=2, config="cache off",
                         progress_bar=False)
    finally:
        rt.shutdown()
    assert r.num_errors == 0 and r.num_valid == 2
    assert r.cache_hit_rate == 0.0
