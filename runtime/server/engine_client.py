"""EngineClient: the HTTP layer's one door into the Engine. Runs batches and streams, maps engine
exceptions to ApiError (400 for bad input, 503 when the engine stopped), turns a request that
finished with an error (a grammar that does not compile) into an HTTP error, and feeds metrics."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Optional, Sequence

from ..errors import EngineStopped, InvalidRequest
from ..grammar.base import GrammarError
from .api_error import ENGINE_ERRORS, ApiError, from_engine_error
from .metrics import ServerMetrics

_GRAMMAR_FIELDS = ("regex", "json_schema", "ebnf")
_MAX_TOKENS_KEYS = ("max_new_tokens", "max_tokens")  # SamplingParams.from_dict accepts both


def output_error(out: dict, sampling: Optional[dict], prefix: str = "sampling_params.") -> Optional[ApiError]:
    """The ApiError for an engine output that carries `error`, else None."""
    message = out.get("error")
    if not message:
        return None
    if "grammar" in message:
        field = next((k for k in _GRAMMAR_FIELDS if (sampling or {}).get(k)), None)
        param = prefix + field if field else None
        return ApiError(400, f"{param or 'grammar'}: {message}", param=param)
    return ApiError(500, message, type="server_error")


def grammar_error(e: GrammarError, sampling: Sequence[dict], prefix: str) -> ApiError:
    """A grammar spec the engine refused up front (invalid regex, schema that is not JSON)."""
    field = next((k for sp in sampling for k in _GRAMMAR_FIELDS if (sp or {}).get(k)), None)
    param = prefix + field if field else None
    return ApiError(400, f"{param or 'grammar'}: {e}", param=param)


class EngineClient:
    def __init__(self, engine, metrics: ServerMetrics):
        self.engine = engine
        self.metrics = metrics

    async def generate(self, prompts: Sequence[Any], sampling: Sequence[dict], *,
                       renames: Optional[dict] = None, error_prefix: str = "sampling_params.",
                       **logprob_kwargs: Any) -> list[dict]:
        """One batched engine call; prompts are strings or token-id lists. Raises ApiError."""
        self._check_max_new_tokens(sampling, renames)
        try:
            outs = await self.engine.async_generate(list(prompts), list(sampling), **logprob_kwargs)
        except GrammarError as e:
            raise grammar_error(e, sampling, error_prefix) from None
        except ENGINE_ERRORS as e:
            raise from_engine_error(e, renames) from None
        except EngineStopped as e:
            raise ApiError(503, f"engine is not running: {e}", type="server_error") from None
        for out in outs:
            self.metrics.count_output(out["meta_info"])
        for out, sp in zip(outs, sampling):
            err = output_error(out, sp, error_prefix)
            if err is not None:
                raise err
        return outs

    async def open_streams(self, prompts: Sequence[Any], sampling: Sequence[dict], *,
                           renames: Optional[dict] = None, error_prefix: str = "sampling_params.",
                           **logprob_kwargs: Any) -> list[AsyncIterator[dict]]:
        """One engine stream per prompt, all validated before any is queued (a stream queues its
        request on first iteration). Per-prompt logprob options may be lists."""
        self._check_max_new_tokens(sampling, renames)
        streams = []
        try:
            for i, (prompt, sp) in enumerate(zip(prompts, sampling)):
                kw = {k: (v[i] if isinstance(v, list) else v) for k, v in logprob_kwargs.items()}
                streams.append(await self.engine.async_generate(prompt, sp, stream=True, **kw))
        except GrammarError as e:
            raise grammar_error(e, sampling, error_prefix) from None
        except ENGINE_ERRORS as e:
            raise from_engine_error(e, renames) from None
        except EngineStopped as e:
            raise ApiError(503, f"engine is not running: {e}", type="server_error") from None
        return [self._counted(s) for s in streams]

    def _check_max_new_tokens(self, sampling: Sequence[dict], renames: Optional[dict]) -> None:
        """An output limit above the context window can never be reached: refuse it (as SGLang does)
        instead of queueing a request that runs to the end of the window."""
        limit = self.engine.max_context_len
        for sp in sampling:
            for key in _MAX_TOKENS_KEYS:
                value = (sp or {}).get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                    raise from_engine_error(InvalidRequest(
                        f"sampling_params.max_new_tokens: must be <= {limit} (the context window), "
                        f"got {value}"), renames)

    async def _counted(self, stream: AsyncIterator[dict]) -> AsyncIterator[dict]:
        finished = False
        try:
            async for out in stream:
                if out["meta_info"].get("finish_reason") is not None:
                    finished = True
                    self.metrics.count_output(out["meta_info"])
                yield out
        finally:
            if not finished:  # the client went away: closing the engine stream aborts the request
                self.metrics.count_disconnect()
            await stream.aclose()

    async def stats(self) -> dict:
        return await asyncio.to_thread(self.engine.get_stats)

    async def flush_cache(self) -> bool:
        return await asyncio.to_thread(self.engine.flush_cache)
