"""install_openapi: serve `/openapi.json` with the real request bodies of the POST routes.

The routes read raw JSON (so that malformed bodies get our own 400s), which leaves FastAPI's
generated schema without request bodies. This fills them in from the same pydantic models the
routes validate with, so clients and fuzzers (schemathesis) see what the server accepts. The
schema sits behind the API key like every route but /health.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from ..sampling_params import SamplingParams
from .native_protocol import GenerateReqInput
from .openai_protocol import ChatCompletionRequest, CompletionRequest

_REF = "#/components/schemas/{model}"


def sampling_params_schema() -> dict:
    """JSON schema of /generate's `sampling_params` object (SamplingParams' fields, `n` included)."""
    schema = TypeAdapter(SamplingParams).json_schema(ref_template=_REF)
    schema["properties"].pop("extra", None)
    schema["additionalProperties"] = False
    schema.pop("required", None)
    return schema


def _body(model: Any, components: dict) -> dict:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    name = model.__name__
    components[name] = schema
    return {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=name)}}}}


def _generate_model_schema(components: dict) -> None:
    """GenerateReqInput takes `sampling_params` as a free dict; document its real fields."""
    sp = sampling_params_schema()
    components["SamplingParams"] = sp
    ref = {"$ref": _REF.format(model="SamplingParams")}
    prop = components["GenerateReqInput"]["properties"]["sampling_params"]
    prop.clear()
    prop.update({"anyOf": [ref, {"type": "array", "items": ref}, {"type": "null"}],
                 "title": "Sampling Params"})


def install_openapi(app: FastAPI) -> None:
    bodies = {"/generate": GenerateReqInput, "/v1/completions": CompletionRequest,
              "/v1/chat/completions": ChatCompletionRequest}

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version="0.1.0", routes=app.routes,
                             description="sgl-lang server: SGLang's native API and OpenAI-compatible routes")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            for method, op in schema["paths"].get(path, {}).items():
                if method in ("post", "put"):
                    op["requestBody"] = _body(model, components)
        _generate_model_schema(components)
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        schema["paths"].get("/health", {}).get("get", {})["security"] = []  # open route
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
