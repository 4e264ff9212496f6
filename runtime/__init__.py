"""sgl_lang.runtime: the local inference engine (models, paged KV pool, radix cache, scheduler)."""
from .config import EngineConfig

__all__ = ["EngineConfig", "Engine"]


def __getattr__(name):
    # Lazy so that `import sgl_lang.runtime.config` stays light.
    if name == "Engine":
        from .engine import Engine
        return Engine
    raise AttributeError(name)
