"""Online serving benchmark in the style of SGLang's bench_serving: synthetic prompts of a set
length sent as streaming requests at a Poisson request rate under a concurrency cap; reports TTFT,
inter-token latency (gaps between streamed chunks), end-to-end latency percentiles and request /
output-token throughput.

    python -m benchmarks.bench_serving --launch --max-concurrency 1,8,32 --output-len 32
    python -m benchmarks.bench_serving --base-url http://127.0.0.1:30000 --backend native
    python -m benchmarks.bench_serving --backend openai --base-url http://HOST:8000 --model NAME \
        --openai-api chat --api-key KEY --no-ignore-eos --no-write

Backends: `native` streams POST /generate (SGLang's API: ours or SGLang's); `openai` streams
/v1/completions or /v1/chat/completions of any OpenAI-compatible server. Token counts come from the
server (`meta_info` / `usage`), so input lengths are measured, not assumed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from benchmarks.report import table, write_section

SECTION = "Online serving (issue 5)"
# Common single-token words: a prompt of N words is ~N tokens for BPE tokenizers.
WORDS = ("the of and to in is was for on that with as by at from his her they this which have are "
         "one all were when we there can an been has more if will would who so no time out up into "
         "than them only other new some could these two may first then do any like my now over such "
         "our man me even most made after also did many before must through back years where much "
         "your way well down should because each just those people how too little state good very").split()


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    start: float = 0.0
    ttft: float = 0.0  # s, request sent -> first non-empty chunk
    e2e: float = 0.0  # s, request sent -> stream closed
    itls: list = field(default_factory=list)  # s, gaps between successive non-empty chunks


def make_prompts(num: int, input_len: int, seed: int) -> list[str]:
    """Distinct random-word prompts (distinct first words defeat prefix caching between them)."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(input_len - 1)) for i in range(num)]


async def sse_events(response):
    """The JSON objects of an SSE body, until `data: [DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


class Client:
    """One backend's request body and stream parsing; `run` times one streamed request."""

    def __init__(self, backend: str, args, http):
        self.backend, self.args, self.http = backend, args, http

    def request(self, prompt: str) -> tuple[str, dict]:
        a = self.args
        if self.backend == "native":
            sp = {"max_new_tokens": a.output_len, "temperature": a.temperature}
            if a.ignore_eos:
                sp["ignore_eos"] = True
            return "/generate", {"text": prompt, "sampling_params": sp, "stream": True}
        body = {"model": a.model, "max_tokens": a.output_len, "temperature": a.temperature, "stream": True,
                "stream_options": {"include_usage": True}}
        if a.ignore_eos:
            body["ignore_eos"] = True
        if a.openai_api == "chat":
            return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/completions", {**body, "prompt": prompt}

    def parse(self, event: dict, res: RequestResult, seen: int) -> int:
        """Update token counts from one event; return the text length received so far."""
        if "error" in event:
            raise RuntimeError(str(event["error"]))
        if self.backend == "native":  # cumulative text (ours, SGLang's default)
            meta = event.get("meta_info", {})
            res.prompt_tokens = meta.get("prompt_tokens", res.prompt_tokens)
            res.output_tokens = meta.get("completion_tokens", res.output_tokens)
            return len(event.get("text", ""))
        if event.get("usage"):
            res.prompt_tokens = event["usage"].get("prompt_tokens", 0)
            res.output_tokens = event["usage"].get("completion_tokens", 0)
        for choice in event.get("choices") or []:
            seen += len(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
        return seen

    async def run(self, prompt: str) -> RequestResult:
        res = RequestResult(start=time.perf_counter())
        path, body = self.request(prompt)
        seen, last = 0, None
        try:
            async with self.http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
                async for event in sse_events(response):
                    now = time.perf_counter()
                    grown = self.parse(event, res, seen)
                    if grown > seen:  # a chunk that carried text
                        if last is None:
                            res.ttft = now - res.start
                        else:
                            res.itls.append(now - last)
                        seen, last = grown, now
            res.e2e = time.perf_counter() - res.start
            res.ok = last is not None
            res.error = "" if res.ok else "stream carried no text"
        except Exception as e:  # a failed request is counted and reported, not fatal
            res.error = f"{type(e).__name__}: {e}"
        return res


async def run_setting(args, backend: str, warmup: list[str], prompts: list[str],
                      concurrency: Optional[int]) -> tuple[list, float]:
    import httpx
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(len(prompts), 1))
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=args.timeout,
                                 limits=limits) as http:
        client = Client(backend, args, http)
        for p in warmup:
            await client.run(p)
        gate = asyncio.Semaphore(concurrency) if concurrency else None
        rng = random.Random(args.seed)

        async def one(prompt):
            if gate is None:
                return await client.run(prompt)
            async with gate:
                return await client.run(prompt)

        tasks = []
        t0 = time.perf_counter()
        for prompt in prompts:
            tasks.append(asyncio.create_task(one(prompt)))
            if not math.isinf(args.request_rate):  # Poisson arrivals
                await asyncio.sleep(rng.expovariate(args.request_rate))
        results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - t0


def pct(values: list, q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; ms."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return 1000 * (xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def summarize(labels: list, results: list, duration: float) -> list:
    good = [r for r in results if r.ok]
    ttft = [r.ttft for r in good]
    itl = [x for r in good for x in r.itls]
    e2e = [r.e2e for r in good]
    out_tokens = sum(r.output_tokens for r in good)
    mean_in = statistics.fmean(r.prompt_tokens for r in good) if good else float("nan")
    return [*labels, f"{len(good)}/{len(results)}", round(mean_in), len(good) / duration, out_tokens / duration,
            pct(ttft, 50), pct(ttft, 90), pct(ttft, 99), pct(itl, 50), pct(itl, 90), pct(itl, 99),
            pct(e2e, 50), pct(e2e, 90), pct(e2e, 99)]


HEADERS = ["backend", "max concurrency", "ok", "input tok", "req/s", "out tok/s", "TTFT p50", "TTFT p90", "TTFT p99",
           "ITL p50", "ITL p90", "ITL p99", "E2E p50", "E2E p90", "E2E p99"]


def launch_server(args) -> subprocess.Popen:
    """Start our server (default model unless --model-path) on a free loopback port."""
    import httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sgl_lang.launch_server", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *args.server_args.split()]
    if args.model_path:
        cmd += ["--model-path", args.model_path]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    args.base_url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(args.base_url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy in 300 s")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="native",
                    help="native, openai, or a comma list (each runs every concurrency setting)")
    ap.add_argument("--base-url", default="http://127.0.0.1:30000", help="server root (no /v1)")
    ap.add_argument("--launch", action="store_true", help="start our server on a free port first")
    ap.add_argument("--model-path", default=None, help="with --launch: model to serve (default model if unset)")
    ap.add_argument("--server-args", default="", help="with --launch: extra server flags, one string")
    ap.add_argument("--openai-api", choices=["completions", "chat"], default="completions")
    ap.add_argument("--model", default="default", help="model name sent to OpenAI-compatible servers")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--num-prompts", default="64",
                    help="requests per setting; a comma list gives one per --max-concurrency entry")
    ap.add_argument("--input-len", type=int, default=128, help="words per prompt (~tokens)")
    ap.add_argument("--output-len", type=int, default=32, help="max tokens per request")
    ap.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                    help="do not send ignore_eos (servers that refuse it, e.g. api.openai.com)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--request-rate", type=float, default=float("inf"),
                    help="requests per second, Poisson arrivals; inf sends all at once")
    ap.add_argument("--max-concurrency", default="none",
                    help="in-flight cap; a comma list runs one setting each (none = no cap)")
    ap.add_argument("--warmup", type=int, default=2, help="requests sent one by one before timing")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="Absolute numbers are noisy: the machine is shared with other "
                    "jobs that ran at the same time. Compare rows of one run, not runs.",
                    help="sentence appended to the doc section")
    ap.add_argument("--no-write", action="store_true", help=f"do not write the '{SECTION}' doc section")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    settings = [None if c.strip().lower() in ("none", "inf", "0") else int(c) for c in args.max_concurrency.split(",")]
    server = launch_server(args) if args.launch else None
    counts = [int(n) for n in args.num_prompts.split(",")]
    if len(counts) not in (1, len(settings)):
        raise SystemExit(f"--num-prompts: give one count or one per setting ({len(settings)}), got {counts}")
    counts = counts * len(settings) if len(counts) == 1 else counts
    backends = [b.strip() for b in args.backend.split(",")]
    for b in backends:
        if b not in ("native", "openai"):
            raise SystemExit(f"--backend: expected native or openai, got {b!r}")
    rows = []
    try:
        for j, backend in enumerate(backends):
            for i, (concurrency, num) in enumerate(zip(settings, counts)):
                # fresh prompts per row, so no row hits the radix cache with another row's prompts
                prompts = make_prompts(num + args.warmup, args.input_len, args.seed + 1000 * i + 100_000 * j)
                results, duration = asyncio.run(run_setting(
                    args, backend, prompts[:args.warmup], prompts[args.warmup:], concurrency))
                failed = [r.error for r in results if not r.ok]
                if failed:
                    print(f"{len(failed)} failed requests, first: {failed[0]}", file=sys.stderr)
                label = backend if backend == "native" else f"openai {args.openai_api}"
                rows.append(summarize([label, str(concurrency or "none")], results, duration))
                print(table(HEADERS, rows[-1:]), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    target = "our server (launched)" if args.launch else args.base_url
    body = (f"Streaming requests against {target}; {args.num_prompts} requests per row (after "
            f"{args.warmup} warm-up), ~{args.input_len}-word random prompts (input tok = measured mean), "
            f"{args.output_len} output tokens{' (ignore_eos)' if args.ignore_eos else ''}, request rate "
            f"{args.request_rate}/s, greedy. `native` streams /generate, `openai` streams /v1/"
            f"{'chat/completions' if args.openai_api == 'chat' else 'completions'}. Latencies in ms; "
            f"ITL = gap between streamed chunks; throughput counts generated tokens.\n\n"
            + table(HEADERS, rows) + "\n\n" + args.note)
    print("\n" + body)
    if not args.no_write:
        write_section(SECTION, body, "python -m benchmarks.bench_serving " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
