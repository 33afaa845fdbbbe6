"""The demo workload of ``amply-jobs dev --demo N``, and how it is judged.

What it sends, in production proportions (the figures are in docs/local.md):
- 70 % webhooks (tier ``high``): ``dispatch_webhook(endpoint_id, event)``, one per donation
  recorded just before, to three endpoints registered as local and served by the demo's
  receiver (jobs/local/receiver.py), which checks every signature;
- 20 % checkpoints (tier ``celery``): ``generate_checkpoint()``, interleaved with the
  donations, so that most of them seal real events;
- 10 % monthly reports (tier ``low``): ``generate_monthly_report(org, month)`` over the demo
  organisations, this month and the previous one;
- one poison task: a monthly report for month ``2026-13``, which fails at once on every
  receive (bad input is not retried), is rejected, comes back after each visibility timeout
  and is dead-lettered by SQS after ``maxReceiveCount`` receives.

Everything is sent with ``enqueue_many`` (SendMessageBatch), 10 messages a request.
It ends as expected when every task succeeded on its tier, each webhook event reached the
receiver with a valid signature, the checkpoint chain verifies over every donation, and the
DLQ holds the poison task.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contract.routes import route_for
from infra.settings import StackSettings
from jobs.local import worker_hooks
from jobs.local.receiver import Receiver
from jobs.local.status import Snapshot
from jobs.local.task_metrics import first_waits, read_dir, summarize, task_table

MIX = (("webhook", 0.70), ("checkpoint", 0.20), ("report", 0.10))
"""The share of each kind of task, as in production."""
TASKS = {
    "webhook": "amply.jobs.webhooks.dispatch_webhook",
    "checkpoint": "amply.jobs.checkpoints.generate_checkpoint",
    "report": "amply.jobs.reports.generate_monthly_report",
}
TIER = {kind: route_for(name) or "celery" for kind, name in TASKS.items()}
"""Each kind's tier, from the app's routes (contract/routes.py): high, celery, low."""
CHUNK = 10  # one SendMessageBatch
ORGS = tuple(f"demo-org-{i}" for i in range(1, 6))
ENDPOINTS = ("demo-crm", "demo-ledger", "demo-mailer")
POISON_MONTH = "2026-13"


def mix(n: int, rng: random.Random) -> list[str]:
    """``n`` task kinds in the production proportions, shuffled (exact counts, rounding
    down the small shares, so that N=200 gives 140/40/20)."""
    counts = {kind: int(n * share) for kind, share in MIX[1:]}
    counts[MIX[0][0]] = n - sum(counts.values())
    kinds = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(kinds)
    return kinds


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a measured one)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _previous_month(now: datetime) -> str:
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


@dataclass
class Sent:
    kind: str
    tier: str
    enqueued_at: float


@dataclass
class Demo:
    n: int
    data: redis.Redis
    settings: StackSettings
    port: int = 0
    receiver: Receiver = field(init=False)
    sent: dict[str, Sent] = field(default_factory=dict)
    poison_id: str | None = None
    donations: int = 0
    started_at: float = field(default_factory=time.monotonic)
    dlq_baseline: int = 0
    """Messages in the DLQ before the demo (a shared endpoint may hold some already)."""
    log_dir: Path | None = None
    """The workers' log directory: the summary's figures come from their metric lines
    (jobs/local/task_metrics.py), as the dashboard's would in AWS."""
    _started: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        secrets_by_id = {e: secrets.token_bytes(32) for e in ENDPOINTS}
        self.receiver = Receiver(secrets_by_id, port=self.port)

    # ---- lifecycle ---------------------------------------------------------------------

    def start_receiver(self) -> None:
        self.receiver.start()

    def stop_receiver(self) -> None:
        self.receiver.stop()

    def _register_endpoints(self) -> None:
        from jobs.webhooks import endpoints

        for endpoint_id, secret in self.receiver.secrets.items():
            endpoints.register(
                self.data, endpoint_id, self.receiver.url(endpoint_id), secret, local=True
            )

    def enqueue(self, console: Console) -> None:
        """Record the donations and send every task (imports the app: the contract must be
        in the environment by now)."""
        from jobs.ledger.checkpoints import generate_checkpoint
        from jobs.ledger.donations import record_donation
        from jobs.ledger.reports import generate_monthly_report
        from jobs.runtime.bulk import enqueue_many
        from jobs.webhooks.tasks import dispatch_webhook

        self._register_endpoints()
        rng = random.Random(20_26)
        kinds = mix(self.n, rng)
        now = datetime.now(UTC)
        months = (f"{now.year:04d}-{now.month:02d}", _previous_month(now))
        reports = 0
        t0 = time.monotonic()
        for start in range(0, len(kinds), CHUNK):
            chunk = kinds[start : start + CHUNK]
            hooks: list[tuple[Any, ...]] = []
            for _ in range(chunk.count("webhook")):
                org = rng.choice(ORGS)
                rec = record_donation(self.data, org, rng.randrange(100, 50_000), "EUR")
                self.donations += 1
                event = {"type": "donation.recorded", **rec.event.to_dict()}
                hooks.append((rng.choice(ENDPOINTS), event))
            report_args = []
            for _ in range(chunk.count("report")):
                report_args.append((ORGS[reports % len(ORGS)], months[reports % 2]))
                reports += 1
            batches = [
                ("webhook", dispatch_webhook, hooks),
                ("checkpoint", generate_checkpoint, [() for _ in range(chunk.count("checkpoint"))]),
                ("report", generate_monthly_report, report_args),
            ]
            for kind, task, args in batches:
                if not args:
                    continue
                # Taken before the send: a task may start before enqueue_many returns.
                at = time.time()
                for task_id in enqueue_many(task, args):
                    self.sent[task_id] = Sent(kind, TIER[kind], at)
        [self.poison_id] = enqueue_many(generate_monthly_report, [(ORGS[0], POISON_MONTH)])
        counts = {k: sum(1 for s in self.sent.values() if s.kind == k) for k, _ in MIX}
        console.print(
            f"demo: recorded {self.donations} donations; enqueued {len(self.sent)} tasks "
            f"({counts['webhook']} webhooks -> {TIER['webhook']}, {counts['checkpoint']} "
            f"checkpoints -> {TIER['checkpoint']}, {counts['report']} monthly reports -> "
            f"{TIER['report']}) and 1 poison task "
            f"(monthly report for month {POISON_MONTH}) in {time.monotonic() - t0:.1f}s"
        )

    # ---- progress ----------------------------------------------------------------------

    def _refresh_started(self) -> None:
        pending = [tid for tid in self.sent if tid not in self._started]
        if not pending:
            return
        for tid, value in zip(
            pending, self.data.hmget(worker_hooks.STARTED_KEY, pending), strict=True
        ):
            if value is not None:
                self._started[tid] = float(value)

    def oldest_age(self, tier: str, queue_name: str) -> float | None:
        """Age of the oldest demo task of ``tier`` not started yet (0 when none waits)."""
        if tier == "dlq":
            return None
        self._refresh_started()
        waiting = [s.enqueued_at for tid, s in self.sent.items()
                   if s.tier == tier and tid not in self._started]  # fmt: skip
        return time.time() - min(waiting) if waiting else 0.0

    def _done(self) -> set[str]:
        out: set[str] = set()
        for tier in {s.tier for s in self.sent.values()}:
            out |= {m.decode() for m in self.data.smembers(worker_hooks.done_key(tier))}
        return out

    def progress_line(self, snap: Snapshot, hint: str = "Ctrl-C stops") -> str:
        done = self._done()
        dead = snap.dlq.visible + snap.dlq.in_flight > self.dlq_baseline
        good, _distinct, bad = self.receiver.counts()
        return (
            f"demo: {len(done & self.sent.keys())}/{len(self.sent)} tasks done; webhooks "
            f"received {good} ({bad} refused); poison: "
            f"{'in the DLQ' if dead else 'not yet dead-lettered'}" + (f"; {hint}" if hint else "")
        )

    def finished(self, snap: Snapshot) -> bool:
        """Every task done and the poison dead-lettered (then the summary judges)."""
        if snap.dlq.visible + snap.dlq.in_flight <= self.dlq_baseline:
            return False
        return self.sent.keys() <= self._done() and snap.backlog() == 0

    # ---- the summary -------------------------------------------------------------------

    def _tier_table(self, title: str, done: set[str]) -> tuple[Table, bool]:
        """Per kind of task: its tier, how many were sent and are done, and p50/p99
        enqueue->start over the tasks started so far; with whether every task sent is done."""
        self._refresh_started()
        docs = read_dir(self.log_dir) if self.log_dir is not None else []
        # The first attempt's QueueWait from the workers' metric lines; without them (metrics
        # off) the start times the worker hooks record.
        waits = first_waits(docs)
        all_done = True
        table = Table(title=title, title_justify="left")
        for col in ("tier", "tasks", "sent", "done", "p50 enqueue->start", "p99 enqueue->start"):
            table.add_column(col, justify="left" if col in ("tier", "tasks") else "right")
        for kind, _ in MIX:
            tier = TIER[kind]
            ids = [tid for tid, s in self.sent.items() if s.kind == kind]
            if waits:
                lat = [waits[t] / 1000 for t in ids if t in waits]
            else:
                lat = [self._started[t] - self.sent[t].enqueued_at for t in ids
                       if t in self._started]  # fmt: skip
            n_done = sum(1 for t in ids if t in done)
            all_done &= n_done == len(ids)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            table.add_row(
                tier, f"{kind}s", str(len(ids)), str(n_done),
                "-" if p50 is None else f"{p50 * 1000:.0f} ms",
                "-" if p99 is None else f"{p99 * 1000:.0f} ms",
            )  # fmt: skip
        return table, all_done

    def _print_task_metrics(self, console: Console) -> None:
        """Per task and outcome, from the workers' metric lines (what ``amply-jobs status
        --worker-logs`` shows): the poison task's attempts are its failures."""
        if self.log_dir is not None:
            console.print(task_table(summarize(read_dir(self.log_dir)),
                                     "per task, from the workers' metric lines"))  # fmt: skip

    def _print_receiver_line(self, console: Console) -> bool:
        """Print the receiver's counts; True when every webhook sent arrived once, signed."""
        webhooks = sum(1 for s in self.sent.values() if s.kind == "webhook")
        good, distinct, bad = self.receiver.counts()
        console.print(
            f"webhook receiver: {good} deliveries with a valid signature, {distinct} distinct "
            f"events (of {webhooks} sent), {bad} refused"
            + "".join(f"\n  refused: {escape(why)}" for why in self.receiver.bad[:5]),
            soft_wrap=True,
        )
        return distinct == webhooks and bad == 0

    def summarize_partial(self, console: Console) -> None:
        """The figures so far of an interrupted demo: the per-tier table and the receiver's
        counts. No verdict (the workload did not get to end) and none of the slow checks
        (chain verification, DLQ sweep): the developer asked to stop."""
        done = self._done() & self.sent.keys()
        elapsed = time.monotonic() - self.started_at
        title = (f"demo so far (interrupted after {elapsed:.0f}s): {len(done)}/{len(self.sent)} "
                 "tasks done")  # fmt: skip
        if len(self.sent) < self.n:
            title += f", sending cut short at {len(self.sent)} of {self.n}"
        table, _ = self._tier_table(title, done)
        console.print(table)
        self._print_task_metrics(console)
        self._print_receiver_line(console)

    def summarize(self, snap: Snapshot, sqs: Any, dlq_url: str, console: Console) -> bool:
        """Print the summary; True when every task ended as expected."""
        from jobs.dlq.operations import Sweep
        from jobs.ledger.checkpoints import verify_chain

        elapsed = time.monotonic() - self.started_at
        table, ok = self._tier_table(
            f"demo summary ({len(self.sent)} tasks + 1 poison, {elapsed:.0f}s)", self._done()
        )
        console.print(table)
        self._print_task_metrics(console)
        ok &= self._print_receiver_line(console)

        chain = verify_chain(self.data)
        ok &= bool(chain.ok)
        console.print(
            f"checkpoints: chain of {chain.checkpoints} "
            f"{'verified' if chain.ok else 'BROKEN: ' + '; '.join(chain.problems[:3])}, "
            f"{chain.events_sealed} of {self.donations} donations sealed"
            + (
                f" ({chain.events_unsealed} recorded after the last checkpoint task ran)"
                if chain.events_unsealed
                else ""
            )
        )

        sweep = Sweep(sqs, dlq_url, visibility=5, expected=snap.dlq.visible + snap.dlq.in_flight)
        found = [m for batch in sweep.batches() for m in batch if not m.repeat]
        sweep.release()
        poison = [m for m in found if m.task_id == self.poison_id]
        others = [m for m in found if m.task_id != self.poison_id]
        ok &= len(poison) == 1
        console.print(f"DLQ ({len(found)} message{'s' if len(found) != 1 else ''}):")
        for m in found:
            d = m.decoded
            what = "the poison task, as expected" if m in poison else "NOT EXPECTED"
            console.print(
                f"  {escape(m.label)} {escape(f'[{d.task_id}]')} args={escape(str(d.argsrepr))} "
                f"(ApproximateReceiveCount {m.receive_count}, this look included): {what}",
                soft_wrap=True,
            )
        if others and not any(tid in self.sent for tid in (m.task_id for m in others)):
            console.print("  (messages that are not the demo's were in the DLQ already)")
        ok &= not any(m.task_id in self.sent for m in others)
        console.print(
            "[bold green]OK: every task ended as expected[/]"
            if ok
            else "[bold red]FAILED: some tasks did not end as expected (see above and the "
            "worker logs)[/]"
        )
        return ok
