"""Grammar coverage on real-world JSON schemas (JSONSchemaBench): per backend, how many schemas
compile, compile time, per-token mask time, and whether valid / invalid instances are judged right.

    python -m benchmarks.bench_grammar_coverage --sample 400 [--backends auto,llguidance,...]

No test instances ship with the schemas, so we make them: VALID ones with hypothesis-jsonschema
(bounded per schema; schemas it cannot handle are counted and skipped) that `jsonschema` accepts,
INVALID ones by mutating valid ones (drop a required key, wrong type, out-of-range number, extra
property, enum violation, ...) keeping only mutants `jsonschema` rejects. Each instance, written as
compact JSON, is tokenized with SmolLM2's tokenizer and walked token by token through a fresh
matcher: accepted = every token and then EOS accepted. A schema is "fully correct" when it compiled,
every valid instance was accepted and every invalid one rejected. Compiles and walks run in a child
process with a per-schema timeout (outlines-core can hang for minutes); a timeout counts as a
compile failure.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import unicodedata
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "jsonschemabench")
if not os.path.isdir(DATA):
    DATA = "/work/shared/data/jsonschemabench"
SPLITS = ("Github_trivial", "Github_easy", "Glaiveai2K", "Snowplow")
BACKENDS = ("xgrammar", "outlines", "llguidance", "auto")
EOS, VOCAB_SIZE = 2, 49152


# ---- instances ------------------------------------------------------------------------------

def compact(x) -> str:
    """Compact JSON with raw UTF-8: llguidance and outlines-core refuse `\\u00e9`-style escapes of
    characters that can be written as they are (only control characters may be escaped)."""
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def validator_for(schema):
    import jsonschema
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _is_plain_text(text: str) -> bool:
    """Characters a model writes: printable, assigned, no control characters but newline and tab."""
    return all(c in "\n\t" or (c >= " " and unicodedata.category(c) not in ("Cc", "Cn", "Co", "Cs"))
               for c in text)


def _is_plain(x) -> bool:
    if isinstance(x, str):
        return _is_plain_text(x)
    if isinstance(x, dict):
        return all(_is_plain_text(k) and _is_plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_is_plain(v) for v in x)
    return True


def _property_ranks(schema) -> dict[str, int]:
    """Property name -> first position in the schema text (declaration order)."""
    ranks: dict[str, int] = {}

    def visit(node):
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for k in props:
                    ranks.setdefault(k, len(ranks))
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)
    visit(schema)
    return ranks


def in_schema_order(x, ranks: dict[str, int]):
    """Keys in declaration order, undeclared ones after: the order every grammar engine emits
    (they all fix the property order), so an instance in another order says nothing about them."""
    if isinstance(x, dict):
        keys = sorted(x, key=lambda k: ranks.get(k, len(ranks)))
        return {k: in_schema_order(x[k], ranks) for k in keys}
    if isinstance(x, list):
        return [in_schema_order(v, ranks) for v in x]
    return x


def valid_instances(schema, num: int) -> list:
    """Up to `num` distinct instances drawn by hypothesis-jsonschema that jsonschema accepts."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis_jsonschema import from_schema
    # ASCII text: hypothesis otherwise fills strings with unassigned astral-plane code points and
    # C1 controls that no model emits and that llguidance's string rules refuse.
    strategy = from_schema(schema, allow_x00=False, codec="ascii")
    seen: dict[str, object] = {}

    @settings(max_examples=num * 8, database=None, deadline=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        seen.setdefault(compact(x), x)

    collect()
    check, ranks = validator_for(schema), _property_ranks(schema)
    ordered = sorted(seen.items(), key=lambda kv: -len(kv[0]))  # richest first
    good = [in_schema_order(x, ranks) for _, x in ordered if _is_plain(x)]
    good = list({compact(x): x for x in good if check.is_valid(x)}.values())
    random.Random(0).shuffle(good)
    return good[:num]


_OTHER_TYPES = ["zz", 123456789, -7.5, True, None, {}, [], {"zz": 1}, [1, "a"]]


def _mutants(x, rng: random.Random):
    """Yield mutated copies of x: one change at one place."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))
    walk(x, ())
    rng.shuffle(paths)
    for path in paths:
        for _ in range(3):
            y = copy.deepcopy(x)
            parent, key = (None, None) if not path else (_get(y, path[:-1]), path[-1])
            node = y if parent is None else parent[key]
            new = _mutate(node, rng)
            if new is _DELETE:
                if parent is None:
                    continue
                del parent[key]
            elif parent is None:
                y = new
            else:
                parent[key] = new
            yield y


_DELETE = object()


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _mutate(node, rng: random.Random):
    r = rng.random()
    if isinstance(node, dict) and r < 0.6:
        if node and r < 0.35:
            k = rng.choice(list(node))
            return {kk: v for kk, v in node.items() if kk != k}  # drop a (maybe required) key
        return {**node, rng.choice(["zz_extra", "x", "id"]): rng.choice([1, "v"])}
    if isinstance(node, list) and r < 0.6:
        if node and r < 0.3:
            return node[:-1]
        return node + (node[-1:] if node and r < 0.45 else [rng.choice(_OTHER_TYPES)])
    if isinstance(node, bool) and r < 0.5:
        return not node
    if isinstance(node, (int, float)) and not isinstance(node, bool) and r < 0.7:
        return rng.choice([node + 1, node - 1, node * 1000 + 1e6, -abs(node) - 1e6, node + 0.5])
    if isinstance(node, str) and r < 0.6:
        return rng.choice(["", node + "x" * 40, "not-valid!", node[:1], node.upper() + "Q"])
    if r < 0.7:
        return rng.choice(_OTHER_TYPES)
    return _DELETE


def invalid_instances(schema, valid: list, num: int, seed: int = 0) -> list:
    """Up to `num` distinct mutants of valid instances that jsonschema rejects."""
    check, rng, out, seen = validator_for(schema), random.Random(seed), [], set()
    for x in valid:
        tries = 0
        for y in _mutants(x, rng):
            tries += 1
            text = compact(y)
            if text not in seen and not check.is_valid(y):
                seen.add(text)
                out.append(y)
                break
            if tries > 60:
                break
        if len(out) >= num:
            break
    return out


# ---- walking instances through a matcher -------------------------------------------------------

def walk(grammar, tokens: list[int], bitmask=None, mask_us: list | None = None) -> bool:
    """Feed tokens then EOS; True when every one was accepted. Optionally time fill_bitmask."""
    matcher = grammar.new_matcher()
    for t in tokens + [EOS]:
        if bitmask is not None:
            t0 = time.perf_counter_ns()
            matcher.fill_bitmask(bitmask, 0)
            mask_us.append((time.perf_counter_ns() - t0) / 1e3)
        if not matcher.accept_token(t):
            return False
    return True


@dataclass
class SchemaResult:
    name: str
    compiled: bool = False
    error: str = ""
    compile_ms: float = 0.0
    used: str = ""  # the backend that compiled it (auto: which one won; +relaxed)
    valid_ok: list = field(default_factory=list)
    invalid_rejected: list = field(default_factory=list)
    mask_us: list = field(default_factory=list)

    @property
    def is_fully_correct(self) -> bool:
        return self.compiled and all(self.valid_ok) and all(self.invalid_rejected)


def judge(registry, name: str, schema_text: str, valid_toks, invalid_toks) -> SchemaResult:
    import torch
    res = SchemaResult(name)
    t0 = time.perf_counter()
    try:
        grammar = registry.compile("json_schema", schema_text)
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"[:300]
        return res
    res.compile_ms = (time.perf_counter() - t0) * 1e3
    res.compiled = True
    res.used = grammar.backend_name + ("+relaxed" if getattr(grammar, "is_relaxed", False) else "")
    bitmask = torch.zeros(1, (VOCAB_SIZE + 31) // 32, dtype=torch.int32)
    res.valid_ok = [walk(grammar, t, bitmask if i == 0 else None, res.mask_us)
                    for i, t in enumerate(valid_toks)]
    res.invalid_rejected = [not walk(grammar, t) for t in invalid_toks]
    return res


# ---- a child process with a timeout ------------------------------------------------------------

class TimedWorker:
    """Runs fn(*args) in a forked child; a call that overruns its timeout kills the child (a fresh
    one is forked for the next call) and raises TimeoutError."""

    def __init__(self, setup):
        self._setup = setup  # called once in each child; its result is passed to every fn
        self._proc = None

    def _start(self):
        parent, child = mp.get_context("fork").Pipe()
        self._proc = mp.get_context("fork").Process(target=self._serve, args=(child,), daemon=True)
        self._proc.start()
        self._conn = parent

    def _serve(self, conn):
        state = self._setup()
        while True:
            fn, args = conn.recv()
            try:
                conn.send((True, fn(state, *args)))
            except Exception as e:  # handed back to the parent
                conn.send((False, f"{type(e).__name__}: {e}"[:300]))

    def call(self, fn, args, timeout: float):
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((fn, args))
        if not self._conn.poll(timeout):
            self.close()
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        is_ok, value = self._conn.recv()
        if not is_ok:
            raise RuntimeError(value)
        return value

    def close(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._proc = None


def _make_instances(_state, schema_text, num_valid, num_invalid):
    schema = json.loads(schema_text)
    valid = valid_instances(schema, num_valid)
    return valid, invalid_instances(schema, valid, num_invalid)


def _judge(registry, name, schema_text, valid_toks, invalid_toks):
    return judge(registry, name, schema_text, valid_toks, invalid_toks)


# ---- the run -----------------------------------------------------------------------------------

def load_schemas(sample: int, seed: int) -> list[tuple[str, str]]:
    names = sorted(f"{s}/{f}" for s in SPLITS for f in os.listdir(os.path.join(DATA, s)) if f.endswith(".json"))
    if sample and sample < len(names):
        names = sorted(random.Random(seed).sample(names, sample))
    return [(n, open(os.path.join(DATA, n)).read()) for n in names]


def build_instances(schemas, num_valid, num_invalid, timeout) -> dict:
    """name -> {"valid": [...], "invalid": [...]} or {"skip": reason}; cached on disk."""
    from sgl_lang.runtime.default_model import cache_root
    path = os.path.join(cache_root(), f"grammar_bench_instances_v4_{num_valid}_{num_invalid}.json")
    cache = json.load(open(path)) if os.path.exists(path) else {}
    todo = [(n, s) for n, s in schemas if n not in cache]
    worker = TimedWorker(lambda: None)
    for i, (name, text) in enumerate(todo):
        try:
            valid, invalid = worker.call(_make_instances, (text, num_valid, num_invalid), timeout)
            cache[name] = {"valid": valid, "invalid": invalid} if valid else {"skip": "no valid instance"}
        except (TimeoutError, RuntimeError) as e:
            cache[name] = {"skip": str(e)[:200]}
        if i % 25 == 24 or i == len(todo) - 1:
            print(f"  instances: {i + 1}/{len(todo)}", file=sys.stderr, flush=True)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            json.dump(cache, open(path, "w"))
    worker.close()
    return {n: cache[n] for n, _ in schemas}


def run_backend(name, schemas, instances, tokenize, vocab, timeout) -> list[SchemaResult]:
    from sgl_lang.runtime.grammar import GrammarRegistry
    worker = TimedWorker(lambda: GrammarRegistry(None, VOCAB_SIZE, backend=name, vocab=vocab))
    results = []
    for i, (sname, text) in enumerate(schemas):
        inst = instances.get(sname, {})
        valid = [tokenize(compact(x)) for x in inst.get("valid", [])]
        invalid = [tokenize(compact(x)) for x in inst.get("invalid", [])]
        try:
            results.append(worker.call(_judge, (sname, text, valid, invalid), timeout))
        except TimeoutError as e:
            results.append(SchemaResult(sname, error=f"timeout: {e}"))
        except RuntimeError as e:
            results.append(SchemaResult(sname, error=str(e)))
        if i % 100 == 99:
            print(f"  {name}: {i + 1}/{len(schemas)}", file=sys.stderr, flush=True)
    worker.close()
    return results


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def summarize(name, results, instances) -> list:
    with_inst = [r for r in results if "valid" in instances.get(r.name, {})]
    compiled = [r for r in results if r.compiled]
    valid = [ok for r in with_inst if r.compiled for ok in r.valid_ok]
    invalid = [ok for r in with_inst if r.compiled for ok in r.invalid_rejected]
    fully = sum(r.is_fully_correct for r in with_inst)
    masks = [m for r in compiled for m in r.mask_us]
    share = lambda xs: f"{100 * sum(xs) / max(1, len(xs)):.1f}%"  # noqa: E731
    return [name, f"{100 * len(compiled) / len(results):.1f}%", share(valid), share(invalid),
            f"{100 * fully / max(1, len(with_inst)):.1f}%",
            f"{pct([r.compile_ms for r in compiled], 50):.1f} / {pct([r.compile_ms for r in compiled], 99):.0f}",
            f"{pct(masks, 50):.1f} / {pct(masks, 99):.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=400, help="schemas drawn at random (0 = all 4,497)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--num-valid", type=int, default=6)
    ap.add_argument("--num-invalid", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per schema (compile + walk)")
    ap.add_argument("--dump", default="", help="write per-schema results (JSON lines) here")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from sgl_lang.runtime.default_model import default_model_dir
    from sgl_lang.runtime.grammar import TokenVocab

    from benchmarks.report import table, write_section
    tok = AutoTokenizer.from_pretrained(default_model_dir())
    vocab = TokenVocab.from_hf_tokenizer(tok, VOCAB_SIZE, [EOS])
    tokenize = lambda text: tok.encode(text, add_special_tokens=False, split_special_tokens=True)  # noqa: E731
    schemas = load_schemas(args.sample, args.seed)
    print(f"{len(schemas)} schemas; making instances", file=sys.stderr)
    instances = build_instances(schemas, args.num_valid, args.num_invalid, args.timeout)
    with_inst = [n for n, _ in schemas if "valid" in instances[n]]
    num_valid = sum(len(instances[n]["valid"]) for n in with_inst)
    num_invalid = sum(len(instances[n]["invalid"]) for n in with_inst)
    rows, dump = [], open(args.dump, "w") if args.dump else None
    for name in args.backends.split(","):
        t0 = time.perf_counter()
        results = run_backend(name, schemas, instances, tokenize, vocab, args.timeout)
        rows.append(summarize(name, results, instances))
        print(rows[-1], f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if name == "auto":
            used = statistics.multimode([r.used for r in results if r.compiled] or ["-"])
            counts = {u: sum(r.used == u for r in results) for u in {r.used for r in results if r.compiled}}
            print(f"  auto picked: {counts} (most: {used})", file=sys.stderr)
        for r in results if dump else ():
            dump.write(json.dumps({"backend": name, **r.__dict__, "mask_us": len(r.mask_us)}) + "\n")
    headers = ["backend", "compiled", "valid accepted", "invalid rejected", "schemas fully correct",
               "compile ms p50 / p99", "mask µs p50 / p99"]
    body = (f"{len(schemas)} schemas drawn at random (seed {args.seed}) from the 4 JSONSchemaBench splits; "
            f"instances for {len(with_inst)} of them ({len(schemas) - len(with_inst)} skipped: "
            f"hypothesis-jsonschema could not generate for them or timed out): {num_valid} valid "
            f"(hypothesis-jsonschema, checked by jsonschema with format checking), {num_invalid} invalid "
            f"(mutants jsonschema rejects). Compact JSON, SmolLM2 tokenizer, walked token by token then EOS. "
            f"Valid/invalid/fully-correct are over schemas with instances; a schema that fails to compile "
            f"counts as not fully correct; valid accepted / invalid rejected are over compiled schemas. "
            f"Per-schema timeout {args.timeout:.0f} s (counted as a compile failure). Mask time: "
            f"`fill_bitmask` per token on the first valid instance of each schema.\n\n"
            + table(headers, rows))
    print(body)
    if not args.no_write:
        write_section("Grammar coverage (issue 4)", body,
                      "python -m benchmarks.bench_grammar_coverage " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
