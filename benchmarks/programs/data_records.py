"""Deterministic generated data for the structured workloads: invoice-like documents (JSON
extraction), server log lines (regex-shaped records) and a small world for the ReAct agent.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

_VENDORS = ("Acme Tools", "Northwind Traders", "Blue Harbor Supply", "Granite Office", "Pine Street Books",
            "Orbit Electronics", "Maple Dairy", "Summit Outdoor")
_CUSTOMERS = ("Alice Moreau", "Bilal Khan", "Chen Wei", "Dana Novak", "Emeka Obi", "Freya Lund",
              "Gustavo Ruiz", "Hana Sato")
_ITEMS = ("stapler", "notebook", "desk lamp", "cable", "backpack", "kettle", "chair", "printer paper",
          "headphones", "water bottle")
_CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Denver", "Krakow", "Montreal", "Perth")


@dataclass(frozen=True)
class Invoice:
    document: str
    vendor: str
    customer: str
    date: str  # YYYY-MM-DD
    total: float


def invoices(num: int, seed: int) -> list[Invoice]:
    rng = random.Random(f"{seed}-invoices")
    out = []
    for i in range(num):
        vendor, customer, city = rng.choice(_VENDORS), rng.choice(_CUSTOMERS), rng.choice(_CITIES)
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        lines, total = [], 0.0
        for item in rng.sample(_ITEMS, rng.randint(2, 4)):
            qty, price = rng.randint(1, 5), rng.randint(2, 90) + rng.choice((0, 0.5, 0.99))
            total += qty * price
            lines.append(f"- {qty} x {item} at ${price:.2f} each")
        total = round(total, 2)
        document = (f"INVOICE No. {1000 + i}\nIssued by {vendor}, {city} office, on {date}.\n"
                    f"Bill to: {customer}\nItems:\n" + "\n".join(lines) + f"\nAmount due: ${total:.2f}\n"
                    f"Payment within 30 days. Thank you for your business.")
        out.append(Invoice(document, vendor, customer, date, total))
    return out


INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string", "maxLength": 32},
        "customer": {"type": "string", "maxLength": 32},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
    },
    "required": ["vendor", "customer", "date", "total", "paid"],
    "additionalProperties": False,
}

# ---- log lines -> records ---------------------------------------------------------------------

LEVELS = ("INFO", "WARN", "ERROR")
_EVENTS = ("user login", "disk almost full", "request timed out", "cache refreshed", "payment declined",
           "config reloaded", "connection reset", "backup finished")


@dataclass(frozen=True)
class LogLine:
    text: str
    date: str
    ip: str
    level: str


def log_lines(num: int, seed: int) -> list[LogLine]:
    rng = random.Random(f"{seed}-logs")
    out = []
    for _ in range(num):
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        level = rng.choice(LEVELS)
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        text = f"[{date} {clock}] {level.lower()}: {rng.choice(_EVENTS)} (client {ip}, pid {rng.randint(100, 9999)})"
        out.append(LogLine(text, date, ip, level))
    return out


# one regex for a whole record: literal scaffolding (what jump-forward can skip) around the fields
RECORD_REGEX = (r"date: \d{4}-\d{2}-\d{2}\n"
                r"ip: (25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\n"
                r"level: (INFO|WARN|ERROR)\n"
                r"severity_score: [1-5]\n")

# ---- a scripted world for the ReAct agent -------------------------------------------------------


@dataclass(frozen=True)
class AgentTask:
    question: str
    facts: dict  # search term -> observation text
    answer: str


def agent_tasks(num: int, seed: int) -> list[AgentTask]:
    rng = random.Random(f"{seed}-agent")
    out = []
    for _ in range(num):
        person, city = rng.choice(_CUSTOMERS), rng.choice(_CITIES)
        country = {"Lisbon": "Portugal", "Oslo": "Norway", "Nairobi": "Kenya", "Osaka": "Japan",
                   "Denver": "United States", "Krakow": "Poland", "Montreal": "Canada", "Perth": "Australia"}[city]
        facts = {person: f"{person} is an engineer who lives in {city}.",
                 city: f"{city} is a city in {country}."}
        out.append(AgentTask(f"In which country does {person} live?", facts, country))
    return out


def observe(facts: dict, action: str, argument: str) -> str:
    """The scripted environment: Search looks the argument up in the task's facts."""
    if action != "Search":
        return "Unknown action."
    key = argument.strip().strip('"').lower()
    for term, fact in facts.items():
        if key and (term.lower() in key or key in term.lower()):
            return fact
    return "No results. Try searching for a person or a city."
