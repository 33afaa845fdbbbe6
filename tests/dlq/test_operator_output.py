"""What the operator reads at night (issue 18, finding 6): inspect at 80 columns with ids
whole, no log line per message before the table, purge that says how many would go and
writes no empty export, redrive that names an id it did not find and says where a file's
unsent messages are."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from jobs.dlq.cli import dlq
from tests.dlq.conftest import Filled
from tests.dlq.messages import WEBHOOK, approx


def run(filled: Filled, *args: str, **env: str) -> Any:
    return CliRunner().invoke(dlq, list(args), env={**filled.env(), **env})


def test_inspect_at_80_columns_keeps_tier_count_and_whole_ids(filled: Filled) -> None:
    r = run(filled, "inspect", COLUMNS="80")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    # The ids (three per task, oldest first) each on a line of its own, whole: they can be
    # pasted into --id.
    task_ids = {s.task_id for s in filled.sent if s.task_id}
    start = lines.index("ids, oldest first (task id, else message id; for --id):")
    end = next(i for i, x in enumerate(lines) if "Not Celery messages" in x)
    shown = [x.strip() for x in lines[start:end]
             if x.startswith("    ") and not x.strip().startswith("...")]  # fmt: skip
    celery_shown = [i for i in shown if i in task_ids]
    assert len(celery_shown) == 3 + 3 + 3 + 1, r.stdout  # webhook, checkpoint, report, unknown
    assert all(len(i) == 36 for i in shown), shown  # uuids and SQS message ids, uncut
    # The webhook row: its tier and its count, unsqueezed.
    [row] = [line for line in lines if "│ high " in line]
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1:3] == ["high", "3"], row
    # No JSON line per message before the table at the default level; at debug, all 17.
    assert "dlq.message" not in r.stderr
    loud = run(filled, "--log-level", "debug", "inspect")
    events = [json.loads(x) for x in loud.stderr.splitlines() if '"dlq.message"' in x]
    assert len(events) == 17 and {e["level"] for e in events} == {"debug"}


def test_purge_without_yes_says_how_many_would_go(filled: Filled, sqs: Any,
                                                  tmp_path: Path) -> None:  # fmt: skip
    time.sleep(1.1)  # every message is now more than a second old
    r = run(filled, "purge", "--older-than", "1s", "--task", WEBHOOK, "--out-dir", str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr == (
        f"error: purge would delete 3 of the 17 messages read (sent more than 1s ago of task "
        f"{WEBHOOK}): add --yes to go on (they are exported to a file first); look first with "
        "`amply-jobs dlq inspect`\n"
    )
    assert not list(tmp_path.iterdir())
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}


def test_purge_with_nothing_to_purge_writes_no_export(filled: Filled, tmp_path: Path) -> None:
    r = run(filled, "purge", "--older-than", "1h", "--yes", "--out-dir", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "nothing to purge: no message older than 1h; 17 kept; no export written\n"
    assert not list(tmp_path.iterdir())


def test_redrive_of_an_id_that_is_not_there_says_so(filled: Filled, sqs: Any) -> None:
    r = run(filled, "redrive", "--id", "does-not-exist")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        "error: no message in the DLQ has the id does-not-exist (task id or SQS message id): "
        "check it with `amply-jobs dlq inspect` (nothing was sent for it)"
    )
    assert approx(sqs, filled.stack.dlq_url) == {"visible": 17, "in_flight": 0}


def test_redrive_from_a_purge_file_does_not_claim_the_dlq_holds_them(
    filled: Filled, tmp_path: Path
) -> None:
    time.sleep(1.1)
    purged = run(filled, "purge", "--older-than", "1s", "--yes", "--out-dir", str(tmp_path))
    assert purged.exit_code == 0, purged.stderr
    [path] = tmp_path.iterdir()
    r = run(filled, "redrive", "--from-file", str(path), "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "skipped 6 (not sent; still in the file)" in r.stdout
    assert "left in the DLQ" not in r.stdout


def test_target_options_work_after_the_command_too(filled: Filled) -> None:
    # As `amply-jobs status --endpoint URL`: the options where a user types them.
    env = {"AMPLY_SQS_ENDPOINT": None, "AMPLY_DLQ": None, "AWS_REGION": None}
    r = CliRunner().invoke(
        dlq,
        ["inspect", "--json", "--endpoint", filled.stack.endpoint,
         "--dlq-url", filled.stack.dlq_url, "--region", "eu-west-1"],
        env={**filled.env(), **env},
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["scanned"] == 17
