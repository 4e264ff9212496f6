"""run_batch with a progress bar, JSON-schema and regex constrained generation.

    python examples/batch_json.py
"""
import json

import sgl_lang as sgl

CITY_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20},
                   "country": {"type": "string", "maxLength": 20},
                   "is_capital": {"type": "boolean"}},
    "required": ["name", "country", "is_capital"],
    "additionalProperties": False,
}


@sgl.function
def describe_city(s, city):
    s += sgl.system("You answer with JSON only.")
    s += sgl.user(f"Describe {city} with the keys name, country and is_capital.")
    s += sgl.assistant(sgl.gen("info", max_tokens=64, json_schema=json.dumps(CITY_SCHEMA)))
    s += sgl.user(f"In which year was {city} founded? Answer with a year.")
    s += sgl.assistant(sgl.gen("year", max_tokens=8, regex=r"-?[0-9]{1,4}"))


def main():
    backend = sgl.Runtime()
    sgl.set_default_backend(backend)

    cities = ["Paris", "Osaka", "Lima", "Nairobi"]
    states = describe_city.run_batch([{"city": c} for c in cities], temperature=0, progress_bar=True)
    for city, state in zip(cities, states):
        info = json.loads(state["info"])
        print(f"{city:>8}: {info}  founded: {state['year']}")

    backend.shutdown()


if __name__ == "__main__":
    main()
