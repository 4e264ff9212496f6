"""PrefixTree: an approximate record of which prompt prefixes were sent to which worker.

The router cannot see a worker's radix cache, so it remembers what it sent there. Keys are
sequences of chunks (a chunk is `chunk_len` characters of text, or a tuple of `chunk_len` token
ids); the tree is a trie over chunks, and every node remembers, per worker, when a request through
it last went there. Matching walks the trie once and returns, for every worker, how many leading
chunks of the key it has seen:

    root ─ "You are a tran" ─ "slator. Exampl" ─ ...      node.last_used = {worker: tick}
                 {w0, w1}           {w0}

Insertion stamps every node on the path, so a worker's nodes always form a prefix-closed subtree
and its match length is the depth of the deepest node that still names it. The tree is bounded:
past `max_chunks_per_worker` a worker's least recently used leaves are forgotten, down to 90% of the budget (the worker's own
cache evicts in a similar LRU order, so the approximation stays honest).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Hashable, Sequence, Union

Chunk = Hashable  # a str of text or a tuple of token ids
Key = Union[str, Sequence[int]]


def split_key(key: Key, chunk_len: int) -> list[Chunk]:
    """Full chunks of `key` (text or token ids); a trailing partial chunk is dropped, since it could
    not be matched by a longer prompt anyway."""
    num_full = len(key) // chunk_len
    if isinstance(key, str):
        return [key[i * chunk_len:(i + 1) * chunk_len] for i in range(num_full)]
    return [tuple(key[i * chunk_len:(i + 1) * chunk_len]) for i in range(num_full)]


@dataclass(eq=False)
class _Node:
    parent: "_Node | None"
    chunk: Chunk
    children: dict = field(default_factory=dict)  # chunk -> _Node
    last_used: dict = field(default_factory=dict)  # worker id -> tick of last insert through here


class PrefixTree:
    def __init__(self, chunk_len: int = 16, max_chunks_per_worker: int = 65536):
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
        if max_chunks_per_worker < 1:
            raise ValueError(f"max_chunks_per_worker must be >= 1, got {max_chunks_per_worker}")
        self.chunk_len = chunk_len
        self.max_chunks_per_worker = max_chunks_per_worker
        self.root = _Node(None, None)
        self._tick = 0
        self._num_chunks: dict[int, int] = {}  # worker id -> nodes naming it

    def num_chunks(self, worker: int) -> int:
        """How many chunks the tree currently attributes to `worker`."""
        return self._num_chunks.get(worker, 0)

    def match(self, key: Key) -> tuple[dict[int, int], int]:
        """({worker: matched length in key units (chars or tokens)}, key length in full chunks
        times chunk_len). Workers with no match are absent."""
        chunks = split_key(key, self.chunk_len)
        depth_of: dict[int, int] = {}
        node = self.root
        for depth, chunk in enumerate(chunks, start=1):
            node = node.children.get(chunk)
            if node is None:
                break
            for worker in node.last_used:
                depth_of[worker] = depth
        return {w: d * self.chunk_len for w, d in depth_of.items()}, len(chunks) * self.chunk_len

    def insert(self, key: Key, worker: int) -> None:
        """Record that `key` was sent to `worker`; forget its oldest leaves when over budget."""
        self._tick += 1
        node = self.root
        for chunk in split_key(key, self.chunk_len):
            child = node.children.get(chunk)
            if child is None:
                child = node.children[chunk] = _Node(node, chunk)
            if worker not in child.last_used:
                self._num_chunks[worker] = self._num_chunks.get(worker, 0) + 1
            child.last_used[worker] = self._tick
            node = child
        excess = self.num_chunks(worker) - self.max_chunks_per_worker
        if excess > 0:  # evict a tenth more than needed, so the walk is amortised over many inserts
            self._evict(worker, excess + self.max_chunks_per_worker // 10)

    def remove_worker(self, worker: int) -> None:
        """Forget everything sent to `worker` (it restarted, or its cache was flushed)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node.last_used.pop(worker, None) is not None:
                self._prune(node)
        self._num_chunks.pop(worker, None)

    def _evict(self, worker: int, num: int) -> None:
        """Drop `num` of `worker`'s nodes, least recently used leaves (of its subtree) first."""
        heap = [(n.last_used[worker], id(n), n) for n in self._leaves_of(worker)]
        heapq.heapify(heap)
        while num > 0 and heap:
            _, _, node = heapq.heappop(heap)
            del node.last_used[worker]
            self._num_chunks[worker] -= 1
            num -= 1
            parent = node.parent
            self._prune(node)
            if parent is not self.root and not any(worker in c.last_used for c in parent.children.values()):
                heapq.heappush(heap, (parent.last_used[worker], id(parent), parent))

    def _leaves_of(self, worker: int) -> list[_Node]:
        leaves, stack = [], [c for c in self.root.children.values() if worker in c.last_used]
        while stack:
            node = stack.pop()
            mine = [c for c in node.children.values() if worker in c.last_used]
            if mine:
                stack.extend(mine)
            else:
                leaves.append(node)
        return leaves

    def _prune(self, node: _Node) -> None:
        """Remove `node` (and empty ancestors) from the trie once no worker and no child uses it."""
        while node is not self.root and not node.last_used and not node.children:
            parent = node.parent
            del parent.children[node.chunk]
            node = parent
