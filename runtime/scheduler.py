"""Scheduler: admission, chunked prefill, KV slot accounting, retract and abort.

It decides which requests run in the next step and how many tokens each one extends; it owns the
waiting queue, the running list, and the bookkeeping of KV slots between the KVPool (memory) and
the RadixCache (indices). It never runs the model and never reads logits.

Each step builds one batch that mixes decode requests (1 new token each) with prefill chunks
(up to the chunked-prefill token budget), so long prompts never stall running decodes.
"""
from __future__ import annotations

import collections
from typing import Optional

import torch

from .config import EngineConfig
from .mem.kv_pool import KVPool
from .mem.radix_cache import RadixCache
from .request import Req, ReqStatus
from .scheduled_batch import ScheduledBatch

_LPM_MAX_QUEUE = 128  # beyond this many waiting requests, prefix matching for ordering costs too much


class Scheduler:
    def __init__(self, config: EngineConfig, pool: KVPool, max_context_len: int, table=None):
        self.config = config
        self.pool = pool
        self.table = table  # the runner's ReqToTokenTable: rows are given back on release
        self.cache = RadixCache(disable=config.disable_radix_cache)
        self.max_context_len = max_context_len
        self.waiting: collections.deque[Req] = collections.deque()
        self.running: list[Req] = []
        self.num_retractions = 0
        self.dropped: list[Req] = []  # finished outside a batch (pool too small); the engine emits them
        # statistics
        self.num_prompt_tokens = 0
        self.num_cached_prompt_tokens = 0

    # ---- queue management -------------------------------------------------------------
    def add(self, req: Req) -> None:
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, rid: str) -> Optional[Req]:
        """Remove a waiting or running request, free its slots; returns it (finished) or None."""
        for queue, cache in ((self.waiting, False), (self.running, True)):
            for req in queue:
                if req.rid == rid:
                    queue.remove(req)
                    self._release(req, cache=cache)
                    req.finish({"type": "abort", "message": "aborted"})
                    return req
        return None

    # ---- the step -----------------------------------------------------------------------
    def schedule(self) -> Optional[ScheduledBatch]:
        reqs, prefix_lens, extend_lens = [], [], []
        chunks: list[torch.Tensor] = []  # KV slots of the new tokens, in batch order
        budget = self.config.chunk_size

        def take(req: Req, n: int) -> bool:
            got = self._alloc(n)
            if got is None:
                return False
            req.extend_len = n
            reqs.append(req)
            prefix_lens.append(req.kv_len)
            extend_lens.append(n)
            chunks.append(got)
            return True

        # 1. running requests: decodes first (1 token each), then unfinished prefill chunks
        decodes, prefills = [], []
        max_context_len = self.max_context_len
        for req in self.running:
            # (inlined, as this runs for every request and step: num_output_tokens, seq_len,
            # num_uncomputed)
            num_output = len(req.output_ids) + req.num_pending
            seq_len = len(req.prompt_ids) + num_output
            n = seq_len - req.kv_len
            if n > 1:
                prefills.append(req)
            elif n == 1 and not (req.num_pending > 0 and (num_output >= req.params.max_new_tokens
                                                          or seq_len >= max_context_len)):
                # (with overlap, a req whose token in flight ends it by length decodes no further)
                decodes.append(req)
        # A step's tokens stay within max_step_tokens (the largest prefill graph): up to
        # min(max_running_requests, cuda_graph_max_bs) decodes ride on top of a full chunk, more
        # take their share of it, though prefills keep at least half of the chunk.
        budget = max(min(budget, self.config.max_step_tokens - len(decodes)), budget // 2)
        # one allocation for all decodes when they fit (the common case): no retraction is needed
        block = self.pool.alloc(len(decodes)) if decodes else None
        if block is not None:
            for req in decodes:
                req.extend_len = 1
            prefix_lens.extend([req.kv_len for req in decodes])
            reqs.extend(decodes)
            extend_lens.extend([1] * len(decodes))
            chunks.append(block)
            decodes = []
        for req in decodes:
            if req.status is not ReqStatus.RUNNING:
                continue  # retracted a moment ago to make room
            while not take(req, 1):
                if self._retract_one(scheduled=reqs, current=req):
                    continue
                if len(self.running) == 1:  # alone and still no room: the pool is too small
                    self.running.remove(req)
                    self._release(req)
                    req.finish({"type": "length", "length": len(req.output_ids),
                                "message": f"KV pool ({self.pool.num_slots} slots) is full"})
                    self.dropped.append(req)
                    break
                self._retract(req)  # everyone else already runs this step: wait for the next
                break
        for req in prefills:
            if req.status is not ReqStatus.RUNNING:
                continue
            n = min(req.num_uncomputed, budget)
            if n <= 0 or not take(req, n):
                continue
            budget -= n

        # 2. admit waiting requests, longest cached prefix first
        for req in self._admission_order():
            if len(self.running) >= self.config.max_running_requests or budget <= 0:
                break
            if req.grammar_future is not None:
                continue  # grammar still compiling off the critical path (the engine resolves it)
            self._match(req)
            n = min(req.num_uncomputed, budget)
            reserve = len(self.running)  # keep one slot per running decode for the next step
            if self.pool.num_free + self.cache.evictable_size < n + reserve or not take(req, n):
                self._unmatch(req)
                break
            budget -= n
            self.waiting.remove(req)
            req.status = ReqStatus.RUNNING
            self.running.append(req)
            if req.num_retractions == 0:
                self.num_prompt_tokens += len(req.prompt_ids)
                self.num_cached_prompt_tokens += req.cached_len

        if not reqs:
            return None
        out_cache_loc = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        return ScheduledBatch(reqs, prefix_lens, extend_lens, out_cache_loc)

    def commit(self, batch: ScheduledBatch) -> None:
        """After the forward: the new tokens now have KV in their slots."""
        slots = batch.out_cache_loc.tolist()
        if len(slots) == len(batch.reqs):  # every req extended one token (decode)
            for req, slot in zip(batch.reqs, slots):
                req.kv_slots.append(slot)  # append_kv([slot])
                req.kv_len += 1
                req.extend_len = 0
            return
        start = 0
        for req, n in zip(batch.reqs, batch.extend_lens):
            req.append_kv(slots[start:start + n])
            req.kv_len += n
            req.extend_len = 0
            start += n

    def finish_step(self, batch: ScheduledBatch) -> list[Req]:
        """Release finished requests, share finished prefill chunks; returns the finished ones."""
        done = []
        for req in batch.reqs:
            if req.status is ReqStatus.FINISHED:
                continue  # (overlap) it finished while this step ran and was released then
            if req.finish_reason is not None:  # req.is_finished
                if req in self.running:
                    self.running.remove(req)
                elif req in self.waiting:  # (overlap) retracted while its last token was in flight
                    self.waiting.remove(req)
                self._release(req)
                req.status = ReqStatus.FINISHED
                done.append(req)
            # num_uncomputed > 1 (inlined): a chunk finished, let others share it now
            elif (len(req.prompt_ids) + len(req.output_ids) + req.num_pending - req.kv_len > 1
                  and req.kv_len > req.locked_len):
                self._cache_unfinished(req)
        return done

    # ---- KV bookkeeping -------------------------------------------------------------------
    def _alloc(self, n: int) -> Optional[torch.Tensor]:
        got = self.pool.alloc(n)
        if got is None and self.cache.evictable_size > 0:
            self.pool.free(self.cache.evict(n - self.pool.num_free))
            got = self.pool.alloc(n)
        return got

    def _match_cap(self, req: Req) -> int:
        cap = req.seq_len - 1  # at least one token must be computed to get logits
        if req.logprob_start_len >= 0:
            cap = min(cap, req.logprob_start_len)  # input logprobs need those positions computed
        return max(cap, 0)

    def _match(self, req: Req) -> None:
        m = self.cache.match_prefix(req.fill_ids[:self._match_cap(req)])
        req.kv_indices = m.indices.clone()
        req.kv_len = req.locked_len = len(m.indices)
        if req.num_retractions == 0:
            req.cached_len = req.kv_len
        req.last_node = m.last_node
        self.cache.inc_lock(m.last_node)

    def _unmatch(self, req: Req) -> None:
        self.cache.dec_lock(req.last_node)
        req.last_node = None
        req.kv_indices = torch.empty(0, dtype=torch.int64)
        req.kv_len = req.locked_len = 0

    def _cache_unfinished(self, req: Req) -> None:
        """Hand req's computed KV to the tree; keep it locked for req."""
        if self.cache.disable:
            return
        ids = req.fill_ids[:req.kv_len]
        kv_indices = req.kv_indices[:req.kv_len]
        num_dup = self.cache.insert(ids, kv_indices)
        if num_dup > req.locked_len:
            self.pool.free(kv_indices[req.locked_len:num_dup])
        m = self.cache.match_prefix(ids)
        assert len(m.indices) == req.kv_len, "radix cache lost tokens just inserted"
        self.cache.inc_lock(m.last_node)
        self.cache.dec_lock(req.last_node)
        req.kv_indices = m.indices.clone()
        req.last_node = m.last_node
        req.locked_len = req.kv_len

    def _release(self, req: Req, cache: bool = True) -> None:
        """Give req's slots back: computed KV goes to the tree (or the pool), the lock is dropped."""
        if req.last_node is None:
            return
        kv_indices = req.kv_indices[:req.kv_len]
        if cache and not self.cache.disable and req.kv_len > 0:
            num_dup = self.cache.insert(req.fill_ids[:req.kv_len], kv_indices)
            if num_dup > req.locked_len:
                self.pool.free(kv_indices[req.locked_len:num_dup])
        else:
            self.pool.free(kv_indices[req.locked_len:])  # the slots req owns
        self.cache.dec_lock(req.last_node)
        req.last_node = None
        req.kv_indices = torch.empty(0, dtype=torch.int64)
        req.kv_len = req.locked_len = 0
        if req.table_row >= 0 and self.table is not None:
            self.table.free_row(req.table_row)
            req.table_row = -1

    def _retract_one(self, scheduled: list[Req], current: Req) -> bool:
        """Preempt the most recently admitted running request not yet in this step's batch;
        its KV stays in the cache (evictable), so re-admission usually recomputes little."""
        for req in reversed(self.running):
            if req is not current and not any(req is r for r in scheduled):
                self._retract(req)
                return True
        return False

    def _retract(self, req: Req) -> None:
        self.running.remove(req)
        self._release(req)
        req.status = ReqStatus.WAITING
        req.num_retractions += 1
        self.num_retractions += 1
        self.waiting.appendleft(req)

    def _admission_order(self) -> list[Req]:
        if self.config.schedule_policy == "fcfs" or len(self.waiting) > _LPM_MAX_QUEUE \
                or self.cache.disable:
            return list(self.waiting)
        scored = []
        for i, req in enumerate(self.waiting):
            # retracted requests go first: they already waited
            m = self.cache.match_prefix(req.fill_ids[:self._match_cap(req)])
            scored.append((-(req.num_retractions > 0), -len(m.indices), i, req))
        scored.sort(key=lambda t: t[:3])
        return [t[3] for t in scored]

    # ---- cache control & stats ----------------------------------------------------------------
    def flush_cache(self) -> bool:
        if self.running or self.waiting:
            return False
        self.pool.free(self.cache.reset())
        return True

    def num_in_use(self) -> int:
        """Slots owned by running requests and not (yet) by the tree."""
        return sum(r.kv_len - r.locked_len for r in self.running)

    def check_integrity(self) -> None:
        self.cache.check_integrity(self.pool.num_free, self.num_in_use(), self.pool.num_slots)
