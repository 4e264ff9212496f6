"""ModelRunner: ScheduledBatch -> tensors -> forward -> logits -> sampled tokens and logprobs.

Owns the model, the KV pool tensors and the attention backend. Knows nothing about queues or
caching policy: the scheduler tells it which tokens to compute and where their KV goes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import torch

from .config import EngineConfig
from .cuda_graph_runner import CudaGraphRunner
from .forward_batch import ForwardBatch
from .layers.attention import get_attention_backend
from .mem.kv_pool import KVPool
from .models.loader import LoadedModel
from .request import Req
from .penalties import apply_penalties, count_tokens
from .sampler import SamplingBatchInfo, sample, top_logprobs
from .scheduler import ScheduledBatch


@dataclass
class RunnerOutput:
    # per req of the batch (None where the req did not sample this step)
    next_token_ids: list[Optional[int]]
    next_token_logprobs: list[Optional[float]]
    next_top_logprobs: list[Optional[list]]  # [(logprob, token_id), ...] per sampling req
    # per req: input logprobs computed this step, [(logprob, token_id)], and top-k lists
    input_logprobs: list[list] = field(default_factory=list)
    input_top_logprobs: list[list] = field(default_factory=list)


class ModelRunner:
    def __init__(self, config: EngineConfig, loaded: LoadedModel, device: str, dtype: torch.dtype,
                 eos_token_ids: tuple[int, ...]):
        self.config = config
        self.loaded = loaded
        self.model = loaded.model
        self.device = torch.device(device)
        self.dtype = dtype
        self.vocab_size = loaded.vocab_size
        self.eos_token_ids = eos_token_ids
        self._mask_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgl-grammar-mask")
        self.pool = KVPool(self._num_kv_slots(), loaded.num_layers, loaded.num_kv_heads,
                           loaded.head_dim, dtype, self.device)
        name = config.attention_backend
        if name == "auto":
            name = "torch" if self.device.type == "cpu" else "triton"
        self.attn = get_attention_backend(name)
        self.grammar_bitmask: Optional[torch.Tensor] = None
        self.graph_runner: Optional[CudaGraphRunner] = None
        if self.device.type == "cuda" and not config.disable_cuda_graph and name == "triton":
            max_len = min(config.context_length or loaded.max_context_len, loaded.max_context_len)
            self.graph_runner = CudaGraphRunner(
                self.model, self.attn, self.pool, min(config.cuda_graph_max_bs, config.max_running_requests),
                max_len + 1, loaded.num_kv_heads, self.device)

    def _num_kv_slots(self) -> int:
        cfg, m = self.config, self.loaded
        per_slot = KVPool.bytes_per_slot(m.num_layers, m.num_kv_heads, m.head_dim, self.dtype)
        if cfg.max_total_tokens is not None:
            return cfg.max_total_tokens
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used_by_others = total - free
            budget = int(total * cfg.mem_fraction_static) - used_by_others
            if budget <= per_slot * 256:
                raise RuntimeError(f"mem_fraction_static={cfg.mem_fraction_static} leaves no room for "
                                   f"the KV cache ({budget / 2**30:.2f} GiB after weights)")
            return budget // per_slot
        return max(256, cfg.kv_cache_bytes // per_slot)

    # ---- building the batch tensors -------------------------------------------------------
    def _prepare(self, batch: ScheduledBatch) -> tuple[ForwardBatch, list[int], list[list[int]]]:
        """ForwardBatch plus, per req, the logits row used for sampling (-1: none) and the
        rows used for input logprobs."""
        ids, pos, rows_kv = [], [], []
        sample_rows, input_rows = [], []
        logits_idx: list[int] = []
        offset = 0
        for req, prefix_len, slots in zip(batch.reqs, batch.prefix_lens, batch.out_slots):
            n = req.extend_len
            ids.extend(req.tokens(prefix_len, prefix_len + n))
            pos.extend(range(prefix_len, prefix_len + n))
            rows_kv.append(torch.cat([req.kv_indices[:prefix_len], slots]))
            # input logprobs: logits at position p score token p+1, for p in [start, prompt_len-2]
            rows = []
            if req.logprob_start_len >= 0:
                lo = max(prefix_len, req.logprob_start_len)
                hi = min(prefix_len + n, len(req.prompt_ids) - 1)
                rows = list(range(len(logits_idx), len(logits_idx) + max(0, hi - lo)))
                logits_idx.extend(offset + p - prefix_len for p in range(lo, hi))
            input_rows.append(rows)
            if prefix_len + n == req.seq_len and self._wants_sample(req):
                sample_rows.append(len(logits_idx))
                logits_idx.append(offset + n - 1)
            else:
                sample_rows.append(-1)
            offset += n
        seq_lens = torch.tensor([len(r) for r in rows_kv], dtype=torch.int64)
        req_to_token = torch.nn.utils.rnn.pad_sequence(rows_kv, batch_first=True, padding_value=0)
        dev = self.device
        fb = ForwardBatch(
            input_ids=torch.tensor(ids, dtype=torch.int64).to(dev, non_blocking=True),
            positions=torch.tensor(pos, dtype=torch.int64).to(dev, non_blocking=True),
            out_cache_loc=torch.cat(batch.out_slots).to(dev, non_blocking=True),
            req_to_token=req_to_token.to(dev, non_blocking=True),
            seq_lens=seq_lens,
            prefix_lens=torch.tensor(batch.prefix_lens, dtype=torch.int64),
            extend_lens=torch.tensor([r.extend_len for r in batch.reqs], dtype=torch.int64),
            is_decode=all(r.extend_len == 1 for r in batch.reqs),
            logits_indices=torch.tensor(logits_idx, dtype=torch.int64).to(dev, non_blocking=True),
        )
        return fb, sample_rows, input_rows

    @staticmethod
    def _wants_sample(req: Req) -> bool:
        return len(req.output_ids) < req.params.max_new_tokens and not req.is_finished

    # ---- the step -------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: ScheduledBatch) -> RunnerOutput:
        fb, sample_rows, input_rows = self._prepare(batch)
        sampling = [(i, req) for i, req in enumerate(batch.reqs) if sample_rows[i] >= 0]
        # The grammar masks of this step's samples depend only on tokens already accepted, so
        # the matchers fill them on a worker thread while the model runs (torch drops the GIL).
        mask_future = None
        if any(req.grammar is not None for _, req in sampling):
            mask_future = self._mask_pool.submit(self._fill_grammar_bitmask, [r for _, r in sampling])
        if fb.logits_indices.numel() == 0:
            self.model(fb, self.pool, self.attn)  # KV of the new tokens only
            empty = [None] * len(batch.reqs)
            return RunnerOutput(empty, empty, empty, [[] for _ in batch.reqs], [[] for _ in batch.reqs])
        if self.graph_runner is not None and self.graph_runner.can_run(fb):
            # decode: token i is req i, so the graph's logits rows are indexed like hidden rows
            logits = self.graph_runner.replay(fb)[fb.logits_indices]  # [num_logits, vocab] f32
        else:
            hidden = self.model(fb, self.pool, self.attn)  # [num_tokens, hidden]
            logits = self.model.compute_logits(hidden[fb.logits_indices])  # [num_logits, vocab] f32

        next_ids: list[Optional[int]] = [None] * len(batch.reqs)
        next_lp: list[Optional[float]] = [None] * len(batch.reqs)
        next_top: list[Optional[list]] = [None] * len(batch.reqs)
        if sampling:
            rows = torch.tensor([sample_rows[i] for i, _ in sampling], device=logits.device)
            bitmask = mask_future.result() if mask_future is not None else None
            toks, lps, tops = self._sample(logits[rows], [r for _, r in sampling], bitmask)
            for j, (i, _) in enumerate(sampling):
                next_ids[i], next_lp[i], next_top[i] = toks[j], lps[j], tops[j]

        in_lp, in_top = self._input_logprobs(batch, logits, input_rows)
        return RunnerOutput(next_ids, next_lp, next_top, in_lp, in_top)

    def _sample(self, logits: torch.Tensor, reqs: list[Req], bitmask: Optional[torch.Tensor]):
        """logits: [bs, vocab] f32 rows of the sampling requests; bitmask: [bs, W] int32 or None."""
        bs = len(reqs)
        # min_new_tokens: EOS and stop ids are banned until enough tokens were produced
        for j, req in enumerate(reqs):
            if len(req.output_ids) < req.params.min_new_tokens:
                banned = list(req.params.stop_token_ids) + ([] if req.params.ignore_eos else list(self.eos_token_ids))
                if banned:
                    logits[j, banned] = float("-inf")
        info = SamplingBatchInfo.build(
            [r.params for r in reqs], vocab_size=logits.shape[-1], device=logits.device,
            steps=[len(r.output_ids) for r in reqs], vocab_mask=bitmask,
        )
        if info.need_penalties:
            counts = count_tokens([r.output_ids for r in reqs], logits.shape[-1], logits.device)
            logits = apply_penalties(logits, counts, info)
        k = max((r.top_logprobs_num for r in reqs if r.return_logprob), default=0)
        out = sample(logits, info, return_full_logprobs=k > 0)
        toks = out.next_token_ids.tolist()
        lps = out.logprobs.tolist()
        tops: list[Optional[list]] = [None] * bs
        if k > 0:
            vals, idx = top_logprobs(out.full_logprobs, k)  # after penalties and grammar mask
            vals, idx = vals.tolist(), idx.tolist()
            for j, req in enumerate(reqs):
                if req.return_logprob and req.top_logprobs_num > 0:
                    n = req.top_logprobs_num
                    tops[j] = list(zip(vals[j][:n], idx[j][:n]))
        return toks, lps, tops

    def _fill_grammar_bitmask(self, reqs: list[Req]) -> Optional[torch.Tensor]:
        if not any(r.grammar is not None for r in reqs):
            return None
        words = (self.vocab_size + 31) // 32
        mask = torch.full((len(reqs), words), -1, dtype=torch.int32)
        for j, req in enumerate(reqs):
            if req.grammar is not None:
                try:
                    req.grammar.fill_bitmask(mask, j)
                except Exception as e:  # a grammar library failing ends only its own request
                    req.error = f"grammar failed while masking: {type(e).__name__}: {e}"
        return mask.to(self.device, non_blocking=True)

    def _input_logprobs(self, batch: ScheduledBatch, logits: torch.Tensor, input_rows: list[list[int]]):
        in_lp: list[list] = [[] for _ in batch.reqs]
        in_top: list[list] = [[] for _ in batch.reqs]
        if not any(input_rows):
            return in_lp, in_top
        all_rows = [r for rows in input_rows for r in rows]
        lsm = torch.log_softmax(logits[all_rows].float(), dim=-1)  # [n, vocab]
        cursor = 0
        for i, (req, rows) in enumerate(zip(batch.reqs, input_rows)):
            if not rows:
                continue
            first_pos = max(batch.prefix_lens[i], req.logprob_start_len)
            targets = torch.tensor(req.prompt_ids[first_pos + 1:first_pos + 1 + len(rows)],
                                   dtype=torch.int64, device=lsm.device)
            part = lsm[cursor:cursor + len(rows)]
            vals = part.gather(1, targets[:, None])[:, 0].tolist()
            in_lp[i] = list(zip(vals, targets.tolist()))
            if req.top_logprobs_num > 0:
                tv, ti = top_logprobs(part, req.top_logprobs_num)
                in_top[i] = [list(zip(a, b)) for a, b in zip(tv.tolist(), ti.tolist())]
            cursor += len(rows)
        return in_lp, in_top
