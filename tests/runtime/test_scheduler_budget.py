"""The scheduler's per-step token budget: up to min(max_running_requests, cuda_graph_max_bs)
decodes ride on top of a full prefill chunk (so a 64 x 512-token prefill takes four full chunks,
not a fifth small step); more decodes than that take their share of chunked_prefill_size, so a
mixed step stays within max_step_tokens (the largest prefill graph); with more decodes than half
a chunk beyond that, the prefill still gets half of it."""
import torch

from sgl_lang.runtime.config import EngineConfig
from sgl_lang.runtime.mem.kv_pool import KVPool
from sgl_lang.runtime.request import Req
from sgl_lang.runtime.sampling_params import SamplingParams
from sgl_lang.runtime.scheduler import Scheduler

CHUNK = 64


def _scheduler(graph_bs: int) -> Scheduler:
    config = EngineConfig(chunked_prefill_size=CHUNK, max_running_requests=128, cuda_graph_max_bs=graph_bs,
                          disable_radix_cache=True)
    assert config.max_step_tokens == CHUNK + graph_bs
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


def _step_after_long_prompt(num_decodes: int, graph_bs: int = 16):
    s = _scheduler(graph_bs)
    _decoding(s, num_decodes)
    s.add(Req(rid="long", prompt_ids=list(range(10, 510)), params=SamplingParams(max_new_tokens=4)))
    batch = s.schedule()
    prefill = [n for req, n in zip(batch.reqs, batch.extend_lens) if req.rid == "long"]
    return batch, sum(batch.extend_lens) - sum(prefill), prefill[0]


def test_few_decodes_ride_on_top_of_a_full_chunk():
    batch, decodes, prefill = _step_after_long_prompt(10)
    assert decodes == 10 and prefill == CHUNK
    assert sum(batch.extend_lens) == CHUNK + 10 == len(batch.out_cache_loc)


def test_more_decodes_take_their_share_of_the_chunk():
    batch, decodes, prefill = _step_after_long_prompt(40)
    assert decodes == 40 and prefill == CHUNK + 16 - 40
    assert sum(batch.extend_lens) == CHUNK + 16 == len(batch.out_cache_loc)


def test_prefill_keeps_half_a_chunk_under_many_decodes():
    _, decodes, prefill = _step_after_long_prompt(60)
    assert decodes == 60 and prefill == CHUNK // 2


def test_prefill_alone_takes_the_whole_chunk():
    _, decodes, prefill = _step_after_long_prompt(0)
    assert decodes == 0 and prefill == CHUNK
