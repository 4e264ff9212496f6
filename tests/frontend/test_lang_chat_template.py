"""Chat templates: the registry, model-path matching, LLAMA2 style, and derivation from a
tokenizer's own renderer (SmolLM2's real ChatML template, which injects a system prompt)."""
import pytest

from sgl_lang.chat_template import (ChatTemplate, get_chat_template, get_chat_template_by_model_path,
                                    list_chat_templates)
from sgl_lang.errors import InvalidArgument

# SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}")


def jinja_render(source):
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Template(source)
    return lambda messages: template.render(messages=messages)


def test_registry_has_the_common_templates():
    for name in ["default", "chatml", "qwen", "llama-3-instruct", "mistral", "llama-2-chat", "vicuna_v1.1"]:
        assert name in list_chat_templates()
    assert get_chat_template("qwen").default_system_prompt == "You are a helpful assistant."
    assert get_chat_template("chatml").stop_str == ("<|im_end|>",)


def test_unknown_template_lists_the_names():
    with pytest.raises(InvalidArgument, match="chatml"):
        get_chat_template("nope")


@pytest.mark.parametrize("path,name", [
    ("Qwen/Qwen2-7B-Instruct", "qwen"), ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-instruct"),
    ("TinyLlama/TinyLlama-1.1B-Chat", "chatml"), ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
    ("some/unknown-model", "default"),
])
def test_model_path_matching(path, name):
    assert get_chat_template_by_model_path(path).name == name


def test_get_prompt_renders_a_conversation():
    t = get_chat_template("chatml")
    prompt = t.get_prompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"


def test_llama2_style_folds_system_into_first_user_turn():
    t = get_chat_template("llama-2-chat")
    prompt = t.get_prompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert prompt == "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]"


def test_from_render_fn_on_smollm2_template():
    t = ChatTemplate.from_render_fn("smollm2-tokenizer", jinja_render(SMOLLM2_TEMPLATE))
    assert t.default_system_prompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert t.role_prefix_and_suffix == {r: (f"<|im_start|>{r}\n", "<|im_end|>\n")
                                        for r in ("system", "user", "assistant")}
    assert t.stop_str == ("<|im_end|>",)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}]
    assert t.get_prompt(messages) == jinja_render(SMOLLM2_TEMPLATE)(messages)


def test_from_render_fn_separates_a_bos_prefix():
    t = ChatTemplate.from_render_fn("llama3-tokenizer", jinja_render(LLAMA3_TEMPLATE))
    assert t.document_prefix == "<|begin_of_text|>"
    assert t.default_system_prompt is None
    assert t.role_prefix_and_suffix["user"] == ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>")
    assert t.role_prefix_and_suffix["system"][0] == "<|start_header_id|>system<|end_header_id|>\n\n"
    assert t.stop_str == ("<|eot_id|>",)


def test_from_render_fn_without_system_support():
    def render(messages):
        if any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        return "".join(f"<turn {m['role']}>{m['content']}</turn>\n" for m in messages)

    t = ChatTemplate.from_render_fn("nosys", render)
    assert t.role_prefix_and_suffix["system"] == ("", "")
    assert t.role_prefix_and_suffix["assistant"] == ("<turn assistant>", "</turn>\n")


def test_from_render_fn_rejects_a_renderer_that_drops_content():
    with pytest.raises(InvalidArgument, match="dropped or altered"):
        ChatTemplate.from_render_fn("bad", lambda messages: "constant")
