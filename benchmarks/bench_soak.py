"""Bounded soak on loopback: N concurrent streaming clients with mixed free / regex / JSON-schema /
chat requests, some of which disconnect mid-stream. Passes when there are zero unexpected errors and
the KV pool is back at baseline (free + cached == total, nothing locked) afterwards.

    python -m benchmarks.bench_soak --clients 256                 # starts its own server
    python -m benchmarks.bench_soak --url http://127.0.0.1:30000 --api-key KEY --clients 64

Prints requests/s and the server's RSS before and after."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import httpx

_SCHEMA = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


@dataclass
class SoakResult:
    num_clients: int
    num_completed: int = 0
    num_disconnected: int = 0
    num_rejected: int = 0  # 503 from the concurrency cap (expected when clients > the cap)
    errors: list[str] = field(default_factory=list)  # unexpected: 5xx, error events, transport errors
    wall_s: float = 0.0
    rss_before: Optional[int] = None
    rss_after: Optional[int] = None
    stats_after: dict = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return (self.num_completed + self.num_disconnected) / max(self.wall_s, 1e-9)

    def table(self) -> str:
        mb = lambda b: "n/a" if b is None else f"{b / 2**20:.0f} MiB"  # noqa: E731
        rows = [("clients", self.num_clients), ("completed", self.num_completed),
                ("disconnected on purpose", self.num_disconnected), ("rejected (503)", self.num_rejected),
                ("unexpected errors", len(self.errors)), ("wall time", f"{self.wall_s:.1f} s"),
                ("requests/s", f"{self.requests_per_s:.2f}"), ("RSS before", mb(self.rss_before)),
                ("RSS after", mb(self.rss_after)),
                ("KV free+cached/total", f"{self.stats_after.get('kv_pool_free', 0) + self.stats_after.get('cached_tokens', 0)}"
                                         f"/{self.stats_after.get('kv_pool_total', '?')}")]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


def _request(i: int, rng: random.Random, max_tokens: int) -> tuple[str, dict]:
    kind = i % 4
    if kind == 0:
        return "/generate", {"text": f"Client {i} says:", "stream": True,
                             "sampling_params": {"max_new_tokens": max_tokens, "temperature": rng.random()}}
    if kind == 1:
        return "/generate", {"text": f"Number {i}:", "stream": True,
                             "sampling_params": {"max_new_tokens": max_tokens, "regex": "[0-9]{1,6}"}}
    if kind == 2:
        return "/v1/completions", {"prompt": f"JSON for {i}:", "stream": True, "max_tokens": max_tokens,
                                   "json_schema": _SCHEMA}
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": f"Say hi to {i}."}],
                                    "stream": True, "max_tokens": max_tokens}


async def _client(c: httpx.AsyncClient, i: int, rng: random.Random, max_tokens: int,
                  disconnect_rate: float, result: SoakResult) -> None:
    path, body = _request(i, rng, max_tokens)
    leave_after = 1 if rng.random() < disconnect_rate else None
    try:
        async with c.stream("POST", path, json=body) as resp:
            if resp.status_code == 503:
                result.num_rejected += 1
                return
            if resp.status_code != 200:
                result.errors.append(f"{path}: HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
                return
            events = 0
            async for line in resp.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                if '"error"' in line[:20]:
                    result.errors.append(f"{path}: error event {line[:200]}")
                    return
                events += 1
                if leave_after is not None and events >= leave_after:
                    result.num_disconnected += 1
                    return  # leaving the block closes the connection mid-stream
            result.num_completed += 1
    except httpx.HTTPError as e:
        result.errors.append(f"{path}: {type(e).__name__}: {e}")


async def _wait_idle(c: httpx.AsyncClient, timeout: float) -> dict:
    deadline = time.time() + timeout
    while True:
        st = (await c.get("/get_server_info")).json()["internal_states"][0]
        if st["num_running_reqs"] == 0 and st["num_waiting_reqs"] == 0:
            return st
        if time.time() > deadline:
            raise TimeoutError(f"server not idle after {timeout}s: {st}")
        await asyncio.sleep(0.2)


def _rss(pid: Optional[int]) -> Optional[int]:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


async def run_soak(url: str, api_key: Optional[str] = None, num_clients: int = 256, max_tokens: int = 6,
                   disconnect_rate: float = 0.2, seed: int = 0, server_pid: Optional[int] = None,
                   idle_timeout: float = 120.0) -> SoakResult:
    """Run the soak against a running server; returns the counts (does not assert)."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=num_clients + 8, max_keepalive_connections=num_clients + 8)
    result = SoakResult(num_clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:
        await _wait_idle(c, idle_timeout)
        result.rss_before = _rss(server_pid)
        t0 = time.perf_counter()
        await asyncio.gather(*[_client(c, i, rng, max_tokens, disconnect_rate, result) for i in range(num_clients)])
        result.wall_s = time.perf_counter() - t0
        result.stats_after = await _wait_idle(c, idle_timeout)
        result.rss_after = _rss(server_pid)
    return result


def is_at_baseline(stats: dict) -> bool:
    return (stats["kv_pool_free"] + stats["cached_tokens"] == stats["kv_pool_total"]
            and stats["evictable_tokens"] == stats["cached_tokens"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server; omitted: start one on a free port")
    p.add_argument("--api-key")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=6)
    p.add_argument("--disconnect-rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-flags", default="--context-length 512", help="flags for the server it starts")
    args = p.parse_args(argv)
    server = None
    url, key, pid = args.url, args.api_key, None
    if url is None:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reliability"))
        from reliability_helpers import ServerProcess
        server = ServerProcess(args.server_flags.split(), name="soak").start()
        url, key, pid = server.url, server.api_key, server.proc.pid
    try:
        result = asyncio.run(run_soak(url, key, args.clients, args.max_tokens, args.disconnect_rate,
                                      args.seed, pid))
    finally:
        if server is not None:
            server.stop()
    print(result.table())
    for err in result.errors[:10]:
        print("ERROR", err)
    ok = not result.errors and is_at_baseline(result.stats_after)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
