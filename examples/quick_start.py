"""Quick start: a multi-turn chat with roles, a stop string, and a select.

    python examples/quick_start.py

Runs on the default local model (SmolLM2-135M-Instruct) through sgl.Runtime().
"""
import sgl_lang as sgl


@sgl.function
def multi_turn_question(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant. Answer in one sentence.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=48, stop="\n"))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=48, stop="\n"))
    s += sgl.user("Was your last answer about a city? Answer yes or no.")
    s += sgl.assistant(sgl.select("about_city", choices=["yes", "no"]))


def main():
    backend = sgl.Runtime()
    sgl.set_default_backend(backend)

    state = multi_turn_question.run(
        question_1="What is the capital of France?",
        question_2="Name one famous museum there.",
        temperature=0,
    )
    for message in state.messages():
        print(f"{message['role']:>9}: {message['content']}")
    print("about a city:", state["about_city"])
    print("tokens used for answer_1:", state.get_meta_info("answer_1").get("completion_tokens"))

    backend.shutdown()


if __name__ == "__main__":
    main()
