"""The shared program suite through sgl.RuntimeEndpoint and sgl.OpenAI against a real server."""
import pytest

import sgl_lang as sgl
from conftest import API_KEY, wait_idle
from program_suite import ALL_PROGRAMS

pytestmark = pytest.mark.slow

# Programs whose gens/selects are not inside an assistant turn: a chat model only continues
# assistant turns (it never sees raw text), so sgl.OpenAI(is_chat_model=True) refuses them.
NEEDS_RAW_TEXT = {"prog_few_shot", "prog_regex", "prog_fork_join", "prog_gen_int"}


@pytest.fixture(scope="module")
def endpoint(server_url):
    return sgl.RuntimeEndpoint(server_url, api_key=API_KEY)


@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=lambda p: p.__name__)
def test_program_on_runtime_endpoint(program, endpoint, http):
    program(endpoint)
    wait_idle(http)


@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=lambda p: p.__name__)
def test_program_on_openai_completion_model(program, server_url):
    pytest.importorskip("openai")
    program(sgl.OpenAI("SmolLM2-135M-Instruct", base_url=server_url + "/v1", api_key=API_KEY, is_chat_model=False))


@pytest.mark.parametrize("program", ALL_PROGRAMS, ids=lambda p: p.__name__)
def test_program_on_openai_chat_model(program, server_url):
    pytest.importorskip("openai")
    if program.__name__ in NEEDS_RAW_TEXT:
        pytest.skip("gen outside an assistant turn: chat models only continue assistant turns")
    program(sgl.OpenAI("SmolLM2-135M-Instruct", base_url=server_url + "/v1", api_key=API_KEY, is_chat_model=True))


def test_chat_model_outside_assistant_turn_is_refused(server_url):
    backend = sgl.OpenAI("default", base_url=server_url + "/v1", api_key=API_KEY, is_chat_model=True)

    @sgl.function
    def raw(s):
        s += "Q: 1+1?\nA:" + sgl.gen("a", max_tokens=2)

    state = raw.run(backend=backend)
    with pytest.raises(sgl.ProgramError) as info:
        state["a"]
    assert isinstance(info.value.cause, sgl.UnsupportedFeature)


def test_endpoint_chat_template_and_select_meta(endpoint):
    template = endpoint.get_chat_template()
    assert template.role_prefix_and_suffix["user"][0] == "<|im_start|>user\n"

    @sgl.function
    def pick(s):
        s += sgl.user("Is fire hot? Answer yes or no.")
        s += sgl.assistant(sgl.select("a", choices=["yes", "no"], choices_method=sgl.unconditional_likelihood_normalized))

    state = pick.run(backend=endpoint)
    meta = state.get_meta_info("a")
    assert state["a"] in ("yes", "no") and len(meta["unconditional_token_logprobs"]) == 2


def test_openai_refusal_is_unsupported_feature(server_url):
    backend = sgl.OpenAI("default", base_url=server_url + "/v1", api_key=API_KEY, is_chat_model=False)
    with pytest.raises(sgl.UnsupportedFeature, match="guided_regex"):  # a field our server does not know
        backend.call(chat=False, extra={"guided_regex": "[0-9]+"}, model="default", prompt="N: ", max_tokens=2)
    with pytest.raises(sgl.BackendError, match="regex"):  # a bad value is an error, not a refusal
        backend.call(chat=False, extra={"regex": "[0-9"}, model="default", prompt="N: ", max_tokens=2)
