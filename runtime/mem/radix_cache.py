"""RadixCache: a token-level radix tree from token-id prefixes to KV slot indices.

Each edge of the tree holds a run of tokens (`key`, a Python list of ints) and the KV slots of
those tokens (`value`, an int64 CPU tensor of the same length). Children are keyed by the first
token of their run, so siblings always start with distinct tokens:

    root
     ├─ [1, 5, 9]      -> slots [12, 13, 14]
     │    ├─ [2, 2]    -> slots [40, 41]        prefix 1 5 9 2 2 lives in slots 12 13 14 40 41
     │    └─ [7]       -> slots [55]
     └─ [3, 3, 3, 3]   -> slots [20, 21, 22, 23]

The cache only holds indices. It never frees memory: `evict` and `reset` return the slots they
let go of and the caller frees them into the KVPool.

Ownership protocol for a caller (the scheduler), the same whether or not the cache is disabled:

    prefix = cache.match_prefix(tokens)              # slots this request reuses
    cache.inc_lock(prefix.last_node)                 # keep them from being evicted
    new = pool.alloc(len(tokens) - len(prefix.indices))   # evict first if this fails
    ...                                              # run the model on the new tokens
    kv = torch.cat([prefix.indices, new])
    num_dup = cache.insert(tokens, kv)               # the tree keeps kv[num_dup:]
    pool.free(kv[len(prefix.indices):num_dup])       # slots the tree already had its own copy of
    cache.dec_lock(prefix.last_node)

A disabled cache matches nothing and keeps nothing (`insert` returns len(tokens)), so the same
code frees every slot the request allocated.

Locks are reference counts on the whole path root..node; a locked node is never evicted. A node's
`lock_ref` is therefore the number of locks held on nodes in its subtree, and is >= the sum of its
children's counts.
"""
from __future__ import annotations

import heapq
import itertools
from typing import NamedTuple, Optional, Sequence

import torch

_EMPTY = torch.empty(0, dtype=torch.int64)
_CHUNK = 64  # common_prefix_len compares this many tokens per C-level slice comparison


class CacheIntegrityError(AssertionError):
    """The radix cache's bookkeeping disagrees with itself or with the KV pool."""


def common_prefix_len(a: Sequence[int], a_start: int, b: Sequence[int]) -> int:
    """Length of the common prefix of a[a_start:] and b, comparing whole chunks at C speed.

    Only the one chunk that holds the first mismatch is compared token by token, so the cost is
    O(n) slice comparisons in C plus at most _CHUNK Python steps.
    """
    n = min(len(a) - a_start, len(b))
    i = 0
    while i < n:
        j = min(i + _CHUNK, n)
        if a[a_start + i:a_start + j] != b[i:j]:
            while a[a_start + i] == b[i]:
                i += 1
            return i
        i = j
    return n


class TreeNode:
    __slots__ = ("key", "value", "children", "parent", "lock_ref", "last_access")

    def __init__(self, key: list[int], value: torch.Tensor, parent: Optional["TreeNode"]):
        self.key = key  # tokens on the edge into this node
        self.value = value  # [len(key)] int64 KV slots of those tokens
        self.children: dict[int, TreeNode] = {}  # first token of the child's key -> child
        self.parent = parent
        self.lock_ref = 0
        self.last_access = 0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def __repr__(self) -> str:
        head = self.key[:8]
        more = "..." if len(self.key) > 8 else ""
        return f"TreeNode(len={len(self.key)}, key={head}{more}, lock={self.lock_ref})"


class MatchResult(NamedTuple):
    indices: torch.Tensor  # [prefix_len] int64 KV slots of the longest cached prefix
    last_node: TreeNode  # node where the match ends (the root when nothing matched)

    @property
    def prefix_len(self) -> int:
        return int(self.indices.numel())


class RadixCache:
    def __init__(self, disable: bool = False):
        self.disable = disable
        self._clock = itertools.count(1)  # logical time for LRU; deterministic, never repeats
        self.root = TreeNode([], _EMPTY, None)
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0  # tokens cached in unlocked nodes
        self.protected_size = 0  # tokens cached in locked nodes


    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        """Longest cached prefix of token_ids. Splits the last node when the match ends inside
        it, so that `last_node` covers exactly the matched prefix; refreshes LRU times."""
        if self.disable:
            return MatchResult(_EMPTY, self.root)
        node, _, values = self._walk(_as_list(token_ids), next(self._clock))
        indices = torch.cat(values) if values else _EMPTY
        return MatchResult(indices, node)

    def insert(self, token_ids: Sequence[int], indices: torch.Tensor) -> int:
        """Cache token_ids -> indices. Returns how many leading tokens the tree already had
        (or, when disabled, len(token_ids)): the tree adopts indices[returned:] and the caller
        still owns indices[:returned]. Refreshes LRU times along the path."""
        tokens = _as_list(token_ids)
        if indices.numel() != len(tokens):
            raise ValueError(f"insert: expected {len(tokens)} indices for {len(tokens)} tokens, "
                             f"got {indices.numel()}")
        if self.disable:
            return len(tokens)
        now = next(self._clock)
        node, pos, _ = self._walk(tokens, now)
        if pos < len(tokens):  # the new leaf hangs below where the walk stopped
            leaf = TreeNode(tokens[pos:], indices[pos:].to("cpu", torch.int64).clone(), node)
            leaf.last_access = now
            node.children[tokens[pos]] = leaf
            self.evictable_size += len(leaf.key)
        return pos

    def _walk(self, tokens: list[int], now: int) -> tuple[TreeNode, int, list[torch.Tensor]]:
        """Follow tokens down from the root as far as the tree holds them, stamping every node on
        the path with `now`. When the match ends inside an edge, that edge is split so the path
        ends exactly at the match. Returns (last node, tokens matched, the path's values)."""
        node, pos, values = self.root, 0, []
        node.last_access = now
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            n = common_prefix_len(tokens, pos, child.key)
            if n < len(child.key):
                child = self._split(child, n)  # the walk ends next round: no child matches
            child.last_access = now
            values.append(child.value)
            pos += n
            node = child
        return node, pos, values

    def _split(self, node: TreeNode, n: int) -> TreeNode:
        """Cut node's edge after n tokens; returns the new upper node. Both halves keep the lock
        count, so the sizes are unchanged."""
        upper = TreeNode(node.key[:n], node.value[:n], node.parent)
        upper.lock_ref = node.lock_ref
        upper.last_access = node.last_access
        upper.children = {node.key[n]: node}
        node.parent.children[node.key[0]] = upper
        node.key = node.key[n:]
        node.value = node.value[n:]
        node.parent = upper
        return upper


    def inc_lock(self, node: TreeNode) -> None:
        """Lock the path root..node against eviction (reference counted)."""
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock(self, node: TreeNode) -> None:
        """Undo one inc_lock(node)."""
        while node is not self.root:
            if node.lock_ref <= 0:
                raise CacheIntegrityError(f"dec_lock on an unlocked node {node!r}")
            if node.lock_ref == 1:
                self.protected_size -= len(node.key)
                self.evictable_size += len(node.key)
            node.lock_ref -= 1
            node = node.parent


    def evict(self, num_tokens: int) -> torch.Tensor:
        """Drop unlocked leaves, least recently used first, until >= num_tokens slots are
        released or nothing evictable is left. Returns the released slots (int64, CPU)."""
        if self.disable or num_tokens <= 0:
            return _EMPTY
        order = itertools.count()  # tie-break so the heap never compares nodes
        heap = [(n.last_access, next(order), n) for n in self._nodes()
                if n.is_leaf and n.lock_ref == 0]
        heapq.heapify(heap)
        freed, num_freed = [], 0
        while num_freed < num_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            del parent.children[leaf.key[0]]
            freed.append(leaf.value)
            num_freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            if parent is not self.root and parent.is_leaf and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, next(order), parent))
        return torch.cat(freed) if freed else _EMPTY

    def reset(self) -> torch.Tensor:
        """Drop the whole tree, locked or not (call only when idle); returns every slot it held."""
        values = [n.value for n in self._nodes() if n is not self.root]
        self.root = TreeNode([], _EMPTY, None)
        self.root.lock_ref = 1
        self.evictable_size = 0
        self.protected_size = 0
        return torch.cat(values) if values else _EMPTY


    def total_size(self) -> int:
        """Tokens cached, locked or not."""
        return self.evictable_size + self.protected_size

    def _nodes(self):
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def check_integrity(self, num_free: int, num_in_use_outside_cache: int, total: int) -> None:
        """Raise CacheIntegrityError unless free + evictable + protected + in_use == total and
        the tree is well formed (distinct first tokens, edge lengths, lock counts, sizes, no slot
        held twice, the dummy slot 0 never held)."""
        def check(ok: bool, msg: str):
            if not ok:
                raise CacheIntegrityError(msg)

        evictable = protected = 0
        slots = []
        for node in self._nodes():
            for first, child in node.children.items():
                check(child.parent is node, f"{child!r} does not point back to its parent")
                check(len(child.key) > 0 and child.key[0] == first,
                      f"child stored under token {first} has key {child.key[:4]}")
            if node is self.root:  # locks stop below the root, which holds one of its own
                check(node.lock_ref == 1 and len(node.key) == 0, "root lost its lock or got a key")
                continue
            check(sum(c.lock_ref for c in node.children.values()) <= node.lock_ref,
                  f"{node!r} has fewer locks than its children together")
            check(node.lock_ref >= 0, f"{node!r} has a negative lock count")
            check(node.value.dtype == torch.int64 and node.value.shape == (len(node.key),),
                  f"{node!r} has value {tuple(node.value.shape)} {node.value.dtype}")
            if node.lock_ref > 0:
                protected += len(node.key)
            else:
                evictable += len(node.key)
            slots.append(node.value)
        check(evictable == self.evictable_size,
              f"evictable_size is {self.evictable_size} but unlocked nodes hold {evictable}")
        check(protected == self.protected_size,
              f"protected_size is {self.protected_size} but locked nodes hold {protected}")
        held = torch.cat(slots) if slots else _EMPTY
        check(held.unique().numel() == held.numel(), "a KV slot is held by two tree nodes")
        check(not bool((held <= 0).any()), "the tree holds slot 0 or a negative slot")
        accounted = num_free + evictable + protected + num_in_use_outside_cache
        check(accounted == total, f"free {num_free} + evictable {evictable} + protected "
                                  f"{protected} + in use {num_in_use_outside_cache} = {accounted}, "
                                  f"expected {total}")

    def pretty_print(self) -> str:
        lines = [f"RadixCache(evictable={self.evictable_size}, protected={self.protected_size}"
                 f"{', disabled' if self.disable else ''})"]

        def walk(node: TreeNode, depth: int):
            for child in sorted(node.children.values(), key=lambda c: c.key[0]):
                head = " ".join(map(str, child.key[:12])) + (" ..." if len(child.key) > 12 else "")
                lines.append(f"{'  ' * depth}[{head}] len={len(child.key)} "
                             f"lock={child.lock_ref} t={child.last_access}")
                walk(child, depth + 1)

        walk(self.root, 1)
        return "\n".join(lines)


def _as_list(token_ids: Sequence[int]) -> list[int]:
    if isinstance(token_ids, torch.Tensor):
        return token_ids.tolist()
    return token_ids if isinstance(token_ids, list) else list(token_ids)
