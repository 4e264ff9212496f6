"""ApiError: every 4xx/5xx the server sends, as OpenAI's error object
`{"error": {"message", "type", "param", "code"}}`, and the helpers that turn engine and pydantic
exceptions into one with a message that names the offending field."""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import InvalidRequest, InvalidSamplingParams

_FIELD_AT_START = re.compile(r"^([A-Za-z_][\w.\[\]]*):")


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None,
                 type: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code

    def body(self) -> dict:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param,
                               "code": self.code if self.code is not None else self.status}
        return {"error": err}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: Optional[str] = None) -> ApiError:
    return ApiError(400, message, param=param)


def from_engine_error(e: ValueError, renames: Optional[dict] = None) -> ApiError:
    """InvalidRequest / InvalidSamplingParams -> 400; the message's leading `field:` becomes `param`.
    `renames` maps engine names to the route's own (e.g. sampling_params.max_new_tokens -> max_tokens)."""
    message = str(e)
    for old, new in (renames or {}).items():
        message = message.replace(old, new)
    m = _FIELD_AT_START.match(message)
    return ApiError(400, message, param=m.group(1) if m else None)


def from_validation_error(e: Any, prefix: str = "") -> ApiError:
    """A pydantic ValidationError -> 400 naming the first bad field (`messages[0].role: ...`)."""
    parts = []
    first = None
    for err in e.errors():
        loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        first = first or loc
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
        else:
            got = err.get("input")
            shown = json.dumps(got)[:80] if isinstance(got, (int, float, str, bool, type(None))) else type(got).__name__
            parts.append(f"{loc}: {err['msg']} (got {shown})")
    return ApiError(400, "; ".join(parts[:5]), param=first)


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 400 that says why it is not."""
    raw = await request.body()
    if not raw:
        raise bad_request("request body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise bad_request(f"malformed JSON body: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"malformed JSON body: {e}") from None
    except RecursionError:  # `[[[[...` thousands deep: refuse it rather than crash the parser
        raise bad_request("malformed JSON body: nested too deeply") from None


def expect_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request(f"request body must be a JSON object, got {type(body).__name__}")
    return body


ENGINE_ERRORS = (InvalidRequest, InvalidSamplingParams)
