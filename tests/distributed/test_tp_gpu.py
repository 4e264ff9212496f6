"""Tensor parallelism on 2 GPUs (NCCL, CUDA graphs per rank): a tiny random checkpoint whose 6 q /
3 KV heads split unevenly gives the same greedy tokens and logprobs at tp 2 as at tp 1 (fp32), and
a rank killed mid-generation fails the request by name. Skipped without 2 GPUs."""
import os
import signal
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.gpu_models import SHAPES, NumberTokenizer, hf_config  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs 2 CUDA GPUs")]
TINY = dict(SHAPES["tiny"], hidden_size=96, num_attention_heads=6, num_key_value_heads=3)
FLAGS = dict(device="cuda", dtype="float32", max_total_tokens=4096, max_running_requests=8, cuda_graph_max_bs=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlamaForCausalLM
    folder = tmp_path_factory.mktemp("tiny-tp")
    torch.manual_seed(0)
    LlamaForCausalLM(hf_config(TINY)).save_pretrained(folder)
    return str(folder)


def _engine(checkpoint, **flags):
    from sgl_lang.runtime.engine import Engine
    from sgl_lang.runtime.models import loader
    saved = loader.load_tokenizer
    loader.load_tokenizer = lambda _dir: NumberTokenizer()
    try:
        return Engine(model_path=checkpoint, **FLAGS, **flags)
    finally:
        loader.load_tokenizer = saved


def test_tp2_nccl_matches_tp1(checkpoint):
    prompts = [[5, 17, 300, 42], [9, 8, 7, 6, 5, 4, 3], [100]]
    params = {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}
    outs = {}
    for tp in (1, 2):
        eng = _engine(checkpoint, tp_size=tp)
        try:
            if tp == 2:  # rank 0 holds KV heads 0-1 and replays CUDA graphs with NCCL inside
                assert eng.runner.graph_runner is not None and eng.loaded.num_kv_heads == 2
            outs[tp] = eng.generate(input_ids=prompts, sampling_params=params, return_logprob=True)
        finally:
            eng.shutdown()
    for a, b in zip(outs[1], outs[2]):
        assert "error" not in b and a["output_ids"] == b["output_ids"]
        la = torch.tensor([x[0] for x in a["meta_info"]["output_token_logprobs"]])
        lb = torch.tensor([x[0] for x in b["meta_info"]["output_token_logprobs"]])
        torch.testing.assert_close(lb, la, atol=1e-3, rtol=0)


def test_killed_rank_is_reported_on_nccl(checkpoint):
    eng = _engine(checkpoint, tp_size=2)
    try:
        stream = eng.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 2000, "ignore_eos": True},
                              stream=True)
        next(stream)
        t0 = time.monotonic()
        os.kill(eng.tp.workers.procs[1].pid, signal.SIGKILL)
        last = list(stream)[-1]
        assert time.monotonic() - t0 < 60
        assert "tensor-parallel rank 1 died" in last["error"]
    finally:
        eng.shutdown()
