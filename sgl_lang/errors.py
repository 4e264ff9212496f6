"""Named exceptions of the frontend. Every user-facing error is one of these."""
from __future__ import annotations


class SglError(Exception):
    """Base class of every sgl_lang error."""


class InvalidArgument(SglError, ValueError):
    """An argument of the language API is malformed (bad regex, empty choices, bad dtype, ...)."""


class UnsupportedFeature(SglError, NotImplementedError):
    """The backend (or this version of sgl_lang) cannot do what the program asks."""


class BackendError(SglError, RuntimeError):
    """A backend failed to serve a request (engine error, HTTP error, malformed response)."""


class NoBackendError(SglError, RuntimeError):
    """A program ran without a backend: pass backend= or call sgl.set_default_backend()."""


class NestedRoleError(SglError, AssertionError):
    """A role began while another role was still open (SGLang raises AssertionError here)."""


class ProgramError(SglError, RuntimeError):
    """A program failed while it ran (possibly in a worker thread).

    The message includes the original traceback so nothing is lost across threads;
    `cause` is the original exception and `program_traceback` its formatted traceback.
    """

    def __init__(self, cause: BaseException, program_traceback: str, context: str = ""):
        self.cause = cause
        self.program_traceback = program_traceback
        head = f"program failed{' (' + context + ')' if context else ''}: {type(cause).__name__}: {cause}"
        super().__init__(f"{head}\n\nProgram traceback (most recent call last):\n{program_traceback}")


class TracingStopped(SglError):
    """Raised inside a traced program when it uses a value only known at run time
    (an argument in an f-string, a generated variable). The tracer stops there."""
