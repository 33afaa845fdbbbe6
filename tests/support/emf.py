"""Reading and checking Embedded Metric Format lines: CloudWatch's published JSON schema
(tests/fixtures/emf-schema.json) plus the rules the specification states in prose and the
schema cannot: every reference names a root member, a dimension's value is a string, a
metric's a number (or an array of at most 100 numbers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "emf-schema.json").read_text())
_validator = jsonschema.Draft7Validator(SCHEMA)


def problems(doc: Any) -> list[str]:
    """What makes ``doc`` an invalid EMF document; empty when it is valid."""
    found = [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
             for e in _validator.iter_errors(doc)]  # fmt: skip
    if found:
        return found
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                if not isinstance(doc.get(name), str):
                    found.append(f"dimension {name}: no string member of that name")
        for metric in directive["Metrics"]:
            value = doc.get(metric["Name"])
            numbers = value if isinstance(value, list) else [value]
            if len(numbers) > 100 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in numbers
            ):
                found.append(f"metric {metric['Name']}: not a number or list of numbers")
    return found


def metric_lines(text: str) -> list[dict[str, Any]]:
    """The EMF documents among ``text``'s lines (a worker's log: Celery's lines around them)."""
    docs = []
    for raw in text.splitlines():
        if raw.startswith('{"_aws"'):
            docs.append(json.loads(raw))
    return docs
