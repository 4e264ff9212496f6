"""The examples run end to end, with sgl.Runtime swapped for the scripted backend."""
import pathlib
import runpy

import pytest

import sgl_lang as sgl
from scripted_backend import ScriptedBackend

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, monkeypatch, capsys):
    monkeypatch.setattr(sgl, "Runtime", lambda *a, **k: ScriptedBackend(), raising=False)
    monkeypatch.setattr(sgl.global_config, "default_backend", None)
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_there_are_examples():
    assert len(EXAMPLES) >= 2
