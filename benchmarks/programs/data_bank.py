"""Deterministic generated data for the prompt-heavy workloads: an MMLU-style question bank, a
HellaSwag-style bank of situations with candidate endings, and chat topics. Same seed, same data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

LETTERS = "ABCD"
SUBJECTS = ("arithmetic", "unit conversion", "calendar reasoning", "geometry")


@dataclass(frozen=True)
class MCQuestion:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # one of LETTERS

    def render(self, with_answer: bool) -> str:
        lines = [f"Question: {self.question}"]
        lines += [f"{letter}. {opt}" for letter, opt in zip(LETTERS, self.options)]
        lines.append(f"Answer: {self.answer}" if with_answer else "Answer:")
        return "\n".join(lines)


def _question(rng: random.Random, subject: str) -> MCQuestion:
    if subject == "arithmetic":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        text, right = f"What is {a} plus {b}?", a + b
    elif subject == "unit conversion":
        m = rng.randint(2, 40)
        text, right = f"How many centimetres are there in {m} metres?", m * 100
    elif subject == "calendar reasoning":
        w = rng.randint(2, 12)
        text, right = f"How many days are there in {w} weeks?", w * 7
    else:
        s = rng.randint(2, 30)
        text, right = f"What is the perimeter of a square whose side is {s} units long?", 4 * s
    wrong = set()
    while len(wrong) < 3:
        w = right + rng.choice([-1, 1]) * rng.randint(1, 12)
        if w != right and w > 0:
            wrong.add(w)
    options = [right, *sorted(wrong)]
    rng.shuffle(options)
    return MCQuestion(subject, text, tuple(str(o) for o in options), LETTERS[options.index(right)])


def question_bank(subject: str, num: int, seed: int) -> list[MCQuestion]:
    """`num` questions of one subject; the first ones serve as the k-shot examples."""
    rng = random.Random(f"{seed}-{subject}")
    return [_question(rng, subject) for _ in range(num)]


# ---- HellaSwag-style situations ---------------------------------------------------------------

_ACTORS = ("A chef", "A gardener", "A cyclist", "A student", "A carpenter", "A swimmer", "A painter",
           "A climber", "A baker", "A runner")
_SCENES = {
    "kitchen": ("chops an onion on a wooden board", "wipes the knife clean", "slides the pieces into a hot pan"),
    "garden": ("digs a small hole in the soil", "places a young plant in it", "presses the earth down firmly"),
    "road": ("pumps up the front tyre", "checks the brakes", "clips on a helmet"),
    "library": ("opens a thick textbook", "underlines a sentence", "writes a note in the margin"),
    "workshop": ("measures a plank twice", "marks a line with a pencil", "lines up the saw on the mark"),
    "pool": ("adjusts the goggles", "steps onto the starting block", "bends forward with arms stretched"),
}
_WRONG_ENDINGS = ("starts singing to the ceiling fan.", "orders a pizza for the neighbours.",
                  "falls asleep on a pile of laundry.", "paints the cat bright green.",
                  "reads the weather report aloud to a lamp.", "throws a shoe into the sea.",
                  "counts the clouds over the mountains.", "builds a sandcastle on the sofa.",
                  "sends a letter to the moon.", "juggles three oranges at once.")
_RIGHT_ENDINGS = {
    "kitchen": "stirs the onions until they turn golden.", "garden": "waters the new plant gently.",
    "road": "rides off down the road.", "library": "turns the page and keeps reading.",
    "workshop": "saws carefully along the line.", "pool": "dives into the water.",
}


@dataclass(frozen=True)
class Situation:
    context: str
    endings: tuple[str, ...]
    label: int  # index of the sensible ending


def situations(num: int, num_choices: int, seed: int) -> list[Situation]:
    rng = random.Random(f"{seed}-hellaswag")
    out = []
    for _ in range(num):
        actor = rng.choice(_ACTORS)
        scene = rng.choice(sorted(_SCENES))
        a, b, c = _SCENES[scene]
        context = f"{actor} {a}. Then the person {b}. After that, the person {c}. Finally, the person"
        endings = rng.sample(_WRONG_ENDINGS, num_choices - 1)
        label = rng.randrange(num_choices)
        endings.insert(label, _RIGHT_ENDINGS[scene])
        out.append(Situation(context, tuple(" " + e for e in endings), label))
    return out


# ---- chat topics --------------------------------------------------------------------------------

_TOPICS = ("the water cycle", "how bread rises", "why leaves change colour", "how a bicycle gear works",
           "the phases of the moon", "how bees make honey", "why the sky is blue", "how a compass works",
           "how volcanoes form", "why we have seasons", "how rainbows appear", "how a lighthouse works")
_FOLLOW_UPS = ("Can you say that more simply?", "Give one example.", "Why does that matter?",
               "What is a common misconception about it?", "Summarise it in one sentence.",
               "How would you explain it to a child?")


def chat_sessions(num: int, num_turns: int, seed: int) -> list[list[str]]:
    """Each session: an opening question followed by follow-up questions."""
    rng = random.Random(f"{seed}-chat")
    sessions = []
    for _ in range(num):
        topic = rng.choice(_TOPICS)
        turns = [f"Explain {topic}."] + [rng.choice(_FOLLOW_UPS) for _ in range(num_turns - 1)]
        sessions.append(turns)
    return sessions
