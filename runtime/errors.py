"""Named exceptions of the runtime."""
from .sampling_params import InvalidSamplingParams


class InvalidRequest(ValueError):
    """A request is malformed (empty prompt, prompt too long, bad logprob options...)."""


class EngineStopped(RuntimeError):
    """The engine was shut down (or its loop died) before the request finished."""


__all__ = ["InvalidRequest", "InvalidSamplingParams", "EngineStopped"]
