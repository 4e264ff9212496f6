"""The command line: every EngineConfig field is a flag with help text; bad values are refused
before any model loads. No server needed."""
import dataclasses
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
from sgl_lang.runtime.config import ConfigError, EngineConfig  # noqa: E402
from sgl_lang.runtime.server.args import ENGINE_FLAG_HELP, build_parser, parse_args  # noqa: E402


def test_every_engine_field_is_a_flag_with_help():
    help_text = build_parser().format_help()
    for f in dataclasses.fields(EngineConfig):
        if f.name == "extra":
            continue
        assert "--" + f.name.replace("_", "-") in help_text, f.name
        assert f.name in ENGINE_FLAG_HELP, f"no help text for {f.name}"
    for flag in ("--api-key", "--max-request-bytes", "--max-concurrent-requests", "--log-level", "--port"):
        assert flag in help_text


def test_parse_args_splits_engine_and_server_flags():
    engine, server = parse_args(["--model-path", "/m", "--disable-radix-cache", "--max-running-requests", "8",
                                 "--port", "31999", "--api-key", "k", "--log-level", "info"])
    assert engine["model_path"] == "/m" and engine["disable_radix_cache"] is True
    assert engine["max_running_requests"] == 8 and engine["log_level"] == "info"
    assert (server.port, server.api_key, server.host) == (31999, "k", "127.0.0.1")
    EngineConfig.from_kwargs(**engine)


@pytest.mark.parametrize("argv", [["--grammar-backend", "nope"], ["--max-running-requests", "0"],
                                  ["--log-level", "loud"], ["--port", "70000"]])
def test_bad_flag_values_are_refused(argv):
    with pytest.raises(ConfigError):
        parse_args(argv)


def test_cli_exits_with_a_message_on_bad_flags():
    out = subprocess.run([sys.executable, "-m", "sgl_lang.launch_server", "--grammar-backend", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "grammar_backend" in out.stderr


def test_frontend_modules_import_without_server_deps():
    code = ("import sys, sgl_lang, sgl_lang.launch_server, sgl_lang.backend.runtime_endpoint, "
            "sgl_lang.backend.openai_select; bad = [m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
