"""sgl_lang.runtime.router: data-parallel replicas behind a cache-aware HTTP router.

RouterConfig (flags) -> create_router_app (FastAPI front) -> Dispatcher (forward, retry, stream
relay) -> Policy (prefix / round_robin / least_load, over PrefixTree) -> WorkerSet (health, load).
LocalReplicas spawns `--dp-size N` servers. Importing this package loads no web framework."""
from .config import POLICIES, RouterConfig, RouterConfigError
from .policy import LeastLoad, Policy, PrefixAffinity, RoundRobin, RouteDecision, make_policy
from .prefix_tree import PrefixTree

__all__ = ["POLICIES", "RouterConfig", "RouterConfigError", "Policy", "PrefixAffinity", "RoundRobin",
           "LeastLoad", "RouteDecision", "make_policy", "PrefixTree"]
