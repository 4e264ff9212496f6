"""Fork/join and streaming: expand two tips in parallel, then stream a summary.

    python examples/parallel_tips.py

s.fork(2) first warms the prefix cache with the shared text, so both branches reuse it.
"""
import sgl_lang as sgl


@sgl.function
def tip_suggestion(s, topic):
    s += sgl.system("You are a helpful assistant. Answer in one sentence.")
    s += sgl.user(f"Here are two short tips about {topic}: 1. Drink water. 2. Sleep enough.")
    s += sgl.assistant("Thanks, I will keep them in mind.")

    forks = s.fork(2)
    forks += lambda i: (sgl.user(f"Explain tip {i + 1} in one sentence.")
                        + sgl.assistant(sgl.gen("detail", max_tokens=40, stop="\n")))
    forks.join()  # s["detail"] is now a list, one entry per fork, in fork order

    s += sgl.user(f"Tip 1: {s['detail'][0]} Tip 2: {s['detail'][1]} Why do these tips matter?")
    s += sgl.assistant(sgl.gen("summary", max_tokens=40, stop="\n"))


def main():
    backend = sgl.Runtime()
    sgl.set_default_backend(backend)

    state = tip_suggestion.run(topic="staying healthy", temperature=0, stream=True)
    for delta in state.text_iter("summary"):  # deltas arrive while the model decodes
        print(delta, end="", flush=True)
    print()
    print("details:", state["detail"])

    backend.shutdown()


if __name__ == "__main__":
    main()
