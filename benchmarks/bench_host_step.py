"""Host (Python/CPU) time per decode step of the Engine, split by component, on the default model.

On a GPU the decode graph of a small model runs in ~1.7 ms at batch 64, so whatever the host does
per step (schedule, build the batch, read back, process outputs, release) decides throughput.
This measures that host work on any machine: every step's wall time minus the model forward and
sampling (device work on a GPU; here timed and subtracted), with overlap scheduling on so the
GPU's code path runs. Only steps that decode the whole batch count; each figure is the median
over those steps, then the median over --repeat runs. A second table repeats it all with the
forward stubbed (StubModel), which is closer to a GPU host: on a CPU the real forward flushes the
caches the host work then runs in.

    python -m benchmarks.bench_host_step [--batch-sizes 1,16,64] [--out-len 64] [--repeat 3] [--no-write] [--stub-only]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import defaultdict

import torch

from benchmarks.report import table, write_section

# (label, owner attribute of the engine, method): host components, timed by wrapping the method
COMPONENTS = [
    ("schedule", "scheduler", "schedule"),
    ("build batch", "runner", "_prepare"),
    ("sampling info", "runner", "_sampling_info"),
    ("commit", "scheduler", "commit"),
    ("collect", "runner", "collect"),
    ("process outputs", "processor", "process"),
    ("finish step", "scheduler", "finish_step"),
]
DEVICE = "model + sampling"  # excluded from host time
HEADERS = (["workload"] + [c[0] for c in COMPONENTS]
           + ["other (step glue)", "host total", "host per request", f"{DEVICE} (excluded)"])


class StepTimer:
    """Wraps the engine's step and its components; keeps per-step times (seconds) of full-decode
    steps of `batch_size` requests."""

    def __init__(self, engine):
        self.engine = engine
        self.batch_size = 0
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self._is_full_decode = False
        for label, owner, name in COMPONENTS:
            self._wrap(getattr(engine, owner), name, label)
        self._wrap(engine.runner, "_sample", DEVICE)
        self.model = engine.runner.model = _TimedModel(engine.runner.model, self)
        self._wrap(engine, "step", "step")

    def _wrap(self, obj, name: str, label: str) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0)
                if label == "schedule":
                    self._note_batch()
        setattr(obj, name, timed)

    def _note_batch(self) -> None:
        """Whether the step just scheduled decodes every request of the batch being measured."""
        running = self.engine.scheduler.running
        self._is_full_decode = len(running) == self.batch_size and all(
            r.extend_len == 1 for r in running)

    def add(self, label: str, seconds: float) -> None:
        if label != "step":
            self.current[label] += seconds
            return
        if self._is_full_decode and self.current:
            self.current["step"] = seconds
            self.steps.append(dict(self.current))
        self.current = defaultdict(float)
        self._is_full_decode = False


class StubModel:
    """Stands in for the model: no forward, logits read from a fixed random table over a small
    vocabulary. The host path runs unchanged, without a 270 MB forward flushing the CPU caches
    before every step (which a GPU's host does not suffer)."""

    def __init__(self, vocab: int = 2048, rows: int = 4096):
        self.table = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0))  # [rows, vocab]

    def __call__(self, fb, pool, attn):
        return fb.input_ids  # [T]: stands in for the hidden states

    def compute_logits(self, hidden):
        return self.table[hidden % self.table.shape[0]]  # [n, vocab] f32


class _TimedModel:
    """The model, with its forward and logits counted as device work."""

    def __init__(self, model, timer: StepTimer):
        self.model, self._timer = model, timer

    def __call__(self, *args):
        t0 = time.perf_counter()
        out = self.model(*args)
        self._timer.add(DEVICE, time.perf_counter() - t0)
        return out

    def compute_logits(self, hidden):
        t0 = time.perf_counter()
        out = self.model.compute_logits(hidden)
        self._timer.add(DEVICE, time.perf_counter() - t0)
        return out


def run_batch(engine, prompts: list[str], params: list[dict], stream: bool) -> None:
    """Queue every prompt (with its params) at once and wait until all finished."""
    from sgl_lang.runtime.sampling_params import SamplingParams
    left = [len(prompts)]
    done = threading.Event()
    lock = threading.Lock()
    outputs = []

    def on_output(o):
        outputs.append(o)
        if o.finished:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
    for p, d in zip(prompts, params):
        req = engine.make_request(p, SamplingParams.from_dict(d), stream=stream)
        req.on_output = on_output
        engine.add_request(req)
    done.wait()


def request_params(bs: int, out_len: int, stop: tuple, is_sampled: bool) -> list[dict]:
    """Greedy, or sampled: temperature 0.8, top-p 0.9, every other request seeded."""
    base = {"temperature": 0, "max_new_tokens": out_len, "ignore_eos": True, "stop": list(stop)}
    if not is_sampled:
        return [base] * bs
    return [dict(base, temperature=0.8, top_p=0.9, seed=1000 + i if i % 2 else None)
            for i in range(bs)]


def measure(engine, timer: StepTimer, bs: int, out_len: int, stream: bool, stop: tuple,
            is_sampled: bool, repeat: int) -> dict[str, float]:
    """Median µs per step of each component (and 'host', 'step') over `repeat` runs."""
    tok = engine.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me a story about {i} cats."}],
                                       tokenize=False, add_generation_prompt=True) for i in range(bs)]
    params = request_params(bs, out_len, stop, is_sampled)
    runs = []
    for _ in range(repeat + 1):  # the first run warms up
        engine.flush_cache()
        timer.batch_size, timer.steps = bs, []
        run_batch(engine, prompts, params, stream)
        steps = timer.steps
        if not steps:
            raise RuntimeError(f"no full-decode step of batch {bs} was seen")
        med = {k: statistics.median(s.get(k, 0.0) for s in steps) * 1e6
               for k in [c[0] for c in COMPONENTS] + [DEVICE, "step"]}
        med["host"] = statistics.median((s["step"] - s.get(DEVICE, 0.0)) for s in steps) * 1e6
        runs.append(med)
    return {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--out-len", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--stub-only", action="store_true", help="only the stubbed table (no write)")
    args = ap.parse_args()
    from sgl_lang.runtime.engine import Engine

    engine = Engine(dtype=args.dtype, overlap_schedule="on")
    timer = StepTimer(engine)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    workloads = [(f"bs {bs}", bs, False, (), False) for bs in sizes]
    workloads.append((f"bs {sizes[-1]}, streaming + stop string", sizes[-1], True, ("<|never|>",), False))
    workloads += [(f"bs {bs}, sampled", bs, False, (), True) for bs in sizes]
    tables = []
    for stub in ((True,) if args.stub_only else (False, True)):
        if stub:
            timer.model.model = StubModel()
        rows = []
        for name, bs, stream, stop, is_sampled in workloads:
            m = measure(engine, timer, bs, args.out_len, stream, stop, is_sampled, args.repeat)
            other = m["host"] - sum(m[c[0]] for c in COMPONENTS)
            rows.append([name] + [m[c[0]] for c in COMPONENTS]
                        + [other, m["host"], m["host"] / bs, m[DEVICE]])
            print("stub" if stub else "model", name, {k: round(v, 1) for k, v in m.items()}, flush=True)
        tables.append(table(HEADERS, rows))
    engine.shutdown()
    if args.stub_only:
        print(tables[0])
        return

    body = (f"Default model (SmolLM2-135M-Instruct), dtype {args.dtype}, overlap_schedule on, greedy "
            f"(\"sampled\": temperature 0.8, top-p 0.9, every other request seeded), ignore_eos, "
            f"{args.out_len} new tokens per request; host µs per full-decode step "
            f"(median over steps, then over {args.repeat} runs). Host = step wall time minus the "
            f"model forward and sampling.\n\n{tables[0]}\n\n"
            f"The same with the forward stubbed (`StubModel`: logits from a fixed table over a 2k "
            f"vocabulary), so no forward flushes the CPU caches before each step, as on a GPU "
            f"host:\n\n{tables[1]}\n")
    print(body)
    if not args.no_write:
        write_section("Host time per decode step", body,
                      "python -m benchmarks.bench_host_step " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
