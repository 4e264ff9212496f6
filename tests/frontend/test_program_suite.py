"""The backend-agnostic program suite, run against the scripted backend (and its no-score variant,
where select falls back to constrained generation)."""
import pytest

from program_suite import ALL_PROGRAMS
from scripted_backend import ScriptedBackend


@pytest.mark.parametrize("supports_score", [True, False], ids=["score", "no-score"])
@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=lambda p: p.__name__)
def test_program_on_scripted_backend(program, supports_score):
    program(ScriptedBackend(supports_score=supports_score, stream_delay=0.001))
