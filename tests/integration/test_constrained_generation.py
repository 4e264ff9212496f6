"""Constrained generation on the real default model: every output validates / fullmatches.

One Engine (grammar_backend="auto") for the module; each group of specs is generated as one batch
(greedy), so the file stays within a couple of minutes on a 2-core CPU.
"""
import json
import os
import random
import re

import pytest

pytestmark = pytest.mark.slow
jsonschema = pytest.importorskip("jsonschema")

BENCH = "/work/shared/data/jsonschemabench"

SCHEMAS = {
    "nested object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "address": {"type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 20},
                                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city", "zip"], "additionalProperties": False}},
        "required": ["name", "address"], "additionalProperties": False},
    "array with bounds": {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                "minItems": 2, "maxItems": 4}},
        "required": ["tags"], "additionalProperties": False},
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]},
                       "size": {"type": "string", "enum": ["S", "M", "L", "XL"]}},
        "required": ["color", "size"], "additionalProperties": False},
    "optional fields": {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 25},
                       "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
                       "rating": {"type": "number", "minimum": 0, "maximum": 10}},
        "required": ["title"], "additionalProperties": False},
    "string formats": {
        "type": "object",
        "properties": {"born": {"type": "string", "format": "date"},
                       "email": {"type": "string", "format": "email", "maxLength": 40}},
        "required": ["born", "email"], "additionalProperties": False},
    "numbers with ranges": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99},
                       "score": {"type": "number", "minimum": -1.5, "maximum": 1.5},
                       "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000}},
        "required": ["age", "score", "count"], "additionalProperties": False},
    "anyOf": {
        "type": "object",
        "properties": {"id": {"anyOf": [{"type": "integer", "minimum": 0},
                                        {"type": "string", "pattern": "^id-[a-z]{3}$"}]},
                       "ok": {"type": "boolean"}},
        "required": ["id", "ok"], "additionalProperties": False},
    "array of objects": {
        "type": "array", "minItems": 1, "maxItems": 3,
        "items": {"type": "object",
                  "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                  "required": ["x", "y"], "additionalProperties": False}},
}

REGEXES = {
    "date": r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
    "ipv4": r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    "enum": r"(yes|no|maybe)",
    "phone": r"\(\d{3}\) \d{3}-\d{4}",
    "email": r"[a-z]{1,10}@[a-z]{1,10}\.(com|org|net)",
    "hex color": r"#[0-9a-f]{6}",
}


def chat(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="module")
def engine():
    from sgl_lang.runtime.engine import Engine
    eng = Engine(grammar_backend="auto")
    yield eng
    eng.shutdown()


def test_json_schemas_always_validate(engine):
    names = list(SCHEMAS)
    prompts = [chat(engine.tokenizer, f"Give an example of {n} as JSON.") for n in names]
    params = [{"json_schema": json.dumps(SCHEMAS[n]), "max_new_tokens": 160, "temperature": 0}
              for n in names]
    outs = engine.generate(prompts, params)
    for name, out in zip(names, outs):
        assert out["meta_info"]["finish_reason"]["type"] == "stop", (name, out)
        jsonschema.validate(json.loads(out["text"]), SCHEMAS[name],
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_sampled_outputs_validate_too(engine):
    schema = SCHEMAS["numbers with ranges"]
    prompts = [chat(engine.tokenizer, f"Person {i} as JSON.") for i in range(4)]
    params = {"json_schema": json.dumps(schema), "max_new_tokens": 60, "temperature": 1.0, "seed": 7}
    for out in engine.generate(prompts, params):
        jsonschema.validate(json.loads(out["text"]), schema)


def test_regexes_always_fullmatch(engine):
    names = list(REGEXES)
    prompts = [chat(engine.tokenizer, f"Write a {n}.") for n in names]
    params = [{"regex": REGEXES[n], "max_new_tokens": 40, "temperature": 0} for n in names]
    for name, out in zip(names, engine.generate(prompts, params)):
        assert re.fullmatch(REGEXES[name], out["text"]), (name, out["text"])


@pytest.mark.skipif(not os.path.isdir(BENCH), reason="jsonschemabench data not present")
def test_real_world_schemas_validate_when_finished(engine):
    names = sorted(f"{s}/{f}" for s in ("Github_trivial", "Github_easy", "Glaiveai2K", "Snowplow")
                   for f in os.listdir(os.path.join(BENCH, s)))
    picked = random.Random(4).sample(names, 12)
    schemas = [open(os.path.join(BENCH, n)).read() for n in picked]
    prompts = [chat(engine.tokenizer, "Fill in this JSON schema with an example:\n" + s[:600])
               for s in schemas]
    # a repetition penalty keeps the 135M model from looping inside long strings and numbers
    params = [{"json_schema": s, "max_new_tokens": 192, "temperature": 0, "repetition_penalty": 1.3}
              for s in schemas]
    outs = engine.generate(prompts, params)
    num_checked = 0
    for name, schema, out in zip(picked, schemas, outs):
        reason = out["meta_info"]["finish_reason"]
        if reason["type"] != "stop":
            continue  # ran out of tokens, or a schema no backend compiles (abort with a message)
        schema = json.loads(schema)
        cls = jsonschema.validators.validator_for(schema)
        cls(schema, format_checker=cls.FORMAT_CHECKER).validate(json.loads(out["text"]))
        num_checked += 1
    # A 135M model often runs long on big schemas; what finishes must validate, and some must finish.
    assert num_checked >= 3, f"only {num_checked} of 12 finished with a stop"
