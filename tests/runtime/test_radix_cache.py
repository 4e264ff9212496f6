"""RadixCache: unit tests, plus a hypothesis state machine that drives the cache the way the
scheduler does (real KVPool, lock while running, insert on finish, evict on memory pressure)
and checks every invariant after every step."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, invariant,
                                 precondition, rule)

from sgl_lang.runtime.mem.kv_pool import KVPool
from sgl_lang.runtime.mem.radix_cache import (CacheIntegrityError, RadixCache,
                                              common_prefix_len)


def slots(*xs):
    return torch.tensor(xs, dtype=torch.int64)


def test_common_prefix_len_matches_naive_on_long_keys():
    rng = random.Random()
    for _ in range(200):
        n = rng.randrange(0, 300)
        a = [rng.randrange(3) for _ in range(n)]
        cut = rng.randrange(0, n + 1)
        b = a[cut:][:rng.randrange(0, n + 1)]
        if b and rng.random() < 0.5:
            b[rng.randrange(len(b))] += 1  # plant a mismatch somewhere
        naive = 0
        while naive < min(len(a) - cut, len(b)) and a[cut + naive] == b[naive]:
            naive += 1
        assert common_prefix_len(a, cut, b) == naive


def test_insert_then_match_returns_cached_slots_and_splits():
    cache = RadixCache()
    assert cache.insert([1, 2, 3, 4], slots(10, 11, 12, 13)) == 0
    m = cache.match_prefix([1, 2, 3, 4, 5])
    assert m.indices.tolist() == [10, 11, 12, 13] and m.prefix_len == 4
    # A match ending inside an edge splits it; last_node covers exactly the matched prefix.
    m = cache.match_prefix([1, 2, 9])
    assert m.indices.tolist() == [10, 11]
    assert m.last_node.key == [1, 2] and list(m.last_node.children) == [3]
    assert cache.total_size() == 4
    cache.check_integrity(num_free=0, num_in_use_outside_cache=0, total=4)


def test_insert_returns_already_cached_length_and_adopts_only_the_rest():
    cache = RadixCache()
    cache.insert([1, 2, 3], slots(10, 11, 12))
    # Same prefix computed again by another request into its own slots 20, 21.
    assert cache.insert([1, 2, 7, 8], slots(20, 21, 22, 23)) == 2
    assert cache.match_prefix([1, 2, 7, 8]).indices.tolist() == [10, 11, 22, 23]
    assert cache.match_prefix([1, 2, 3]).indices.tolist() == [10, 11, 12]
    assert cache.insert([1, 2, 3], slots(30, 31, 32)) == 3
    assert cache.evictable_size == 5
    with pytest.raises(ValueError, match="expected 2 indices"):
        cache.insert([1, 2], slots(1))


def test_tree_keeps_its_own_copy_of_indices():
    cache = RadixCache()
    kv = slots(5, 6, 7)
    cache.insert([4, 4, 4], kv)
    kv.fill_(0)
    assert cache.match_prefix([4, 4, 4]).indices.tolist() == [5, 6, 7]


def test_tensor_token_ids_are_accepted():
    cache = RadixCache()
    cache.insert(torch.tensor([3, 1, 4]), slots(1, 2, 3))
    assert cache.match_prefix(torch.tensor([3, 1, 5])).indices.tolist() == [1, 2]


def test_lock_protects_path_and_split_preserves_locks():
    cache = RadixCache()
    cache.insert([1, 2, 3, 4], slots(1, 2, 3, 4))
    node = cache.match_prefix([1, 2, 3, 4]).last_node
    cache.inc_lock(node)
    assert (cache.protected_size, cache.evictable_size) == (4, 0)
    # Split the locked edge from another request, and hang a new unlocked branch below it.
    assert cache.insert([1, 2, 9], slots(1, 2, 5)) == 2
    cache.check_integrity(num_free=0, num_in_use_outside_cache=0, total=5)
    assert (cache.protected_size, cache.evictable_size) == (4, 1)
    assert cache.evict(100).tolist() == [5]  # only the unlocked branch goes
    assert cache.match_prefix([1, 2, 3, 4]).prefix_len == 4
    cache.dec_lock(node)
    assert (cache.protected_size, cache.evictable_size) == (0, 4)
    assert cache.evict(1).tolist() == [3, 4]  # enough already: the leaf alone
    assert cache.evict(1).tolist() == [1, 2]  # its parent is a leaf now
    assert cache.total_size() == 0
    with pytest.raises(CacheIntegrityError, match="unlocked"):
        cache.dec_lock(node)


def test_evict_is_lru_and_parent_becomes_evictable():
    cache = RadixCache()
    cache.insert([1, 1], slots(1, 2))
    cache.insert([1, 1, 5], slots(1, 2, 3))
    cache.insert([2], slots(4))
    cache.insert([3, 3], slots(5, 6))
    cache.match_prefix([1, 1, 5])  # touch: now the most recent
    cache.match_prefix([3, 3])  # newer still
    assert cache.evict(1).tolist() == [4]  # [2] is oldest
    # [1 1 5]'s leaf [5] is older than [3 3]; after it goes, its parent [1 1] is a leaf again,
    # with the same access time, so it goes next before [3 3].
    assert cache.evict(3).tolist() == [3, 1, 2]
    assert cache.match_prefix([3, 3]).prefix_len == 2
    assert cache.evict(0).numel() == 0
    assert cache.evict(10).tolist() == [5, 6]
    assert cache.evict(10).numel() == 0


def test_reset_returns_everything_and_pretty_print():
    cache = RadixCache()
    cache.insert([1, 2, 3], slots(1, 2, 3))
    cache.insert([1, 9], slots(1, 4))
    cache.inc_lock(cache.match_prefix([1, 9]).last_node)
    text = cache.pretty_print()
    assert "[1] len=1 lock=1" in text and "[2 3] len=2 lock=0" in text
    assert sorted(cache.reset().tolist()) == [1, 2, 3, 4]
    assert cache.total_size() == 0 and cache.match_prefix([1, 2]).prefix_len == 0
    cache.check_integrity(num_free=4, num_in_use_outside_cache=0, total=4)


def test_check_integrity_catches_accounting_errors():
    cache = RadixCache()
    cache.insert([1, 2], slots(1, 2))
    cache.check_integrity(num_free=3, num_in_use_outside_cache=0, total=5)
    with pytest.raises(CacheIntegrityError, match="expected 5"):
        cache.check_integrity(num_free=2, num_in_use_outside_cache=0, total=5)
    cache.insert([7], slots(2))  # the same slot twice: a caller bug
    with pytest.raises(CacheIntegrityError, match="two tree nodes"):
        cache.check_integrity(num_free=2, num_in_use_outside_cache=0, total=5)
    cache.evictable_size += 1
    with pytest.raises(CacheIntegrityError, match="evictable_size"):
        cache.check_integrity(num_free=2, num_in_use_outside_cache=0, total=5)


def test_disabled_cache_keeps_nothing_and_the_caller_path_frees_everything():
    cache, pool = RadixCache(disable=True), KVPool(8, 1, 1, 1, torch.float32, "cpu")
    for _ in range(3):
        prefix = cache.match_prefix([1, 2, 3])
        assert prefix.prefix_len == 0 and prefix.last_node is cache.root
        cache.inc_lock(prefix.last_node)
        kv = torch.cat([prefix.indices, pool.alloc(3)])
        num_dup = cache.insert([1, 2, 3], kv)
        pool.free(kv[prefix.prefix_len:num_dup])
        cache.dec_lock(prefix.last_node)
        cache.check_integrity(pool.num_free, 0, pool.num_slots)
    assert pool.num_free == 8 and cache.total_size() == 0 and cache.evict(5).numel() == 0


# ---------------------------------------------------------------------- stateful property test

NUM_SLOTS = 48
tokens_st = st.lists(st.integers(0, 3), min_size=1, max_size=14)


def kv_tag(prefix: list[int]) -> float:
    """What "the KV" of the last token of `prefix` is in this test: a function of the whole
    prefix, so a slot reused for the wrong prefix is caught. Exact in float32 (< 2**24)."""
    return float(hash(tuple(prefix)) % (1 << 23))


class CacheUser(RuleBasedStateMachine):
    """A scheduler in miniature. Each running request locks its matched prefix, owns the slots
    it allocated, may checkpoint itself into the cache mid-way (chunked prefill), and on finish
    inserts its tokens and frees the duplicates; aborts free without inserting."""

    disable = False
    requests = Bundle("requests")

    def __init__(self):
        super().__init__()
        self.pool = KVPool(NUM_SLOTS, 1, 1, 1, torch.float32, "cpu")
        self.cache = RadixCache(disable=self.disable)
        self.num_owned = 0  # slots held by running requests outside the tree
        self.running: list[dict] = []

    def _write_kv(self, tokens, kv, start):
        for i in range(start, len(tokens)):
            self.pool.k_buffer[0][int(kv[i]), 0, 0] = kv_tag(tokens[:i + 1])

    def _assert_kv(self, tokens, kv):
        got = self.pool.k_buffer[0][kv, 0, 0].tolist()
        assert got == [kv_tag(tokens[:i + 1]) for i in range(len(kv))], "slot holds wrong KV"

    def _alloc(self, n):
        new = self.pool.alloc(n)
        if new is None:
            self.pool.free(self.cache.evict(n - self.pool.num_free))
            new = self.pool.alloc(n)
        return new

    @rule(target=requests, tokens=tokens_st)
    def start(self, tokens):
        prefix = self.cache.match_prefix(tokens)
        self._assert_kv(tokens, prefix.indices)
        self.cache.inc_lock(prefix.last_node)
        new = self._alloc(len(tokens) - prefix.prefix_len)
        if new is None:  # out of memory even after eviction: the request waits
            self.cache.dec_lock(prefix.last_node)
            return None  # the other rules skip a request that never started
        self.num_owned += new.numel()
        kv = torch.cat([prefix.indices, new])
        self._write_kv(tokens, kv, prefix.prefix_len)
        req = {"tokens": list(tokens), "kv": kv, "cached": prefix.prefix_len,
               "node": prefix.last_node}
        self.running.append(req)
        return req

    @rule(req=requests, more=tokens_st)
    def extend(self, req, more):
        if req is None or req.get("done"):
            return
        new = self._alloc(len(more))
        if new is None:
            return
        self.num_owned += new.numel()
        start = len(req["tokens"])
        req["tokens"] += more
        req["kv"] = torch.cat([req["kv"], new])
        self._write_kv(req["tokens"], req["kv"], start)

    @rule(req=requests)
    def checkpoint(self, req):
        """Cache an unfinished request and re-point it at the tree's slots (chunked prefill).
        A scheduler does this only with the cache enabled."""
        if req is None or req.get("done") or self.cache.disable:
            return
        tokens, kv = req["tokens"], req["kv"]
        num_dup = self.cache.insert(tokens, kv)
        self.pool.free(kv[req["cached"]:num_dup])
        self.num_owned -= len(tokens) - req["cached"]
        again = self.cache.match_prefix(tokens)
        assert again.prefix_len == len(tokens)
        self.cache.inc_lock(again.last_node)
        self.cache.dec_lock(req["node"])
        req.update(kv=again.indices, cached=len(tokens), node=again.last_node)

    @rule(req=consumes(requests), abort=st.booleans())
    def finish(self, req, abort):
        if req is None or req.get("done"):
            return
        req["done"] = True
        self.running.remove(req)
        tokens, kv, cached = req["tokens"], req["kv"], req["cached"]
        num_dup = cached if abort else self.cache.insert(tokens, kv)
        if abort:
            self.pool.free(kv[cached:])
        else:
            self.pool.free(kv[cached:num_dup])
            if not self.cache.disable:
                assert self.cache.match_prefix(tokens).prefix_len == len(tokens)
        self.num_owned -= len(tokens) - cached
        self.cache.dec_lock(req["node"])

    @rule(n=st.integers(0, NUM_SLOTS))
    def evict(self, n):
        before = self.cache.evictable_size
        freed = self.cache.evict(n)
        assert freed.numel() >= min(n, before) and self.cache.evictable_size == before - freed.numel()
        self.pool.free(freed)

    @precondition(lambda self: self.num_owned == 0 and self.cache.protected_size == 0)
    @rule()
    def reset_when_idle(self):
        self.pool.free(self.cache.reset())

    @invariant()
    def consistent(self):
        self.cache.check_integrity(self.pool.num_free, self.num_owned, self.pool.num_slots)
        if self.cache.disable:
            assert self.cache.total_size() == 0
        for req in self.running:  # locked prefixes survive eviction, slot for slot
            cached = req["cached"]
            assert peek(self.cache, req["tokens"][:cached]) == req["kv"][:cached].tolist()
            self._assert_kv(req["tokens"], req["kv"])


def peek(cache: RadixCache, tokens: list[int]) -> list[int]:
    """Cached slots of the longest prefix of tokens, read without splitting or touching LRU."""
    node, pos, out = cache.root, 0, []
    while pos < len(tokens) and tokens[pos] in node.children:
        node = node.children[tokens[pos]]
        n = common_prefix_len(tokens, pos, node.key)
        out += node.value[:n].tolist()
        pos += n
        if n < len(node.key):
            break
    return out


class DisabledCacheUser(CacheUser):
    disable = True


_settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestCacheUser = CacheUser.TestCase
TestCacheUser.settings = _settings
TestDisabledCacheUser = DisabledCacheUser.TestCase
TestDisabledCacheUser.settings = settings(_settings, max_examples=25)
