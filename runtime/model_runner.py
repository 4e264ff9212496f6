"""ModelRunner: ScheduledBatch -> tensors -> forward -> logits -> sampled tokens and logprobs.

Owns the model, the KV pool tensors and the attention backend. Knows nothing about queues or
caching policy: the scheduler tells it which tokens to compute and where their KV goes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import dataclasses
from typing import Callable, Optional

import torch

from sgl_lang.kernels.pdl import device_supports_pdl

from .config import EngineConfig
from .cuda_graph_runner import CudaGraphRunner, build_decode_graphs
from .prefill_graph_runner import PrefillGraphRunner
from .distributed.process_group import agree_on_min
from .layers.attention import build_attention_backend
from .mem.kv_pool import KVPool
from .mem.req_to_token import ReqToTokenTable
from .models.loader import LoadedModel
from .request import Req
from .penalties import apply_penalties, count_tokens
from .prompt_logprobs import prompt_logprobs
from .sampler import sample, top_logprobs
from .sampling_batch import BatchSamplingParams, SampleFacts, SamplingBatchInfo, sample_facts
from .scheduled_batch import ScheduledBatch
from .batch_builder import build_forward_batch
from .step_output import RunnerOutput, StepHandle

_MAX_CACHED_REQUEST_SETS = 4  # sampling constants kept for this many recent request sets


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
        self.attn = build_attention_backend(config.attention_backend, config.prefill_attention_backend,
                                            config.decode_attention_backend, self.device)
        # with tensor parallelism every rank must hold the same slot count: the smallest one
        self.pool = KVPool(agree_on_min(self._num_kv_slots()), loaded.num_layers, loaded.num_kv_heads,
                           loaded.head_dim, dtype, self.device)
        self.grammar_bitmask: Optional[torch.Tensor] = None
        self._greedy_infos: dict[int, SamplingBatchInfo] = {}  # batch size -> all-greedy info
        self._batch_params: dict[tuple[int, ...], BatchSamplingParams] = {}  # ids of the params
        self._facts: tuple[list[Req], SampleFacts] = ([], sample_facts([]))  # of the latest reqs
        max_len = min(config.context_length or loaded.max_context_len, loaded.max_context_len)
        self.table = ReqToTokenTable(config.max_running_requests + 8, max_len + 1, self.device)
        width = self.table.width  # max_len + 1 rounded up to 16 slots: the graphs' req_to_token rows
        self.batch_sender = None  # tp_size > 1: TPDriver, sends each ForwardBatch to ranks 1..N-1
        self.graph_runner: Optional[CudaGraphRunner] = None
        self.num_graph_steps = 0  # forwards run by replaying a captured decode graph
        self.decode_gemm = None  # DecodeGemmChoice when decode GEMMs were timed cuBLAS vs Triton
        if self.device.type == "cuda" and not config.disable_cuda_graph and hasattr(self.attn, "bind_static_decode"):
            self.graph_runner, self.decode_gemm = build_decode_graphs(
                self.model, self.attn, self.pool, min(config.cuda_graph_max_bs, config.max_running_requests),
                width, loaded.num_kv_heads, self.device, config.decode_gemm,
                eligible=config.tp_size == 1 and dtype in (torch.bfloat16, torch.float16),
                pdl=not config.disable_pdl and device_supports_pdl(self.device))
        self.prefill_graphs: Optional[PrefillGraphRunner] = None
        self.num_prefill_graph_steps = 0  # prefills run by replaying a captured graph
        max_prefill = min(config.cuda_graph_max_prefill_tokens, config.chunk_size, max_len)
        if max_prefill == config.chunk_size:  # a full chunk's graph also takes the decodes riding with it
            max_prefill = config.max_step_tokens
        if (self.graph_runner is not None and config.tp_size == 1 and max_prefill >= 16
                and hasattr(self.attn, "bind_static_extend")):
            self.prefill_graphs = PrefillGraphRunner(
                self.model, self.attn, self.pool, max_prefill, min(config.max_running_requests, 256),
                width, self.device)
            if not self.prefill_graphs.buckets:  # GPU-bound even at 16 tokens: eager
                self.prefill_graphs = None

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
    def _prepare(self, batch: ScheduledBatch, prev: Optional[StepHandle] = None):
        return build_forward_batch(batch, prev, self.table, self.device)

    # ---- the step -------------------------------------------------------------------------
    def forward(self, batch: ScheduledBatch) -> RunnerOutput:
        """Run one step and read its results back (no overlap)."""
        return self.collect(self.launch(batch))

    @torch.inference_mode()
    def release_graphs(self) -> None:
        """Drop the captured decode graphs (their memory, and on NCCL the collectives captured in
        them) once no step is in flight; later decodes run eagerly."""
        self.graph_runner = self.prefill_graphs = None
        if self.device.type == "cuda":
            import gc
            gc.collect()
            torch.cuda.synchronize(self.device)

    def launch(self, batch: ScheduledBatch, prev: Optional[StepHandle] = None,
               complete_prev: Optional[Callable[[], None]] = None) -> StepHandle:
        """Queue the step on the device. Nothing here waits for the device unless the step needs
        host-side results at once (input or top logprobs); then the handle comes back with its
        output already read.

        complete_prev (overlap): reads the previous step back and applies it. It is called after
        this step's forward is queued and before sampling when a request's grammar mask or
        penalties need its token still in flight; a request that step ended, or whose grammar
        then forced more text (jump-forward), does not sample here."""
        fb, sample_rows, input_rows, rows, is_every_row_sampled = self._prepare(batch, prev)
        if self.batch_sender is not None:
            self.batch_sender.send(fb)  # the other ranks run the same forward
        handle = StepHandle(batch, [i for i, row in enumerate(sample_rows) if row >= 0])
        sampling, reqs = handle.sampling, list(handle.sampled_reqs)
        # whether some sample needs more than its logits (a grammar mask, penalty counts,
        # logprobs): most steps none does, and the three tests below are skipped
        has_extras = self._facts_of(reqs).has_extras
        needs_prev = has_extras and complete_prev is not None and any(
            r.num_pending and (r.grammar is not None or r.params.has_penalties) for r in reqs)
        # The grammar masks of this step's samples depend only on tokens already accepted, so
        # the matchers fill them on a worker thread while the model runs (torch drops the GIL).
        mask_future = None
        if has_extras and not needs_prev and any(req.grammar is not None for req in reqs):
            mask_future = self._mask_pool.submit(self._fill_grammar_bitmask, reqs)
        if fb.logits_indices.numel() == 0:
            self._hidden(fb)  # KV of the new tokens only
            handle.output = RunnerOutput.empty(len(batch.reqs))
            return handle
        # everything built from host data is queued before the forward, so no copy waits for it
        info = self._sampling_info(reqs) if reqs else None
        # logits rows are distinct token rows in increasing order, so as many rows as tokens means
        # every row, in order (a decode step where every request samples): no gather needed
        every_token = fb.logits_indices.numel() == fb.num_tokens
        if self.graph_runner is not None and self.graph_runner.can_run(fb):
            # decode: token i is req i, so the graph's logits rows are indexed like hidden rows
            logits = self.graph_runner.replay(fb)  # [num_tokens, vocab] f32
            if not every_token:
                logits = logits[fb.logits_indices]  # [num_logits, vocab]
            self.num_graph_steps += 1
        else:
            hidden = self._hidden(fb)  # [num_tokens, hidden]
            if not every_token:
                hidden = hidden[fb.logits_indices]  # [num_logits, hidden]
            logits = self.model.compute_logits(hidden)  # [num_logits, vocab] f32

        bitmask = None
        if needs_prev:
            # sequence length each sample follows; processing the previous step may change it
            expected = [batch.prefix_lens[i] + batch.reqs[i].extend_len for i in sampling]
            complete_prev()  # host work on the previous step while this forward runs
            keep = [j for j, r in enumerate(reqs) if not r.is_finished and r.seq_len == expected[j]]
            if len(keep) < len(reqs):
                sampling = handle.sampling = [sampling[j] for j in keep]
                reqs = [reqs[j] for j in keep]
                rows = rows.index_select(0, torch.tensor(keep, dtype=torch.int64).to(self.device))
                is_every_row_sampled = False
                info = self._sampling_info(reqs) if reqs else None
            bitmask = self._fill_grammar_bitmask(reqs) if reqs else None
        elif mask_future is not None:
            bitmask = mask_future.result()
        k = max((r.top_logprobs_num for r in reqs if r.return_logprob), default=0) if has_extras else 0
        read_now = k > 0 or any(input_rows)
        if reqs:
            out = self._sample(logits if is_every_row_sampled else logits[rows], reqs, info, bitmask, k)
            handle.next_tokens = out.next_token_ids
        if read_now:
            handle.output = self._read_back(handle, out if reqs else None, reqs, k, logits, input_rows)
        elif not reqs:
            handle.output = RunnerOutput.empty(len(batch.reqs))
        else:  # read back later (collect): async copies to the host
            pinned = self.device.type == "cuda"
            handle.host_tokens = torch.empty(len(reqs), dtype=torch.int64, pin_memory=pinned)
            handle.host_logprobs = torch.empty(len(reqs), dtype=torch.float32, pin_memory=pinned)
            handle.host_tokens.copy_(out.next_token_ids, non_blocking=True)
            handle.host_logprobs.copy_(out.logprobs, non_blocking=True)
            if pinned:
                handle.ready = torch.cuda.Event()
                handle.ready.record()
        return handle

    def _hidden(self, fb) -> torch.Tensor:
        """The model's hidden states [fb.num_tokens, hidden]: a prefill of up to the largest
        bucket replays its captured graph (a view valid until the next replay), anything else
        runs eagerly."""
        if self.prefill_graphs is not None and self.prefill_graphs.can_run(fb):
            self.num_prefill_graph_steps += 1
            return self.prefill_graphs.run(fb)
        return self.model(fb, self.pool, self.attn)

    def collect(self, handle: StepHandle) -> RunnerOutput:
        """Wait for a launched step and return its results per req."""
        if handle.output is not None:
            return handle.output
        if handle.ready is not None:
            handle.ready.synchronize()
        n = len(handle.batch.reqs)
        toks, lps = handle.host_tokens.tolist(), handle.host_logprobs.tolist()
        if len(toks) == n:  # every req sampled (sampling is increasing): rows are reqs
            return RunnerOutput(toks, lps, [None] * n)  # (no input logprobs)
        next_ids: list[Optional[int]] = [None] * n
        next_lp: list[Optional[float]] = [None] * n
        for i, tok, lp in zip(handle.sampling, toks, lps):
            next_ids[i], next_lp[i] = tok, lp
        return RunnerOutput(next_ids, next_lp, [None] * n)  # (no input logprobs)

    def _read_back(self, handle: StepHandle, out, reqs: list[Req], k: int, logits: torch.Tensor,
                   input_rows: list[list[int]]) -> RunnerOutput:
        n = len(handle.batch.reqs)
        next_ids: list[Optional[int]] = [None] * n
        next_lp: list[Optional[float]] = [None] * n
        next_top: list[Optional[list]] = [None] * n
        if out is not None:
            toks, lps = out.next_token_ids.tolist(), out.logprobs.tolist()
            tops: list[Optional[list]] = [None] * len(reqs)
            if k > 0:
                vals, idx = top_logprobs(out.full_logprobs, k)  # after penalties and grammar mask
                vals, idx = vals.tolist(), idx.tolist()
                for j, req in enumerate(reqs):
                    if req.return_logprob and req.top_logprobs_num > 0:
                        m = req.top_logprobs_num
                        tops[j] = list(zip(vals[j][:m], idx[j][:m]))
            for j, i in enumerate(handle.sampling):
                next_ids[i], next_lp[i], next_top[i] = toks[j], lps[j], tops[j]
        in_lp, in_top = prompt_logprobs(handle.batch, logits, input_rows)
        return RunnerOutput(next_ids, next_lp, next_top, in_lp, in_top)

    def _facts_of(self, reqs: list[Req]) -> SampleFacts:
        """sample_facts(reqs), remembered for the latest list of requests (a steady decode
        samples the same requests step after step)."""
        known, facts = self._facts
        if reqs != known:  # (Req compares by identity)
            facts = sample_facts(reqs)
            self._facts = (list(reqs), facts)
        return facts

    def _sampling_info(self, reqs: list[Req]) -> SamplingBatchInfo:
        """Queued to the device without blocking (a blocking copy would wait for the step still
        running there). All-greedy batches reuse one info per batch size; the others reuse their
        request set's constant tensors and only hash and copy the step's noise keys."""
        if self._facts_of(reqs).is_all_plain_greedy:
            info = self._greedy_infos.get(len(reqs))
            if info is None:
                info = self._greedy_infos[len(reqs)] = SamplingBatchInfo.build(
                    [r.params for r in reqs], self.vocab_size, self.device, [r.num_output_tokens for r in reqs])
            return info
        params = [r.params for r in reqs]
        key = tuple(map(id, params))  # the entry holds the params, so these ids stay theirs
        batch_params = self._batch_params.get(key)
        if batch_params is None:
            if len(self._batch_params) >= _MAX_CACHED_REQUEST_SETS:
                del self._batch_params[next(iter(self._batch_params))]  # the oldest
            batch_params = self._batch_params[key] = BatchSamplingParams(
                params, self.vocab_size, self.device)
        return batch_params.at([r.num_output_tokens for r in reqs])

    def _sample(self, logits: torch.Tensor, reqs: list[Req], info: SamplingBatchInfo,
                bitmask: Optional[torch.Tensor], k: int):
        """logits: [bs, vocab] f32 rows of the sampling requests; bitmask: [bs, W] int32 or None."""
        # min_new_tokens: EOS and stop ids are banned until enough tokens were produced
        for j, req in enumerate(reqs if self._facts_of(reqs).has_min_new_tokens else ()):
            if req.params.min_new_tokens and req.num_output_tokens < req.params.min_new_tokens:
                banned = list(req.params.stop_token_ids) + ([] if req.params.ignore_eos else list(self.eos_token_ids))
                if banned:
                    logits[j, banned] = float("-inf")
        if bitmask is not None:
            info = dataclasses.replace(info, vocab_mask=bitmask.to(self.device))
        if info.need_penalties:
            counts = count_tokens([r.output_ids for r in reqs], logits.shape[-1], logits.device)
            logits = apply_penalties(logits, counts, info)
        return sample(logits, info, return_full_logprobs=k > 0)

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

