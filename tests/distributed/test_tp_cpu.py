"""Tensor parallelism on CPU with gloo: a sharded forward of the default model gives the TP=1
logits, and a rank that dies is reported by name instead of hanging rank 0.

The default model has 9 query / 3 KV heads: TP=3 splits them evenly, TP=2 unevenly by KV group
(rank 0: KV heads 0-1 with q heads 0-5; rank 1: KV head 2 with q heads 6-8)."""
import os

import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sgl_lang.runtime.distributed import TPInitError, TPWorkerDied, TPWorkers, init_tp_group  # noqa: E402
from sgl_lang.runtime.distributed._test_targets import exit_at_once  # noqa: E402
from sgl_lang.runtime.distributed.process_group import TPGroup  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("tp_size", [2, 3])
def test_gloo_logits_match_tp1(tp_size):
    from sgl_lang.runtime.default_model import default_model_dir
    from sgl_lang.runtime.distributed.tp_forward import rank_main, sharded_prefill_logits
    model_dir = default_model_dir()
    token_ids = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    ref = sharded_prefill_logits(model_dir, token_ids, TPGroup(0, 1, "none", "cpu"))  # [T, vocab]
    workers = TPWorkers(tp_size, rank_main, (model_dir, token_ids)).start()
    try:
        out = rank_main(0, tp_size, workers.init_method, model_dir, token_ids)
    finally:
        workers.shutdown()
    assert out.shape == ref.shape == (len(token_ids), 49152)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=1e-3)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))  # same greedy tokens at every position


def test_dead_rank_is_reported():
    workers = TPWorkers(2, exit_at_once, (7,)).start()
    try:
        with pytest.raises(TPWorkerDied, match=r"rank 1 died \(exit code 7\).*must be shut down"):
            workers.check_alive(wait_s=120)
        with pytest.raises(TPInitError, match=r"rank 0/2: could not join the gloo group"):
            init_tp_group(0, 2, workers.init_method, timeout_s=2)
    finally:
        workers.shutdown()


def test_bad_rank_is_refused():
    with pytest.raises(TPInitError, match="expected 0 <= rank < size"):
        init_tp_group(2, 2, "tcp://127.0.0.1:1")
