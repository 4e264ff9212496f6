"""JSON extraction: read a generated invoice and fill a JSON schema (constrained decoding). The
instructions and the worked example are shared; the schema's keys and punctuation are what
jump-forward can emit without running the model.

    python -m benchmarks.programs.json_extract --num-requests 8 [--disable-jump-forward]
"""
from __future__ import annotations

import json

import sgl_lang as sgl

from .cli import main
from .data_records import INVOICE_SCHEMA, invoices
from .workload import Workload

SCHEMA_TEXT = json.dumps(INVOICE_SCHEMA)
_EXAMPLE = invoices(1, seed=12345)[0]
INSTRUCTIONS = (
    "You extract fields from business documents into JSON. Use the vendor name as written, the "
    "customer's full name, the issue date as YYYY-MM-DD, the amount due as a number, and paid=false "
    "unless the document says it was paid.\n\nExample document:\n" + _EXAMPLE.document + "\n\nExample JSON:\n"
    + json.dumps({"vendor": _EXAMPLE.vendor, "customer": _EXAMPLE.customer, "date": _EXAMPLE.date,
                  "total": _EXAMPLE.total, "paid": False}, separators=(",", ":")))


@sgl.function
def extract_invoice(s, document):
    s += sgl.system(INSTRUCTIONS)
    s += sgl.user("Document:\n" + document)
    s += sgl.assistant(sgl.gen("json", max_tokens=96, json_schema=SCHEMA_TEXT))


def make_batch(num: int, seed: int) -> list[dict]:
    return [{"document": inv.document} for inv in invoices(num, seed)]


def is_valid(state, args: dict) -> bool:
    try:
        value = json.loads(state["json"])
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == set(INVOICE_SCHEMA["required"])


WORKLOAD = Workload("json_extract", "invoice -> JSON with a 5-field schema (json_schema constraint)",
                    extract_invoice, make_batch, is_valid, {"temperature": 0.0}, default_num_requests=8)

if __name__ == "__main__":
    main(WORKLOAD)
