"""The scheduler's per-step token budget: decodes riding along with a prefill chunk take their
share of chunked_prefill_size, so a mixed step stays within one chunk (and keeps fitting the
prefill graph captured for a full chunk); with more decodes than half a chunk, the prefill still
gets half of it."""
import torch

from sgl_lang.runtime.config import EngineConfig
from sgl_lang.runtime.mem.kv_pool import KVPool
from sgl_lang.runtime.request import Req
from sgl_lang.runtime.sampling_params import SamplingParams
from sgl_lang.runtime.scheduler import Scheduler

CHUNK = 64


def _scheduler() -> Scheduler:
    config = EngineConfig(chunked_prefill_size=CHUNK, max_running_requests=128, disable_radix_cache=True)
    pool = KVPool(4096, num_layers=1, num_kv_heads=1, head_dim=4, dtype=torch.float32, device="cpu")
    return Scheduler(config, pool, max_context_len=4096)


def _decoding(s: Scheduler, n: int) -> None:
    """n short requests, prefilled and holding one sampled token each: decodes from now on."""
    for j in range(n):
        s.add(Req(rid=f"d{j}", prompt_ids=[1, 2, 3], params=SamplingParams(max_new_tokens=100)))
    while s.waiting:
        batch = s.schedule()
        s.commit(batch)
        s.finish_step(batch)
    for req in s.running:
        req.output_ids.append(5)


def _step_after_long_prompt(num_decodes: int):
    s = _scheduler()
    _decoding(s, num_decodes)
    s.add(Req(rid="long", prompt_ids=list(range(10, 510)), params=SamplingParams(max_new_tokens=4)))
    batch = s.schedule()
    prefill = [n for req, n in zip(batch.reqs, batch.extend_lens) if req.rid == "long"]
    return batch, sum(batch.extend_lens) - sum(prefill), prefill[0]


def test_decodes_take_their_share_of_the_chunk():
    batch, decodes, prefill = _step_after_long_prompt(10)
    assert decodes == 10 and prefill == CHUNK - 10
    assert sum(batch.extend_lens) == CHUNK == len(batch.out_cache_loc)


def test_prefill_keeps_half_a_chunk_under_many_decodes():
    _, decodes, prefill = _step_after_long_prompt(50)
    assert decodes == 50 and prefill == CHUNK // 2


def test_prefill_alone_takes_the_whole_chunk():
    _, decodes, prefill = _step_after_long_prompt(0)
    assert decodes == 0 and prefill == CHUNK
