"""launch_server: parse flags, load the engine, serve the app with uvicorn until interrupted."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from ..config import ConfigError
from .args import parse_args

logger = logging.getLogger("sgl_lang.server")


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
    try:
        uvicorn.run(app, host=server_args.host, port=server_args.port, log_level=server_args.log_level,
                    timeout_keep_alive=30)
    finally:
        engine.shutdown()
