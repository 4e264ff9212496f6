"""launch_server: parse flags, load the engine, serve the app with uvicorn until SIGTERM/SIGINT.

Shutdown is graceful: the listening socket closes at once, in-flight requests get up to
`--graceful-shutdown-timeout` seconds to finish, what is left is cancelled (a cancelled stream
aborts its engine request, freeing its KV slots), the engine stops, and the process exits 0."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Optional, Sequence

from ..config import ConfigError
from .args import parse_args

logger = logging.getLogger("sgl_lang.server")

_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _graceful_server_class(state, engine):
    import asyncio

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn.Server that returns normally after a signal-triggered graceful shutdown
        (uvicorn's own re-raises the signal afterwards, which kills the process with 143 / a
        KeyboardInterrupt traceback instead of exit code 0). A second SIGINT still forces exit."""

        def handle_exit(self, sig, frame):
            state.is_shutting_down = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None):
            await super().shutdown(sockets)
            # Stop the engine while the event loop still runs: the requests it fails report to
            # their (still open) loop instead of calling into a closed one.
            await asyncio.to_thread(engine.shutdown)
            self.has_stopped_engine = True

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SHUTDOWN_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def launch_server(argv: Optional[Sequence[str]] = None) -> None:
    try:
        engine_flags, server_args = parse_args(argv)
    except ConfigError as e:
        print(f"sgl-lang-server: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    import uvicorn

    from ..engine import Engine
    from .http_server import create_app

    logging.basicConfig(level=server_args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = Engine(**engine_flags)
    logger.info("loaded %s in %.1fs", engine.model_dir, engine.load_time)
    app = create_app(engine, server_args)
    config = uvicorn.Config(app, host=server_args.host, port=server_args.port, log_level=server_args.log_level,
                            timeout_keep_alive=30, timeout_graceful_shutdown=server_args.graceful_shutdown_timeout)
    server = _graceful_server_class(app.state.server, engine)(config)
    server.has_stopped_engine = False
    try:
        server.run()
    finally:
        if not server.has_stopped_engine:  # Engine.shutdown is not idempotent: call it once
            engine.shutdown()
    logger.info("server stopped")
