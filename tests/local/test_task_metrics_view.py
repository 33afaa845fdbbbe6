"""The local workers' metric lines read back (jobs/local/task_metrics.py) and shown by
``amply-jobs status --worker-logs`` on a real SQS endpoint. The lines are written by the
runtime's own formatter; tests/jobs/test_task_metrics.py reads a real worker's log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.local.task_metrics import first_waits, percentile, read_dir, summarize
from jobs.runtime import metrics
from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs

TASK = "amply.jobs.webhooks.dispatch_webhook"


def line(outcome: Any, run: float | None, wait: float | None, **props: Any) -> str:
    doc = metrics.document(tier="high", task=TASK, outcome=outcome, run_ms=run, wait_ms=wait,
                           properties=props, environment="dev")  # fmt: skip
    return metrics.line(doc).decode()


def write_log(directory: Path) -> None:
    waits = [10.0 * i for i in range(1, 101)]  # 10 .. 1000 ms
    text = "[2026-12-03 02:00:00,000: INFO/MainProcess] celery@w ready.\n"
    text += "".join(line("succeeded", 5.0, w, task_id=f"t{i}", receive_count="1")
                    for i, w in enumerate(waits))  # fmt: skip
    text += line("retried", 7.0, 3.0, task_id="t0", receive_count="2")
    text += line("failed", 9.0, 4.0, task_id="tf")
    text += line("poison", None, None)[:40] + "\n"  # a line cut by a killed worker: skipped
    text += line("poison", None, None).replace('"low"', '"low"')
    (directory / "worker-high.log").write_text(text)


def test_the_lines_sum_up_per_task(tmp_path: Path) -> None:
    write_log(tmp_path)
    [row] = summarize(read_dir(tmp_path))
    assert (row.tier, row.task) == ("high", TASK)
    assert row.outcomes == {"succeeded": 100, "retried": 1, "failed": 1, "poison": 1}
    assert (row.attempts, row.bad) == (103, 2)
    assert percentile(row.waits, 50) == 490 and percentile(row.waits, 99) == 990
    assert first_waits(read_dir(tmp_path))["t0"] == 10.0  # the first attempt's, not the retry's


def test_status_shows_the_task_figures_from_the_worker_logs(
    sqs_endpoint: str, stack_dir: MakeStackDir, tmp_path: Path
) -> None:
    root, _ = stack_dir()
    assert amply_jobs("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint
                      ).returncode == 0  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    write_log(logs)
    shown = amply_jobs("status", "--stack-dir", str(root), "--endpoint", sqs_endpoint,
                       "--worker-logs", str(logs), COLUMNS="200")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    rows = [x for x in shown.stdout.splitlines() if "webhooks.dispatch_webhook" in x]
    assert len(rows) == 1, shown.stdout
    row = rows[0]
    cells = [c.strip() for c in row.split("│")[3:11]]
    assert cells == ["103", "100", "1", "1", "0", "1", "490/990", "5/7"]
    missing = amply_jobs("status", "--stack-dir", str(root), "--endpoint", sqs_endpoint,
                         "--worker-logs", str(tmp_path / "nowhere"))  # fmt: skip
    assert missing.returncode != 0 and "nowhere" in missing.stderr
