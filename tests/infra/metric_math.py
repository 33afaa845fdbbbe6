"""A small evaluator of CloudWatch metric math, for the subset the alarms use (numbers, query
ids, + - * /, comparisons, AND, OR, IF, FILL), and of an alarm's state over a series of
periods: enough to check an alarm's expression against a recorded series in a test.

Semantics follow CloudWatch's documentation: arithmetic with a missing point is missing, FILL
replaces missing points, a comparison is 1 or 0, IF(c, a, b) picks per point. A missing
returned point is "notBreaching" (treat_missing_data of every alarm here)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Series = list[float | None]
TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(==|!=|>=|<=|[-+*/(),<>]))")
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le,
    ">": operator.gt, "<": operator.lt,
}  # fmt: skip


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read {text[pos:]!r}")
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


class Evaluator:
    def __init__(self, text: str, values: Mapping[str, Series], length: int) -> None:
        self.toks, self.i, self.values, self.n = tokens(text), 0, values, length

    def run(self) -> Series:
        result = self.or_()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.i]!r}")
        return result

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.toks[self.i]
        if expected is not None and tok != expected:
            raise ValueError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def zip(self, a: Series, b: Series, f: Callable[[float, float], float | None]) -> Series:
        return [None if x is None or y is None else f(x, y) for x, y in zip(a, b, strict=True)]

    def or_(self) -> Series:
        left = self.and_()
        while self.peek() == "OR":
            self.take()
            left = self.zip(left, self.and_(), lambda x, y: float(bool(x) or bool(y)))
        return left

    def and_(self) -> Series:
        left = self.cmp()
        while self.peek() == "AND":
            self.take()
            left = self.zip(left, self.cmp(), lambda x, y: float(bool(x) and bool(y)))
        return left

    def cmp(self) -> Series:
        left = self.add()
        op = self.peek()
        if op in COMPARE:
            self.take()
            f = COMPARE[op]
            left = self.zip(left, self.add(), lambda x, y: float(f(x, y)))
        return left

    def add(self) -> Series:
        left = self.mul()
        while self.peek() in ("+", "-"):
            op = self.take()
            left = self.zip(left, self.mul(), operator.add if op == "+" else operator.sub)
        return left

    def mul(self) -> Series:
        left = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.unary()
            if op == "*":
                left = self.zip(left, right, operator.mul)
            else:
                left = self.zip(left, right, lambda x, y: None if y == 0 else x / y)
        return left

    def unary(self) -> Series:
        if self.peek() == "-":
            self.take()
            return [None if v is None else -v for v in self.unary()]
        return self.atom()

    def atom(self) -> Series:
        tok = self.take()
        if tok == "(":
            value = self.or_()
            self.take(")")
            return value
        if re.fullmatch(r"\d+(?:\.\d+)?", tok):
            return [float(tok)] * self.n
        if self.peek() == "(":
            self.take("(")
            args = [self.or_()]
            while self.peek() == ",":
                self.take()
                args.append(self.or_())
            self.take(")")
            return self.call(tok, args)
        if tok not in self.values:
            raise ValueError(f"unknown id {tok!r}")
        return list(self.values[tok])

    def call(self, name: str, args: list[Series]) -> Series:
        if name == "FILL" and len(args) == 2:
            return [f if v is None else v for v, f in zip(args[0], args[1], strict=True)]
        if name == "IF" and len(args) == 3:
            return [None if c is None else (a if c else b)
                    for c, a, b in zip(*args, strict=True)]  # fmt: skip
        raise ValueError(f"unsupported function {name}/{len(args)}")


def evaluate(queries: Sequence[Mapping[str, Any]], data: Mapping[str, Series]) -> Series:
    """The returned series of an alarm's ``MetricDataQuery`` list, the metrics' points given
    by id in ``data`` (one per period, None where CloudWatch has no point)."""
    length = len(next(iter(data.values())))
    values: dict[str, Series] = {}
    returned: Series | None = None
    for q in queries:
        if "Expression" in q:
            values[q["Id"]] = Evaluator(q["Expression"], values, length).run()
        else:
            values[q["Id"]] = list(data[q["Id"]])
        if q["ReturnData"]:
            returned = values[q["Id"]]
    if returned is None:
        raise ValueError("no query returns data")
    return returned


def alarm_states(points: Series, comparison: str, threshold: float, periods: int) -> list[str]:
    """ALARM or OK after each period: ALARM when the last ``periods`` points all breach
    (datapoints_to_alarm == evaluation_periods), a missing point not breaching."""
    op = {"GreaterThanThreshold": operator.gt, "GreaterThanOrEqualToThreshold": operator.ge,
          "LessThanThreshold": operator.lt}[comparison]  # fmt: skip
    breaching = [v is not None and op(v, threshold) for v in points]
    return ["ALARM" if i + 1 >= periods and all(breaching[i + 1 - periods : i + 1]) else "OK"
            for i in range(len(points))]  # fmt: skip


def from_get_metric_data(response: Mapping[str, Any]) -> tuple[list[str], dict[str, Series]]:
    """A GetMetricData response (points only where CloudWatch has them) as aligned series."""
    stamps = sorted({t for r in response["MetricDataResults"] for t in r["Timestamps"]})
    data = {}
    for r in response["MetricDataResults"]:
        by_time = dict(zip(r["Timestamps"], r["Values"], strict=True))
        data[r["Id"]] = [by_time.get(t) for t in stamps]
    return stamps, data
