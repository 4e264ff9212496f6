"""CudaGraphRunner.replay's host side, on CPU with the graphs stubbed: a decode batch's inputs land
in the first rows of the static buffers (through views made once per batch size), the rows up to
the graph size are padded, and the graph's logits rows come back."""
from __future__ import annotations

import torch

from sgl_lang.runtime.cuda_graph_runner import CudaGraphRunner, capture_batch_sizes
from sgl_lang.runtime.forward_batch import ForwardBatch


class _Graph:
    def __init__(self):
        self.num_replays = 0

    def replay(self):
        self.num_replays += 1


def _runner(max_bs: int = 8, width: int = 16) -> CudaGraphRunner:
    r = CudaGraphRunner.__new__(CudaGraphRunner)  # no capture: buffers only, on CPU
    r.max_bs, r.max_context_len, r.batch_sizes = max_bs, width, capture_batch_sizes(max_bs)
    r.input_ids, r.positions, r.out_cache_loc = (torch.full((max_bs,), 9, dtype=torch.int64) for _ in range(3))
    r.req_to_token = torch.full((max_bs, width), 9, dtype=torch.int64)
    r.seq_lens = torch.full((max_bs,), 9, dtype=torch.int32)
    r._rows = {}
    r.graphs = {g: _Graph() for g in r.batch_sizes}
    r.logits = {g: torch.randn(g, 5) for g in r.batch_sizes}
    r.batches = {g: f"static batch {g}" for g in r.batch_sizes}
    r._before_replay = None
    return r


def _decode_batch(bs: int, width: int, base: int) -> ForwardBatch:
    seq_lens = torch.arange(1, bs + 1) + width - bs - 1
    return ForwardBatch(
        input_ids=torch.arange(bs) + base, positions=seq_lens - 1, out_cache_loc=torch.arange(bs) + 2 * base,
        req_to_token=torch.arange(bs * width).view(bs, width) + base, seq_lens=seq_lens,
        prefix_lens=seq_lens - 1, extend_lens=torch.ones(bs, dtype=torch.int64), is_decode=True,
        logits_indices=torch.arange(bs), seq_lens_device=seq_lens)


def test_replay_fills_the_rows_pads_to_the_graph_and_returns_its_logits():
    r = _runner()
    for step, (bs, width) in enumerate([(3, 5), (3, 6), (8, 4), (3, 7)]):  # the views are reused
        fb = _decode_batch(bs, width, base=100 * (step + 1))
        g = next(s for s in r.batch_sizes if s >= bs)
        before = r.graphs[g].num_replays
        logits = r.replay(fb)
        assert r.graphs[g].num_replays == before + 1
        assert torch.equal(logits, r.logits[g][:bs])
        assert torch.equal(r.input_ids[:bs], fb.input_ids) and torch.equal(r.positions[:bs], fb.positions)
        assert torch.equal(r.out_cache_loc[:bs], fb.out_cache_loc)
        assert torch.equal(r.req_to_token[:bs, :width], fb.req_to_token)
        assert r.seq_lens[:bs].tolist() == fb.seq_lens.tolist()
        # padding rows: token 0 at position 0, KV into slot 0, one key
        assert not r.input_ids[bs:g].any() and not r.positions[bs:g].any() and not r.out_cache_loc[bs:g].any()
        assert not r.req_to_token[bs:g, 0].any() and (r.seq_lens[bs:g] == 1).all()


def test_a_backends_before_replay_hook_sees_the_static_and_the_real_batch_before_the_replay():
    """flashinfer plans each step's pages into its graph's buffers through this hook: it must run
    with graph g's static batch and this step's batch, after the inputs landed, before replay."""
    r = _runner()
    calls = []
    r._before_replay = lambda static, fb: calls.append(
        (static, fb, r.graphs[8].num_replays, r.input_ids[:fb.batch_size].tolist()))
    fb = _decode_batch(5, 6, base=100)
    r.replay(fb)
    assert calls == [("static batch 8", fb, 0, fb.input_ids.tolist())]
    assert r.graphs[8].num_replays == 1
