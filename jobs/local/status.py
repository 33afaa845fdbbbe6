"""The queue table: every tier and the DLQ of a stack, with the stack's alarms evaluated now.

Queues are resolved by name (``GetQueueUrl``) from the stack settings, never built from a URL
pattern: moto, LocalStack and AWS spell queue URLs differently. The same table serves
``amply-jobs status`` (any endpoint or AWS account) and the live view of ``amply-jobs dev``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table

from infra.settings import StackSettings


class QueueMissing(LookupError):
    """A queue of the stack does not exist on the endpoint."""


@dataclass(frozen=True)
class QueueRow:
    tier: str  # the Celery queue name, or "dlq"
    name: str  # the SQS queue name
    url: str
    visible: int
    in_flight: int
    delayed: int
    oldest_age: float | None  # seconds; None when unknown
    done: int | None  # tasks done on this tier, when someone counts them


@dataclass(frozen=True)
class AlarmRow:
    name: str
    threshold: str
    value: str
    firing: bool | None  # None: the metric is unknown here


@dataclass(frozen=True)
class Snapshot:
    rows: tuple[QueueRow, ...]

    @property
    def dlq(self) -> QueueRow:
        return self.rows[-1]

    @property
    def tiers(self) -> tuple[QueueRow, ...]:
        return self.rows[:-1]

    def backlog(self) -> int:
        """Messages on the tiers not yet deleted (visible, in flight or delayed)."""
        return sum(r.visible + r.in_flight + r.delayed for r in self.tiers)


def resolve_queues(settings: StackSettings, client: Any) -> tuple[dict[str, str], str]:
    """The stack's tier URLs by Celery queue name, and the DLQ's URL, looked up by name."""

    def url(name: str) -> str:
        try:
            return str(client.get_queue_url(QueueName=name)["QueueUrl"])
        except client.exceptions.QueueDoesNotExist:
            raise QueueMissing(
                f"queue {name} of stack {settings.stack} does not exist on this endpoint; "
                f"run `amply-jobs provision --stack {settings.stack}` first"
            ) from None

    return {t.name: url(settings.queue_name(t)) for t in settings.tiers}, url(settings.dlq_name)


_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


AgeSource = Callable[[str, str], float | None]
"""(tier or "dlq", SQS queue name) -> age in seconds of the oldest message, None if unknown."""


def cloudwatch_oldest_age(cloudwatch: Any) -> AgeSource:
    """ApproximateAgeOfOldestMessage of a queue from CloudWatch (AWS publishes it every minute;
    emulators publish nothing, which reads as unknown). Peeking at the queue instead would
    count as a receive toward maxReceiveCount."""

    def age(tier: str, queue_name: str) -> float | None:
        now = dt.datetime.now(dt.UTC)
        try:
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/SQS", MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=[{"Name": "QueueName", "Value": queue_name}],
                StartTime=now - dt.timedelta(minutes=5), EndTime=now, Period=60,
                Statistics=["Maximum"],
            )["Datapoints"]  # fmt: skip
        except Exception:  # the age is a nicety: the counts still show without it
            return None
        if not points:
            return None
        latest = max(points, key=lambda p: p["Timestamp"])
        return float(latest["Maximum"])

    return age


def snapshot(
    settings: StackSettings,
    client: Any,
    queues: Mapping[str, str],
    dlq_url: str,
    oldest_age: AgeSource | None = None,
    done: Mapping[str, int] | None = None,
) -> Snapshot:
    """Read every queue's counters once (GetQueueAttributes only: nothing is received)."""
    rows: list[QueueRow] = []
    named = [(t.name, settings.queue_name(t), queues[t.name]) for t in settings.tiers]
    named.append(("dlq", settings.dlq_name, dlq_url))
    for tier, name, url in named:
        attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)["Attributes"]
        rows.append(QueueRow(
            tier=tier, name=name, url=url,
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            oldest_age=oldest_age(tier, name) if oldest_age else None,
            done=None if done is None or tier == "dlq" else int(done.get(tier, 0)),
        ))  # fmt: skip
    return Snapshot(tuple(rows))


def evaluate_alarms(settings: StackSettings, snap: Snapshot) -> list[AlarmRow]:
    """Each alarm the Pulumi program defines (``infra/alarms.py``: same names, metrics and
    comparisons; a test keeps the two equal), with its threshold from the settings, and
    whether the current value breaches it (CloudWatch fires after the evaluation periods)."""
    a = settings.alarms
    out: list[AlarmRow] = []
    for row in snap.tiers:
        out.append(AlarmRow(
            f"{row.name}-depth",
            f"visible > {a.depth_threshold} for {a.depth_periods}x{a.period}s",
            str(row.visible), row.visible > a.depth_threshold,
        ))  # fmt: skip
        age = row.oldest_age
        out.append(AlarmRow(
            f"{row.name}-oldest-age",
            f"oldest > {a.age_threshold}s for {a.age_periods}x{a.period}s",
            "unknown" if age is None else f"{age:.0f}s",
            None if age is None else age > a.age_threshold,
        ))  # fmt: skip
    dlq = snap.dlq
    out.append(AlarmRow(
        f"{dlq.name}-not-empty",
        f"visible >= {a.dlq_threshold} for {a.dlq_periods}x{a.period}s",
        str(dlq.visible), dlq.visible >= a.dlq_threshold,
    ))  # fmt: skip
    age, limit = dlq.oldest_age, settings.dlq_age_alarm_threshold()
    out.append(AlarmRow(
        f"{dlq.name}-oldest-age",
        f"oldest > {limit}s for {a.dlq_periods}x{a.period}s",
        "unknown" if age is None else f"{age:.0f}s",
        None if age is None else age > limit,
    ))  # fmt: skip
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def queue_table(snap: Snapshot, title: str = "queues") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("tier")
    table.add_column("SQS queue", no_wrap=True)
    for col in ("visible", "in flight", "delayed", "oldest age", "done"):
        table.add_column(col, justify="right")
    for r in snap.rows:
        table.add_row(
            r.tier, r.name, str(r.visible), str(r.in_flight), str(r.delayed), _age(r.oldest_age),
            "-" if r.done is None else str(r.done),
            style="bold red" if r.tier == "dlq" and r.visible else None,
        )  # fmt: skip
    return table


def alarm_table(alarms: list[AlarmRow]) -> Table:
    table = Table(title="alarms (thresholds from the stack settings)", title_justify="left")
    table.add_column("alarm")
    table.add_column("threshold")
    table.add_column("now", justify="right")
    table.add_column("would fire")
    for al in alarms:
        verdict = {True: "[bold red]FIRING[/]", False: "[green]ok[/]", None: "unknown"}
        table.add_row(al.name, al.threshold, al.value, verdict[al.firing])
    return table


def render(settings: StackSettings, snap: Snapshot, title: str | None = None) -> Group:
    return Group(
        queue_table(snap, title or f"stack {settings.stack} ({settings.region})"),
        alarm_table(evaluate_alarms(settings, snap)),
    )
