"""Prefills replayed from CUDA graphs (runtime/prefill_graph_runner.py) against the same engine
with prefill graphs off, on the same seeded random weights: the log-probabilities of every prompt
token and the first output token's top 5 must agree (bf16 tolerance) for prompts that pad to a
bucket, span several chunks (later chunks with a cached prefix), reuse a cached prefix, or are
prefilled together in one batch.

Uses the default model's config and tokenizer (see test_overlap_gpu.py for where they come from)."""
import random

import pytest

torch = pytest.importorskip("torch")

from tests.runtime.test_overlap_gpu import _config_dir  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CHUNK = 256  # prefill tokens per step: a 600-token prompt runs as 256 + 256 + 88


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from sgl_lang.runtime.engine import Engine
    common = dict(model_path=_config_dir(tmp_path_factory), load_format="dummy", device="cuda",
                  dtype="bfloat16", max_total_tokens=8192, max_running_requests=8, cuda_graph_max_bs=8,
                  chunked_prefill_size=CHUNK, skip_warmup=True)
    graphs = Engine(**common)
    eager = Engine(**common, cuda_graph_max_prefill_tokens=0)
    yield graphs, eager
    graphs.shutdown()
    eager.shutdown()


def _scored(engine, ids, start=0):
    out = engine.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 1},
                          return_logprob=True, logprob_start_len=start, top_logprobs_num=5)
    meta = out["meta_info"]
    prompt_lps = [lp for lp, _, _ in meta["input_token_logprobs"] if lp is not None]
    top = {t: lp for lp, t, _ in meta["output_top_logprobs"][0]}
    return torch.tensor(prompt_lps), top


def _assert_close(a, b, what):
    (lps_a, top_a), (lps_b, top_b) = a, b
    assert lps_a.shape == lps_b.shape, what
    diff = (lps_a - lps_b).abs()
    assert diff.mean() < 0.03 and diff.max() < 0.3, f"{what}: mean {diff.mean():.4f} max {diff.max():.4f}"
    shared = set(top_a) & set(top_b)
    assert len(shared) >= 4, f"{what}: top-5 {sorted(top_a)} vs {sorted(top_b)}"
    assert all(abs(top_a[t] - top_b[t]) < 0.3 for t in shared), what


def test_prefill_graphs_match_eager_prefill(engines):
    graphs, eager = engines
    vocab = graphs.loaded.vocab_size
    g = random.Random(0)
    base = [g.randrange(10, vocab) for _ in range(300)]
    prompts = {  # what -> (prompt, first position with an input logprob)
        "7 tokens (bucket 16)": ([g.randrange(10, vocab) for _ in range(7)], 0),
        "137 tokens (bucket 160)": ([g.randrange(10, vocab) for _ in range(137)], 0),
        "600 tokens (three chunks)": ([g.randrange(10, vocab) for _ in range(600)], 0),
        "300 tokens": (base, 0),
        # logprobs of the new tokens only, so the cached 300 tokens can be reused
        "cached 300-token prefix + 41": (base + [g.randrange(10, vocab) for _ in range(41)], 300),
    }
    before = graphs.get_stats()["num_prefill_graph_steps"]
    for what, (ids, start) in prompts.items():
        _assert_close(_scored(graphs, ids, start), _scored(eager, ids, start), what)
    stats = graphs.get_stats()
    assert stats["num_prefill_graph_steps"] - before >= 1 + 1 + 3 + 2 + 1
    assert eager.get_stats()["num_prefill_graph_steps"] == 0
    assert stats["cached_prompt_tokens_total"] > 0, "the prefix was not reused"
    graphs.check_integrity()


def _batch(num_tokens: list[int], is_decode=False):
    from sgl_lang.runtime.forward_batch import ForwardBatch
    n, bs = sum(num_tokens), len(num_tokens)
    ids = torch.zeros(n, dtype=torch.int64, device="cuda")
    lens = torch.tensor(num_tokens)
    return ForwardBatch(input_ids=ids, positions=ids, out_cache_loc=ids,
                        req_to_token=torch.zeros(bs, 1024, dtype=torch.int64, device="cuda"), seq_lens=lens,
                        prefix_lens=torch.zeros(bs, dtype=torch.int64), extend_lens=lens, is_decode=is_decode,
                        logits_indices=torch.tensor([n - 1], device="cuda"))


def test_batches_up_to_max_seqs_and_the_largest_bucket_replay(engines):
    graphs, _ = engines
    runner = graphs.runner.prefill_graphs
    step = CHUNK + 8  # a full chunk + up to cuda_graph_max_bs decodes riding with it
    assert runner is not None and runner.max_tokens == step and runner.buckets[-2:] == [CHUNK, step]
    assert runner.max_seqs == 8
    assert runner.can_run(_batch([100])) and runner.can_run(_batch([50, 1, 70]))
    assert runner.can_run(_batch([1] * 7 + [CHUNK]))
    assert not runner.can_run(_batch([1] * 9))  # more sequences than captured
    assert not runner.can_run(_batch([1], is_decode=True))
    assert not runner.can_run(_batch([step + 1]))


def test_batched_prefill_graphs_match_eager(engines):
    graphs, eager = engines
    vocab = graphs.loaded.vocab_size
    g = random.Random(1)
    prompts = [[g.randrange(10, vocab) for _ in range(n)] for n in (3, 90, 41, 17)]
    kw = dict(sampling_params={"temperature": 0, "max_new_tokens": 1}, return_logprob=True,
              logprob_start_len=0, top_logprobs_num=5)
    before = graphs.get_stats()["num_prefill_graph_steps"]
    outs = [engine.generate(input_ids=prompts, **kw) for engine in (graphs, eager)]
    for i, (a, b) in enumerate(zip(*outs)):
        scored = []
        for out in (a, b):
            meta = out["meta_info"]
            scored.append((torch.tensor([lp for lp, _, _ in meta["input_token_logprobs"] if lp is not None]),
                           {t: lp for lp, t, _ in meta["output_top_logprobs"][0]}))
        _assert_close(*scored, f"prompt {i} of a batch")
    assert graphs.get_stats()["num_prefill_graph_steps"] > before
    graphs.check_integrity()


def test_decoding_after_graph_prefills(engines):
    graphs, _ = engines
    before = graphs.get_stats()
    params = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 12, "ignore_eos": True}
    prompts = ["The first of two prompts", "and the second one, a bit longer than it", "A third one"]
    outs = graphs.generate(prompts, [params] * 3)
    assert all(o["meta_info"]["completion_tokens"] == 12 for o in outs)
    after = graphs.get_stats()
    assert after["num_graph_steps"] > before["num_graph_steps"]
    graphs.check_integrity()


def test_prefills_mixed_with_decodes_replay(engines):
    """Prompts admitted while others decode: a step's decodes ride on top of its prefill chunk,
    so every step that carries prefill tokens (with or without decodes) fits the largest bucket
    (CHUNK + cuda_graph_max_bs) and replays; only pure decode steps use the decode graph."""
    graphs, _ = engines
    vocab = graphs.loaded.vocab_size
    g = random.Random(2)
    prompts = [[g.randrange(10, vocab) for _ in range(100)] for _ in range(8)]  # 800 tokens: >= 4 chunks
    before = graphs.get_stats()
    steps_before = graphs.num_steps
    outs = graphs.generate(input_ids=prompts, sampling_params={"temperature": 0, "max_new_tokens": 6,
                                                              "ignore_eos": True})
    assert all(o["meta_info"]["completion_tokens"] == 6 for o in outs)
    after = graphs.get_stats()
    steps = graphs.num_steps - steps_before
    prefill_replays = after["num_prefill_graph_steps"] - before["num_prefill_graph_steps"]
    decode_replays = after["num_graph_steps"] - before["num_graph_steps"]
    assert prefill_replays >= 4 and prefill_replays + decode_replays == steps, (prefill_replays, decode_replays, steps)
    graphs.check_integrity()
