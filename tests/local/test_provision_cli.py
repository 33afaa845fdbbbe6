"""``amply-jobs provision`` and ``amply-jobs status`` on a real SQS endpoint."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from typing import Any

from tests.local.conftest import MakeStackDir
from tests.local.helpers import amply_jobs, cli_env


def test_second_provision_says_nothing_to_change(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    args = ("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    first = amply_jobs(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 4
    assert "nothing to change" not in first.stdout

    second = amply_jobs(*args)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and "updated" not in second.stdout
    assert "nothing to change: the 4 queues match the stack settings" in second.stdout
    # Both runs print the same AMPLY_QUEUES, resolved from the endpoint.
    line = next(x for x in second.stdout.splitlines() if x.startswith("AMPLY_QUEUES="))
    assert line in first.stdout
    queues = json.loads(line.split("=", 1)[1])
    assert set(queues) == {"high", "celery", "low"}
    assert queues["high"] == sqs.get_queue_url(QueueName=f"{prefix}-celery-high")["QueueUrl"]


def test_drift_is_reported_and_put_right(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    args = ("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    assert amply_jobs(*args).returncode == 0
    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-low")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "30"})

    again = amply_jobs(*args)
    assert again.returncode == 0, again.stderr
    assert f"updated   {prefix}-celery-low" in again.stdout
    assert "VisibilityTimeout: 30 -> 120" in again.stdout
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "120"


def test_env_prints_the_contract_as_export_lines(
    sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    out = amply_jobs("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint, "--env")
    assert out.returncode == 0, out.stderr
    env = {}
    for line in out.stdout.splitlines():
        assert line.startswith("export "), line  # stdout is eval-able: the report is on stderr
        key, _, value = line[len("export ") :].partition("=")
        env[key] = shlex.split(value)[0]
    assert set(env) == {"AMPLY_QUEUES", "AMPLY_DLQ", "AMPLY_SQS_ENDPOINT", "AWS_REGION",
                        "AWS_DEFAULT_REGION", "AMPLY_ENV", "AMPLY_TIERS", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    assert env["AMPLY_DLQ"].endswith(f"{prefix}-celery-dlq")
    assert json.loads(env["AMPLY_TIERS"])["high"] == {
        "visibility_timeout": 120, "soft_time_limit": 480, "time_limit": 540,
    }  # fmt: skip
    assert "created" in out.stderr


def test_status_shows_every_queue_and_the_dlq_alarm_firing(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    assert (
        amply_jobs("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint).returncode
        == 0
    )
    status = ("status", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    calm = amply_jobs(*status)
    assert calm.returncode == 0, calm.stderr
    for name in ("celery-high", "celery", "celery-low", "celery-dlq"):
        assert f"{prefix}-{name} " in calm.stdout
    assert "visible >= 1 for 1x60s" in calm.stdout  # the DLQ alarm's threshold, from settings
    assert "FIRING" not in calm.stdout

    dlq = sqs.get_queue_url(QueueName=f"{prefix}-celery-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody="dead")
    firing = amply_jobs(*status)
    assert firing.returncode == 0, firing.stderr
    [row] = [x for x in firing.stdout.splitlines() if f"{prefix}-celery-dlq-not-empty" in x]
    assert "FIRING" in row


def test_status_of_unprovisioned_stack_says_to_provision(
    sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    out = amply_jobs("status", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert f"queue {prefix}-celery-high" in out.stderr and "amply-jobs provision" in out.stderr


def test_eval_of_env_lines_is_a_working_producer_and_operator_shell(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    """As docs/local.md says: `eval "$(amply-jobs provision --endpoint URL --env)"` in a shell
    without any AWS variable, then a producer's .delay() and `amply-jobs dlq inspect` work."""
    root, prefix = stack_dir()
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    amply = f"{shlex.quote(sys.executable)} -m jobs"
    script = (
        f'eval "$({amply} provision --stack-dir {shlex.quote(str(root))} '
        f'--endpoint {shlex.quote(sqs_endpoint)} --env)" && '
        f"{shlex.quote(sys.executable)} -c "
        "'from jobs.ledger.reports import generate_monthly_report as r; "
        f'r.delay("org-1", "2026-01")\' && '
        f"{amply} dlq inspect --json"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                         timeout=60, cwd=str(root))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["queue_url"].endswith(f"{prefix}-celery-dlq")
    low = sqs.get_queue_url(QueueName=f"{prefix}-celery-low")["QueueUrl"]
    got = sqs.receive_message(QueueUrl=low, WaitTimeSeconds=1, VisibilityTimeout=0)
    assert len(got.get("Messages", [])) == 1


def test_check_reports_drift_and_changes_nothing(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    root, prefix = stack_dir()
    args = ("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    fresh = amply_jobs(*args, "--check")
    assert fresh.returncode == 1, fresh.stderr
    assert fresh.stdout.count("would create") == 4
    assert not sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls")

    assert amply_jobs(*args).returncode == 0
    same = amply_jobs(*args, "--check")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "nothing to change: the 4 queues match the stack settings" in same.stdout

    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-low")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "6"})
    drifted = amply_jobs(*args, "--check")
    assert drifted.returncode == 1
    assert f"would update {prefix}-celery-low" in drifted.stdout
    assert "VisibilityTimeout: 6 -> 120" in drifted.stdout
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "6"


def test_provision_refuses_to_change_queues_in_use_without_force(
    sqs: Any, sqs_endpoint: str, stack_dir: MakeStackDir
) -> None:
    # What a running `dev --demo` looks like: its 6 s visibility, a message on a queue.
    root, prefix = stack_dir()
    args = ("provision", "--stack-dir", str(root), "--endpoint", sqs_endpoint)
    assert amply_jobs(*args).returncode == 0
    url = sqs.get_queue_url(QueueName=f"{prefix}-celery-high")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "6"})
    sqs.send_message(QueueUrl=url, MessageBody="a task")

    out = amply_jobs(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        f"amply-jobs: the queues of stack dev hold 1 messages, so something uses them (a "
        "running `amply-jobs dev`, whose demo sets its own visibility timeout, or workers); "
        f"provisioning would change {prefix}-celery-high VisibilityTimeout 6 -> 120: stop that "
        "first, or add --force\n"
    )
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "6"

    forced = amply_jobs(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "VisibilityTimeout: 6 -> 120" in forced.stdout
