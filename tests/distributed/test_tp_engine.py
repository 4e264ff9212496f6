"""The Engine at tp_size 2 on CPU (gloo): the same greedy text and token logprobs as tp_size 1 on
the default model (whose 9 q / 3 KV heads split unevenly over 2 ranks), and a rank killed
mid-generation fails the requests in flight by name, then the engine refuses new work."""
import os
import signal
import threading
import time

import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sgl_lang.runtime.engine import Engine  # noqa: E402
from sgl_lang.runtime.errors import EngineStopped  # noqa: E402

FLAGS = dict(dtype="float32", device="cpu", max_total_tokens=2048, num_threads=1)
PROMPTS = ["The capital of France is", "List three colors:"]
GREEDY = {"temperature": 0, "max_new_tokens": 12}


def _token_logprobs(out: dict) -> list[float]:
    return [lp for lp, _tok, *_ in out["meta_info"]["output_token_logprobs"]]


@pytest.mark.slow
def test_tp2_engine_matches_tp1():
    with Engine(**FLAGS) as eng:
        ref = eng.generate(PROMPTS, GREEDY, return_logprob=True, top_logprobs_num=3)
    with Engine(tp_size=2, **FLAGS) as eng:
        assert eng.tp is not None and eng.runner.pool.num_slots == 2048
        out = eng.generate(PROMPTS, GREEDY, return_logprob=True, top_logprobs_num=3)
        assert eng.loaded.num_kv_heads == 2  # rank 0 holds KV heads 0-1
        workers = list(eng.tp.workers.procs.values())
    for r, o in zip(ref, out):
        assert "error" not in o
        assert o["output_ids"] == r["output_ids"] and o["text"] == r["text"]
        torch.testing.assert_close(torch.tensor(_token_logprobs(o)), torch.tensor(_token_logprobs(r)),
                                   atol=1e-3, rtol=0)
    assert all(p.exitcode == 0 for p in workers)  # STOP ended them cleanly


@pytest.mark.slow
def test_killed_rank_fails_requests_and_stops_engine():
    eng = Engine(tp_size=2, **FLAGS)
    try:
        stream = eng.generate("Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 500,
                                                   "ignore_eos": True}, stream=True)
        next(stream)  # generation is running
        t0 = time.monotonic()
        os.kill(eng.tp.workers.procs[1].pid, signal.SIGKILL)
        last = list(stream)[-1]
        assert time.monotonic() - t0 < 60
        assert last["meta_info"]["finish_reason"]["type"] == "abort"
        assert "tensor-parallel rank 1 died (killed by signal 9)" in last["error"]
        with pytest.raises(EngineStopped, match="rank 1 died"):
            eng.generate("Hello", {"max_new_tokens": 4})
    finally:
        eng.shutdown()


@pytest.mark.timeout(120)
def test_requests_fail_when_the_engine_thread_is_blocked_for_good():
    """On NCCL, a peer that dies inside a collective can leave rank 0's engine thread waiting on
    the GPU for good; the TP watchdog then calls Engine._fail_stuck (TPDriver.on_stuck). Here the
    engine thread is held inside a call_in_loop instead: the stream in flight must still end with
    the error, new work is refused, and shutdown does not wait on the blocked thread."""
    from sgl_lang.runtime.distributed import TPWorkerDied
    eng = Engine(**FLAGS)
    release = threading.Event()  # never set
    try:
        stream = eng.generate("Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 500,
                                                   "ignore_eos": True}, stream=True)
        next(stream)
        threading.Thread(target=eng.call_in_loop, args=(release.wait,), daemon=True).start()
        time.sleep(0.3)  # the engine thread is now inside release.wait
        eng._fail_stuck(TPWorkerDied(1, -9))
        last = list(stream)[-1]  # (the timeout mark fails the test if the stream never ends)
        assert "tensor-parallel rank 1 died (killed by signal 9)" in last["error"]
        with pytest.raises(EngineStopped, match="rank 1 died"):
            eng.generate("Hello", {"max_new_tokens": 4})
        t0 = time.monotonic()
        eng.shutdown()
        assert time.monotonic() - t0 < 5
    finally:
        # the engine thread stays blocked (a daemon), as it would on a GPU that never returns:
        # releasing it after shutdown was seen to abort the process at exit
        eng.shutdown()
