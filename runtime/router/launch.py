"""`python -m sgl_lang.router`: parse flags, optionally spawn `--dp-size N` local replicas, then
serve the router with uvicorn until interrupted (local replicas are stopped with it).

    python -m sgl_lang.router --worker http://10.0.0.1:30000 --worker http://10.0.0.2:30000 --port 8000
    python -m sgl_lang.router --dp-size 2 --port 8000 --num-threads 1     # engine flags go to replicas
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from typing import Optional, Sequence

from .config import LOG_LEVELS, POLICIES, RouterConfig, RouterConfigError

_HELP = {
    "host": "bind address of the router (default loopback only)",
    "port": "TCP port of the router",
    "policy": f"routing policy, one of {POLICIES}; prefix = cache-aware, falling back to least load",
    "cache_threshold": "prefix policy: follow a worker's cache when it saw at least this fraction of the prompt",
    "balance_abs_threshold": "prefix policy: loads count as uneven when max - min in-flight exceeds this ...",
    "balance_rel_threshold": "... and max exceeds this multiple of min; then route by least load",
    "chunk_len": "characters (or tokens) per node of the router's prefix tree",
    "max_chunks_per_worker": "prefix-tree nodes remembered per worker (LRU beyond)",
    "health_check_interval_s": "seconds between /health checks of every worker",
    "health_check_timeout_s": "timeout of one health check",
    "connect_timeout_s": "timeout to connect to a worker",
    "request_timeout_s": "timeout of one forwarded request (default: none)",
    "max_retries": "other workers tried when one fails before anything was streamed",
    "log_level": f"router log level, one of {LOG_LEVELS}",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sgl_lang.router", allow_abbrev=False,
        description="Cache-aware HTTP router over sgl-lang (or SGLang) server replicas. Flags it does not "
                    "know are engine flags, passed to the replicas that --dp-size spawns.")
    parser.add_argument("--worker", dest="worker_urls", action="append", default=[], metavar="URL",
                        help="a worker's base URL (repeat for each); may be combined with --dp-size")
    parser.add_argument("--dp-size", type=int, default=0,
                        help="spawn this many local server replicas on free ports and route to them")
    parser.add_argument("--replica-host", default="127.0.0.1", help="bind address of spawned replicas")
    parser.add_argument("--gpus-per-replica", type=int, default=None,
                        help="GPUs pinned to each spawned replica (default: visible GPUs split evenly, 0 on CPU)")
    parser.add_argument("--replica-start-timeout", type=float, default=600.0,
                        help="seconds to wait for spawned replicas to become healthy")
    for f in dataclasses.fields(RouterConfig):
        if f.name == "worker_urls":
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).replace("Optional[", "").rstrip("]"), str)
        choices = POLICIES if f.name == "policy" else LOG_LEVELS if f.name == "log_level" else None
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default,
                            choices=choices, help=f"{_HELP.get(f.name, f.name)} (default: {f.default})")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    """-> (router namespace, engine argv for spawned replicas). Raises RouterConfigError."""
    ns, engine_argv = build_parser().parse_known_args(argv)
    if engine_argv and ns.dp_size < 1:
        raise RouterConfigError(f"unrecognized arguments {engine_argv} (engine flags need --dp-size N)")
    if engine_argv:  # validate the replicas' flags here, before any process starts
        from ..config import ConfigError
        from ..server.args import parse_args as parse_server_args
        try:
            parse_server_args(engine_argv)
        except (ConfigError, SystemExit) as e:
            raise RouterConfigError(f"invalid engine flags {engine_argv}: {e}") from None
    if ns.dp_size < 0:
        raise RouterConfigError(f"dp_size must be >= 0, got {ns.dp_size}")
    return ns, engine_argv


def router_config(ns: argparse.Namespace, extra_urls: Sequence[str] = ()) -> RouterConfig:
    names = {f.name for f in dataclasses.fields(RouterConfig)} - {"worker_urls"}
    return RouterConfig(worker_urls=tuple(ns.worker_urls) + tuple(extra_urls),
                        **{k: v for k, v in vars(ns).items() if k in names})


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        ns, engine_argv = parse_args(argv)
        if ns.dp_size == 0:
            router_config(ns)  # validate before anything starts
    except RouterConfigError as e:
        print(f"sgl_lang.router: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request otherwise
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that the
    # `finally` below still stops the local replicas
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    import uvicorn

    from .app import create_router_app
    from .replicas import LocalReplicas

    replicas = None
    if ns.dp_size:
        replicas = LocalReplicas(ns.dp_size, engine_argv, ns.replica_host, ns.gpus_per_replica)
    try:
        urls = replicas.start(ns.replica_start_timeout) if replicas else []
        app = create_router_app(router_config(ns, urls))
        uvicorn.run(app, host=ns.host, port=ns.port, log_level=ns.log_level, timeout_keep_alive=30)
    finally:
        if replicas is not None:
            replicas.stop()
