"""EventBridge Scheduler's recurring expressions, checked and stepped with cronsim.

The stack settings hold the expression exactly as Scheduler takes it:

* ``rate(<value> <unit>)``: unit ``minute(s)``, ``hour(s)`` or ``day(s)``; Scheduler starts
  counting when the schedule is created, and so does the local scheduler when it starts.
* ``cron(<minutes> <hours> <day-of-month> <month> <day-of-week> <year>)``: six fields, one of
  day-of-month and day-of-week is ``?``, day-of-week numbers are 1-7 = SUN-SAT
  (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html).

A cron expression is translated to cronsim's five fields (``?`` -> ``*``, day-of-week 1-7 ->
0-6, the year field must be ``*``) and cronsim parses it: a field cronsim refuses is refused
here with its message, so the settings never hold an expression the local scheduler could
not step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_CRON = re.compile(r"^cron\((?P<fields>[^()]*)\)$")
_RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>[a-z]+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86_400}
EXAMPLES = "cron(0 2 1 * ? *) or rate(1 hour)"


class ExpressionError(ValueError):
    """A schedule expression Scheduler or the local scheduler would refuse (one line)."""


@dataclass(frozen=True)
class Expression:
    """A checked expression: ``text`` as Scheduler takes it, and how to step it."""

    text: str
    cron: str | None = None
    """The cronsim (five-field) form of a ``cron(...)`` expression."""
    every: timedelta | None = None
    """The period of a ``rate(...)`` expression."""

    def firings(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """The firings strictly after ``after`` (aware), in ``tz``. A rate counts from
        ``after``: the moment its schedule (or the local scheduler) started."""
        start = after.astimezone(tz)
        if self.every is not None:
            at = start
            while True:
                at = at + self.every
                yield at
        assert self.cron is not None
        yield from CronSim(self.cron, start)


def _dow(field: str) -> str:
    """AWS day-of-week numbers (1-7 = SUN-SAT) as cron's (0-6)."""
    # Days, not the step after "/" (2/2 is MON/WED/FRI: start at MON, every second day) nor
    # the week after "#". A step runs to AWS's last day (7, SAT): cron's own range runs to 7 as
    # SUN again, so "1/2" in cron would add a Sunday that Scheduler never fires.
    field = ",".join(
        re.sub(r"^(\*|\d+)/(\d+)$", lambda m: f"{1 if m[1] == '*' else m[1]}-7/{m[2]}", part)
        for part in field.split(",")
    )
    day = r"(?<![#/\d])\d+"
    bad = [n for n in re.findall(day, field) if not 1 <= int(n) <= 7]
    if bad:
        raise ExpressionError(f"day-of-week {field!r}: numbers are 1-7 (SUN-SAT) in AWS cron")
    return re.sub(day, lambda m: str(int(m.group()) - 1), field)


def parse(text: str) -> Expression:
    """Check ``text``; raise :class:`ExpressionError` naming what is wrong."""
    if not isinstance(text, str):
        raise ExpressionError(f"must be a string such as {EXAMPLES}")
    rate = _RATE.match(text)
    if rate:
        value, unit = int(rate["value"]), rate["unit"]
        singular = unit.rstrip("s")
        if singular not in _UNITS or value < 1:
            raise ExpressionError(f"rate needs a positive whole number and minute(s), hour(s) "
                                  f"or day(s), e.g. rate(5 minutes); got {text}")  # fmt: skip
        # Scheduler's own rule: `rate(1 hours)` and `rate(2 hour)` are refused.
        if (value == 1) != (unit == singular):
            want = singular if value == 1 else singular + "s"
            raise ExpressionError(f"Scheduler wants rate({value} {want}), not {text}")
        return Expression(text, every=timedelta(seconds=value * _UNITS[singular]))
    cron = _CRON.match(text)
    if not cron:
        raise ExpressionError(f"must be {EXAMPLES} (EventBridge Scheduler's forms)")
    fields = cron["fields"].split()
    if len(fields) != 6:
        raise ExpressionError(
            f"cron(...) takes 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)}: {text}"
        )
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ExpressionError(
            f"exactly one of day-of-month and day-of-week must be ? in AWS cron: {text}"
        )
    if year != "*":
        raise ExpressionError(f"the year field must be * (a schedule recurs every year): {text}")
    five = " ".join(
        (minute, hour, "*" if dom == "?" else dom, month, "*" if dow == "?" else _dow(dow))
    )
    try:
        CronSim(five, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ExpressionError(f"{text}: {exc}") from None
    return Expression(text, cron=five)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raise :class:`ExpressionError` if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpressionError(
            f"is not an IANA time zone such as UTC or Europe/Berlin: {name!r}"
        ) from None


def next_firings(
    expression: Expression, tz: ZoneInfo, after: datetime, count: int
) -> list[datetime]:
    """The next ``count`` firings after ``after``, in ``tz``."""
    out: list[datetime] = []
    for at in expression.firings(after, tz):
        out.append(at)
        if len(out) == count:
            break
    return out
