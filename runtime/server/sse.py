"""Server-sent events: `data: {json}\\n\\n` frames ending with `data: [DONE]\\n\\n`, and merging of
several engine streams (a batch, or n > 1) into one, tagged with each stream's index.

Cancellation is the disconnect path: when the client goes away Starlette cancels the response
body, `merge_streams` cancels its reader tasks, and each engine stream's `finally` aborts its
request, which frees its KV slots."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Sequence

from fastapi.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"
_END = object()


def sse_event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def merge_streams(streams: Sequence[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """Yield (index, item) from every stream as items arrive; when this generator is closed or
    cancelled early, every unfinished stream is cancelled (and so aborted)."""
    if len(streams) == 1:  # the common case: no tasks needed
        stream = streams[0]
        try:
            async for item in stream:
                yield 0, item
        finally:
            await stream.aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item))
        except Exception as e:  # handed to the consumer, which re-raises it
            await queue.put((i, e))
        finally:
            await queue.put((i, _END))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
