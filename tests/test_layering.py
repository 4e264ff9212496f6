"""The one-way data flow, checked on the source (STYLE.md): the runtime never imports the frontend,
kernels import only torch/triton (and their own siblings), and the frontend never imports torch
or the runtime except through sgl_lang/backend/local.py's lazy bridge."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imports_of(path: pathlib.Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a file; relative imports are skipped."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node.lineno))
    return out


def files(package_dir: str):
    return sorted((ROOT / package_dir).rglob("*.py"))


@pytest.mark.parametrize("path", files("runtime"), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_never_imports_the_frontend(path):
    for name, line in imports_of(path):
        if name == "sgl_lang" or name.startswith("sgl_lang."):
            assert name.startswith(("sgl_lang.runtime", "sgl_lang.kernels")), f"{path}:{line} imports {name}"


@pytest.mark.parametrize("path", files("kernels"), ids=lambda p: str(p.relative_to(ROOT)))
def test_kernels_import_only_torch_and_triton(path):
    # (contextlib, threading: kernels/pdl.py's per-thread launch mode, like torch's current stream)
    allowed = ("torch", "triton", "math", "typing", "__future__", "functools", "dataclasses", "os", "inspect",
               "contextlib", "threading")
    for name, line in imports_of(path):
        assert name.split(".")[0] in allowed, f"{path}:{line} imports {name}"


@pytest.mark.parametrize("path", files("sgl_lang"), ids=lambda p: str(p.relative_to(ROOT)))
def test_frontend_reaches_the_runtime_only_through_the_local_backend(path):
    for name, line in imports_of(path):
        top = name.split(".")[0]
        assert top != "torch", f"{path}:{line} imports torch"
        if name.startswith("sgl_lang.runtime"):
            assert path.name in ("local.py", "launch_server.py", "router.py"), \
                f"{path}:{line} imports {name}; only backend/local.py bridges into the runtime"
