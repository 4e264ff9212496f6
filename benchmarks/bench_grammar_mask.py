"""Grammar mask cost: per-token `fill_bitmask` time per backend on a few schemas, and constrained
vs free decoding tokens/s on the real engine at batch 1 and 32 (jump-forward off, so every
constrained token is a decoding step with a mask).

    python -m benchmarks.bench_grammar_mask [--repeats 3] [--out-len 48] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.bench_engine import concurrent  # noqa: E402
from benchmarks.report import table, write_section  # noqa: E402

VOCAB_SIZE, EOS = 49152, 2

# (name, schema, an instance to walk)
CASES = [
    ("flat object", {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                     "required": ["name", "age"]},
     {"name": "Ada Lovelace", "age": 36}),
    ("nested + enum", {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer"},
                                                  "role": {"enum": ["admin", "user", "guest"]}},
                 "required": ["id", "role"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}}, "required": ["user"]},
     {"user": {"id": 7, "role": "admin"}, "tags": ["alpha", "beta", "gamma"]}),
    ("free-form text", {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]},
     {"summary": "The quick brown fox jumps over the lazy dog while the cat watches from the window."}),
]
DECODE_SCHEMA = {"type": "object", "properties": {
    "items": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 24}, "qty": {"type": "integer", "minimum": 0}},
        "required": ["name", "qty"], "additionalProperties": False}, "minItems": 8}},
    "required": ["items"], "additionalProperties": False}


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def mask_times(backend: str, tokenizer, vocab, repeats: int) -> list[list]:
    import torch

    from sgl_lang.runtime.grammar import GrammarRegistry
    reg = GrammarRegistry(None, VOCAB_SIZE, backend=backend, vocab=vocab)
    rows = []
    bitmask = torch.zeros(1, (VOCAB_SIZE + 31) // 32, dtype=torch.int32)
    for name, schema, instance in CASES:
        grammar = reg.compile("json_schema", json.dumps(schema))
        tokens = tokenizer.encode(json.dumps(instance, separators=(",", ":")), add_special_tokens=False)
        medians, p99s = [], []
        for _ in range(repeats):
            times, matcher = [], grammar.new_matcher()
            for t in tokens + [EOS]:
                t0 = time.perf_counter_ns()
                matcher.fill_bitmask(bitmask, 0)
                times.append((time.perf_counter_ns() - t0) / 1e3)
                assert matcher.accept_token(t), (backend, name, t)
            medians.append(statistics.median(times))
            p99s.append(pct(times, 99))
        rows.append([backend, name, len(tokens) + 1, statistics.median(medians), statistics.median(p99s)])
    reg.close()
    return rows


def decode_rows(args) -> list[list]:
    from sgl_lang.runtime.engine import Engine
    eng = Engine(disable_jump_forward=True)
    tok = eng.tokenizer
    free = {"temperature": 0, "max_new_tokens": args.out_len, "ignore_eos": True}
    constrained = {"temperature": 0, "max_new_tokens": args.out_len, "json_schema": json.dumps(DECODE_SCHEMA)}
    eng.generate("Hello", {**constrained, "max_new_tokens": 4})  # warm-up, compiles the schema
    rows = []
    for n in (1, 32):
        prompts = [tok.apply_chat_template([{"role": "user", "content": f"List {i + 8} grocery items as JSON."}],
                                           tokenize=False, add_generation_prompt=True) for i in range(n)]
        rates = {}
        for label, params in (("free", free), ("constrained", constrained)):
            samples = []
            for _ in range(args.repeats):
                eng.flush_cache()
                outs, dt = concurrent(eng, prompts, params)
                samples.append(sum(o["meta_info"]["completion_tokens"] for o in outs) / dt)
            rates[label] = statistics.median(samples)
        overhead = 100 * (rates["free"] / rates["constrained"] - 1)
        rows.append([n, rates["free"], rates["constrained"], f"{overhead:+.1f}%"])
    eng.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-len", type=int, default=48)
    ap.add_argument("--backends", default="xgrammar,outlines,llguidance,auto")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from sgl_lang.runtime.default_model import default_model_dir
    from sgl_lang.runtime.grammar import TokenVocab
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    vocab = TokenVocab.from_hf_tokenizer(tokenizer, VOCAB_SIZE, [EOS])
    mask = [r for b in args.backends.split(",") for r in mask_times(b, tokenizer, vocab, args.repeats)]
    print(table(["backend", "schema", "tokens", "mask µs median", "mask µs p99"], mask), file=sys.stderr)
    decode = decode_rows(args)
    body = (f"Per-token `fill_bitmask` time (one row of the packed int32 bitmask, vocab 49,152), walking one "
            f"compact-JSON instance per schema; median over {args.repeats} walks of each walk's median and p99. "
            f"`auto` includes the jsonschema check at points where the output could end.\n\n"
            + table(["backend", "schema", "tokens", "mask µs median", "mask µs p99"], mask)
            + f"\n\nDecoding on the engine (default model, greedy, {args.out_len} new tokens, jump-forward off), "
            f"free (ignore_eos) vs JSON-schema constrained (`auto`), output tokens/s including prefill, median of "
            f"{args.repeats} runs. Timings are noisy on this shared 2-core box (other engineers' jobs run "
            f"alongside); read differences of a few % as noise.\n\n"
            + table(["concurrent requests", "free tok/s", "constrained tok/s", "overhead"], decode))
    print(body)
    if not args.no_write:
        write_section("Grammar mask overhead (issue 4)", body,
                      "python -m benchmarks.bench_grammar_mask " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
