"""Routing policies: given a request's keys and the in-flight load of each candidate worker, pick
one. `prefix` (cache-aware, the default), `round_robin` and `least_load` (for comparison).

Every policy sees only healthy candidates (`loads`: worker index -> requests in flight) and
returns a RouteDecision; `on_routed` tells it where the request went, `forget` that a worker's
cache is gone (it restarted or was flushed)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from .config import POLICIES, RouterConfig, RouterConfigError
from .prefix_tree import Key, PrefixTree


@dataclass(frozen=True)
class RouteDecision:
    worker: int
    reason: str  # "prefix" | "least_load" | "imbalance" | "round_robin"
    matched_len: int = 0  # key units (chars or tokens) the chosen worker has seen
    key_len: int = 0


class Policy(Protocol):
    name: str

    def choose(self, keys: Sequence[Key], loads: Mapping[int, int]) -> RouteDecision:
        """Pick one of `loads`' workers (non-empty). Must not mutate state; `on_routed` does."""

    def on_routed(self, keys: Sequence[Key], worker: int) -> None:
        """The request was sent to `worker`."""

    def forget(self, worker: int) -> None:
        """`worker`'s cache is empty now."""


class RoundRobin:
    name = "round_robin"

    def __init__(self):
        self.last = -1

    def choose(self, keys, loads):
        ids = sorted(loads)
        nxt = next((w for w in ids if w > self.last), ids[0])
        return RouteDecision(nxt, "round_robin")

    def on_routed(self, keys, worker):
        self.last = worker

    def forget(self, worker):
        pass


class LeastLoad:
    """Fewest requests in flight; ties rotate so an idle cluster still spreads requests."""
    name = "least_load"

    def __init__(self):
        self.rotation = RoundRobin()

    def choose(self, keys, loads):
        least = min(loads.values())
        tied = {w: n for w, n in loads.items() if n == least}
        return RouteDecision(self.rotation.choose(keys, tied).worker, "least_load")

    def on_routed(self, keys, worker):
        self.rotation.on_routed(keys, worker)

    def forget(self, worker):
        pass


class PrefixAffinity:
    """Send a request where its prefix was sent before, if that covers >= cache_threshold of its
    keys and loads are not too uneven. Otherwise it starts a new prefix: send it to the worker
    holding the least cached prefix among those whose load is within balance_abs_threshold of the
    least loaded. (Plain least-load here would follow momentary queue lengths: a replica busy
    prefilling an uncached group would push every new group onto the other one, which then holds
    most of the cache; spreading by cache size keeps groups even, and the imbalance check still
    hands requests to an idle worker when queues really diverge.)"""
    name = "prefix"

    def __init__(self, config: RouterConfig):
        self.config = config
        self.tree = PrefixTree(config.chunk_len, config.max_chunks_per_worker)

    def choose(self, keys, loads):
        cfg = self.config
        lo, hi = min(loads.values()), max(loads.values())
        if hi - lo > cfg.balance_abs_threshold and hi > cfg.balance_rel_threshold * lo:
            return RouteDecision(self._least_loaded(loads), "imbalance")
        matched = {w: 0 for w in loads}
        key_len = 0
        for key in keys:
            per_worker, length = self.tree.match(key)
            key_len += length
            for w, n in per_worker.items():
                if w in matched:
                    matched[w] += n
        best = min(loads, key=lambda w: (-matched[w], loads[w], w))
        if key_len and matched[best] and matched[best] >= cfg.cache_threshold * key_len:
            return RouteDecision(best, "prefix", matched[best], key_len)
        near_least = [w for w in loads if loads[w] <= lo + cfg.balance_abs_threshold]
        worker = min(near_least, key=lambda w: (self.tree.num_chunks(w), loads[w], w))
        return RouteDecision(worker, "least_load", matched[worker], key_len)

    def _least_loaded(self, loads: Mapping[int, int]) -> int:
        return min(loads, key=lambda w: (loads[w], self.tree.num_chunks(w), w))

    def on_routed(self, keys, worker):
        for key in keys:
            self.tree.insert(key, worker)

    def forget(self, worker):
        self.tree.remove_worker(worker)


def make_policy(config: RouterConfig) -> Policy:
    if config.policy == "prefix":
        return PrefixAffinity(config)
    if config.policy == "round_robin":
        return RoundRobin()
    if config.policy == "least_load":
        return LeastLoad()
    raise RouterConfigError(f"unknown routing policy {config.policy!r}; supported: {POLICIES}")
