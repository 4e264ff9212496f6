"""The optional flashinfer attention backend through the whole engine, against the triton backend on
the same seeded random weights (the default model's shape): prompt log-probabilities of a batch
(flashinfer's prefill wrapper, chunked and with a cached prefix), and the log-probabilities of
tokens flashinfer decoded in CUDA graphs, rescored by the triton engine's prefill. Skips
without CUDA or without the flashinfer package."""
import random

import pytest

torch = pytest.importorskip("torch")

from tests.runtime.test_overlap_gpu import _config_dir  # noqa: E402


def _flashinfer_imports() -> bool:
    try:
        import flashinfer  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: skip
        return False
    return True


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available() or not _flashinfer_imports(),
                                                  reason="needs a CUDA GPU and the flashinfer package")]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from sgl_lang.runtime.engine import Engine
    common = dict(model_path=_config_dir(tmp_path_factory), load_format="dummy", device="cuda",
                  dtype="bfloat16", max_total_tokens=8192, max_running_requests=8, cuda_graph_max_bs=8,
                  chunked_prefill_size=256, skip_warmup=True)
    fi = Engine(**common, attention_backend="flashinfer")
    tr = Engine(**common, attention_backend="triton")
    yield fi, tr
    fi.shutdown()
    tr.shutdown()


def test_flashinfer_prefill_beside_triton_decode_graphs(engines, tmp_path_factory):
    """prefill_attention_backend="flashinfer": prefills through flashinfer, decodes replay the
    triton decode graphs (no prefill graphs: flashinfer has no static extend); log-probs of a
    prompt and of the decoded tokens (rescored) as the triton engine's."""
    from sgl_lang.runtime.engine import Engine
    _, tr = engines
    eng = Engine(model_path=_config_dir(tmp_path_factory), load_format="dummy", device="cuda", dtype="bfloat16",
                 max_total_tokens=8192, max_running_requests=8, cuda_graph_max_bs=8, chunked_prefill_size=256,
                 skip_warmup=True, prefill_attention_backend="flashinfer")
    try:
        assert eng.runner.graph_runner is not None and eng.runner.prefill_graphs is None
        vocab = eng.loaded.vocab_size
        g = random.Random(3)
        prompt = [g.randrange(10, vocab) for _ in range(400)]
        _close(_prompt_lps(eng, prompt), _prompt_lps(tr, prompt), "400-token prompt")
        out = eng.generate(input_ids=[prompt], sampling_params={"temperature": 0, "max_new_tokens": 10,
                                                               "ignore_eos": True}, return_logprob=True)[0]
        got = [(lp, t) for lp, t, _ in out["meta_info"]["output_token_logprobs"]]
        assert eng.get_stats()["num_graph_steps"] > 0
        _close(torch.tensor([lp for lp, _ in got[1:]]), _prompt_lps(tr, prompt + [t for _, t in got], len(prompt)),
               "decoded tokens")
        eng.check_integrity()
    finally:
        eng.shutdown()


def _prompt_lps(engine, ids, start=0):
    out = engine.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 1},
                          return_logprob=True, logprob_start_len=start)
    return torch.tensor([lp for lp, _, _ in out["meta_info"]["input_token_logprobs"] if lp is not None])


def _close(a, b, what):
    assert a.shape == b.shape and a.numel() > 0, what
    diff = (a - b).abs()
    assert diff.mean() < 0.05 and diff.max() < 0.3, f"{what}: mean {diff.mean():.4f} max {diff.max():.4f}"


def test_flashinfer_prefill_matches_triton(engines):
    fi, tr = engines
    assert fi.runner.attn.name == "flashinfer" and fi.runner.graph_runner is not None
    assert fi.runner.prefill_graphs is None  # (flashinfer prefills run eagerly)
    vocab = fi.loaded.vocab_size
    g = random.Random(0)
    base = [g.randrange(10, vocab) for _ in range(300)]
    for what, ids, start in (("7 tokens", [g.randrange(10, vocab) for _ in range(7)], 0),
                             ("600 tokens, three chunks", [g.randrange(10, vocab) for _ in range(600)], 0),
                             ("300 tokens", base, 0),
                             ("cached 300-token prefix + 41", base + [g.randrange(10, vocab) for _ in range(41)], 300)):
        _close(_prompt_lps(fi, ids, start), _prompt_lps(tr, ids, start), what)
    assert fi.get_stats()["cached_prompt_tokens_total"] > 0, "the prefix was not reused"
    fi.check_integrity()


def test_flashinfer_decode_matches_triton_rescoring(engines):
    """A batch of 5 (decode batches of 5, with sequences finishing) through flashinfer's decode
    wrapper; each generated token's log-probability against the triton engine's prefill of the
    same text."""
    fi, tr = engines
    vocab = fi.loaded.vocab_size
    replays_before = fi.get_stats()["num_graph_steps"]
    g = random.Random(1)
    prompts = [[g.randrange(10, vocab) for _ in range(20 + 30 * i)] for i in range(5)]
    outs = fi.generate(input_ids=prompts, sampling_params=[
        {"temperature": 0, "max_new_tokens": 12 + 2 * i, "ignore_eos": True} for i in range(5)], return_logprob=True)
    for prompt, out in zip(prompts, outs):
        got = [(lp, t) for lp, t, _ in out["meta_info"]["output_token_logprobs"]]
        ids = prompt + [t for _, t in got]
        rescored = _prompt_lps(tr, ids, start=len(prompt))  # logprobs of ids[len(prompt):] given what precedes
        # rescored: the logprobs of ids[len(prompt) + 1:], i.e. of got[1:], the tokens that came out
        # of flashinfer's decode steps (got[0] came from its prefill)
        _close(torch.tensor([lp for lp, _ in got[1:]]), rescored, f"prompt of {len(prompt)}")
    assert fi.get_stats()["num_graph_steps"] > replays_before  # the decodes replayed flashinfer's graphs
    fi.check_integrity()
