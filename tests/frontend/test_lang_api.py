"""api.py: constructors build IR nodes and reject bad arguments with named errors."""
import json
import subprocess
import sys

import pytest

import sgl_lang as sgl
from sgl_lang.errors import InvalidArgument, NoBackendError, UnsupportedFeature
from sgl_lang.ir import REGEX_INT, ExprList, Gen, RoleBegin, RoleEnd, Select, Text


def test_gen_builds_a_node_with_params():
    node = sgl.gen("answer", 16, stop="\n", temperature=0.5)
    assert isinstance(node, Gen) and node.name == "answer"
    assert node.params.max_new_tokens == 16 and node.params.stop == ("\n",)
    assert node.params.temperature == 0.5 and node.params.top_p is None  # None inherits
    assert "max_new_tokens=16" in repr(node)


def test_gen_with_choices_is_a_select():
    node = sgl.gen("c", choices=["a", "b"])
    assert isinstance(node, Select) and node.choices == ("a", "b")
    assert node.choices_method is sgl.token_length_normalized and node.temperature == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(regex="(unclosed"), "invalid regex"),
    (dict(dtype="complex"), "dtype"),
    (dict(temperature=-0.1), "temperature"),
    (dict(max_tokens=-1), "max_tokens"),
    (dict(max_tokens=4, min_tokens=5), "min_tokens"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(stop=3), "stop"),
    (dict(json_schema="{not json"), "json_schema"),
    (dict(regex="a", json_schema="{}"), "mutually exclusive"),
    (dict(choices=["a"], regex="a"), "cannot be combined"),
])
def test_gen_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        sgl.gen("x", **kwargs)


def test_invalid_argument_is_a_value_error():
    with pytest.raises(ValueError):
        sgl.gen("x", temperature=-1)


def test_dtype_accepts_types_and_names():
    assert sgl.gen("x", dtype=int).params.dtype == "int"
    assert sgl.gen("x", dtype="bool").params.dtype == "bool"
    assert sgl.gen_int("n").params.dtype == "int" and sgl.gen_string("t").params.dtype == "str"


def test_json_schema_dict_is_serialised():
    node = sgl.gen("j", json_schema={"type": "object"})
    assert json.loads(node.params.json_schema) == {"type": "object"}


@pytest.mark.parametrize("choices,match", [(None, "needs choices"), ([], "empty"), ("ab", "list of str"),
                                           (["a", 1], "must be a str")])
def test_select_rejects_bad_choices(choices, match):
    with pytest.raises(InvalidArgument, match=match):
        sgl.select("x", choices=choices)


def test_select_rejects_negative_temperature_and_bad_method():
    with pytest.raises(InvalidArgument):
        sgl.select("x", ["a"], temperature=-1)
    with pytest.raises(InvalidArgument, match="choices_method"):
        sgl.select("x", ["a"], choices_method="greedy")


def test_roles_build_begin_expr_end():
    node = sgl.user("hi " + sgl.gen("x"))
    assert node.items[0] == RoleBegin("user") and node.items[-1] == RoleEnd("user")
    assert node.items[1] == Text("hi ")
    assert sgl.system().items == (RoleBegin("system"), RoleEnd("system"))
    assert sgl.assistant_begin() == RoleBegin("assistant") and sgl.user_end() == RoleEnd("user")


def test_expressions_concatenate_flat():
    expr = "A: " + sgl.gen("a") + "\nB: " + sgl.gen("b")
    assert isinstance(expr, ExprList) and len(expr.items) == 4


def test_stop_regex_and_image_are_named_unsupported():
    with pytest.raises(UnsupportedFeature):
        sgl.gen("x", stop_regex="a+")
    with pytest.raises(UnsupportedFeature):
        sgl.image("cat.png")


def test_function_requires_s_first():
    with pytest.raises(InvalidArgument, match="named 's'"):
        @sgl.function
        def bad(state, x):
            pass


def test_function_with_num_api_spec_tokens_is_accepted():
    @sgl.function(num_api_spec_tokens=64)
    def prog(s):
        s += "x"
    assert prog.num_api_spec_tokens == 64


def test_backend_helpers_without_backend(monkeypatch):
    monkeypatch.setattr(sgl.global_config, "default_backend", None)
    assert sgl.flush_cache() is False
    assert sgl.get_server_info() is None

    @sgl.function
    def prog(s):
        s += "x"
    with pytest.raises(NoBackendError, match="set_default_backend"):
        prog.run()


def test_default_backend_and_runtime_unwrapping(monkeypatch):
    from scripted_backend import ScriptedBackend
    backend = ScriptedBackend()

    class FakeRuntime:  # a Runtime-like object that is not a backend itself
        endpoint = backend

    sgl.set_default_backend(FakeRuntime())
    try:
        assert sgl.flush_cache() is True
        assert sgl.get_server_info()["backend"] == "scripted"
    finally:
        sgl.set_default_backend(None)


def test_public_surface_and_no_torch_on_import():
    code = ("import sys, sgl_lang as sgl\n"
            "assert 'torch' not in sys.modules, 'importing sgl_lang imported torch'\n"
            "missing = [n for n in sgl.__all__ if n not in ('Runtime', 'RuntimeEndpoint', 'OpenAI') "
            "and not hasattr(sgl, n)]\n"
            "assert not missing, missing\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_int_regex_constant_matches_sglang():
    assert REGEX_INT == r"[-+]?[0-9]+[ \n]*"


def test_gen_ebnf_is_carried_and_exclusive():
    import pytest as _pytest
    import sgl_lang as sgl
    from sgl_lang.errors import InvalidArgument
    g = sgl.gen("x", ebnf='root ::= "a"')
    assert g.params.ebnf == 'root ::= "a"'
    with _pytest.raises(InvalidArgument, match="mutually exclusive"):
        sgl.gen("x", regex="a", ebnf='root ::= "a"')
    with _pytest.raises(InvalidArgument, match="ebnf"):
        sgl.gen("x", ebnf="  ")
