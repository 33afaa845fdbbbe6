"""The benchmarks count what they claim to count (no timing is asserted anywhere here).

Each script's smallest mode, or its counting parts where the smallest real run would take
longer than a test may (idle: a 20 s long poll per request; priority: two worker layouts)."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import autoscale, consume, enqueue, idle, priority
from bench.common import (
    PROJECT_APP,
    Endpoint,
    action_counts,
    by_queue,
    deleted,
    endpoint,
    make_stack,
    prod_settings,
    sent,
    workers,
)
from infra.settings import load_stack
from tests.support.proxy import Recorded


@pytest.fixture(scope="module")
def ep() -> Iterator[Endpoint]:
    with endpoint() as e:
        yield e


def test_the_proxy_counts_exactly_the_requests_of_a_known_boto3_sequence(ep: Endpoint) -> None:
    counted, direct = ep.client(counted=True), ep.client(counted=False)
    url = direct.create_queue(QueueName="smoke-known")["QueueUrl"]  # not through the proxy
    ep.proxy.clear()
    for i in range(3):
        counted.send_message(QueueUrl=url, MessageBody=f"single {i}")
    counted.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"batched {i}"} for i in range(10)
    ])  # fmt: skip
    got = counted.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    msgs = got["Messages"]
    counted.delete_message(QueueUrl=url, ReceiptHandle=msgs[0]["ReceiptHandle"])
    counted.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs[1:])
    ])  # fmt: skip
    direct.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])  # not counted

    records = ep.proxy.actions()
    assert action_counts(records) == {"SendMessage": 3, "SendMessageBatch": 1,
                                      "ReceiveMessage": 1, "DeleteMessage": 1,
                                      "DeleteMessageBatch": 1}  # fmt: skip
    assert sent(records) == 13
    assert deleted(records) == len(msgs)
    assert by_queue(records) == {url: 7}
    assert [r.action for _, r in ep.proxy.timed()] == [r.action for r in records]


def test_enqueue_counts_one_request_per_delay_and_one_per_ten_in_bulk(ep: Endpoint) -> None:
    rows = enqueue.measure(ep, 25)
    assert rows["delay"]["by_action"] == {"SendMessage": 25}
    assert rows["enqueue_many"]["by_action"] == {"SendMessageBatch": 3}
    assert rows["enqueue_many"]["requests_per_message"] == pytest.approx(0.12)
    summary = enqueue.summarize(rows)
    assert summary["goals"]["requests_per_message_at_most_0.11"] is False  # 3 for 25: 0.12


def test_the_raw_loop_is_counted_send_receive_and_delete(ep: Endpoint) -> None:
    stack = make_stack(ep, prod_settings("smoke-raw"))
    stop = threading.Event()
    loop = threading.Thread(target=consume.raw_loop, daemon=True,
                            args=(ep.client(), stack.queues["celery"], 20, stop))  # fmt: skip
    loop.start()
    try:
        row = consume._timed(ep, stack, 20, timeout=30)
    finally:
        stop.set()
    loop.join(30)
    assert row["deleted"] == 20
    assert row["by_action"]["SendMessageBatch"] == 2
    assert row["by_action"]["DeleteMessageBatch"] >= 2  # receives may return fewer than 10
    assert row["requests"] == sum(row["by_action"].values())
    assert row["requests_per_task"] == pytest.approx(row["requests"] / 20)


@pytest.mark.integration
def test_a_project_worker_group_deletes_every_task_once(ep: Endpoint) -> None:
    stack = make_stack(ep, prod_settings("smoke-project"))
    group = stack.group("high")
    with (
        tempfile.TemporaryDirectory() as tmp,
        workers([("smoke", PROJECT_APP, group, stack.env())], Path(tmp)),
    ):
        row = consume._timed(ep, stack, 30, timeout=60)
    assert row["deleted"] == 30  # no task acknowledged twice, none missed
    assert row["by_action"]["SendMessageBatch"] == 3


@pytest.mark.integration
def test_priority_records_one_latency_per_probe(ep: Endpoint) -> None:
    # The smallest real run: today's two groups, a backlog of 10 short tasks per tier.
    with tempfile.TemporaryDirectory() as tmp:
        row = priority.measure(ep, "today", load_stack("prod").worker_groups, rate=5.0,
                               seconds=1.0, task_seconds=0.2, log_dir=Path(tmp),
                               backlog_per_tier=10)  # fmt: skip
        recorded = (Path(tmp) / "latency-today.txt").read_text().split()
    assert row["probes"] == 5
    assert len(recorded) == 5  # every probe ran once, and was recorded once
    assert 0 < row["p50_s"] <= row["p99_s"] <= row["max_s"]


def test_idle_rates_from_gaps_and_queue_attribution() -> None:
    assert idle.interval_rate([0.0, 20.0, 40.0]) == pytest.approx(3.0)
    assert idle.interval_rate([5.0, 26.0, 47.0, 68.0]) == pytest.approx(60 / 21)
    assert idle.interval_rate([1.0]) is None
    records = [Recorded("ReceiveMessage", {"QueueUrl": "a"}),
               Recorded("ReceiveMessage", {"QueueUrl": "b"}),
               Recorded("ReceiveMessage", {"QueueUrl": "a"}),
               Recorded("ListQueues", {})]  # fmt: skip
    assert by_queue(records) == {"a": 2, "b": 1, "": 1}


def test_priority_variant_and_percentiles() -> None:
    groups = priority.own_high_group(load_stack("prod").worker_groups)
    assert [(g.name, g.queues, g.concurrency) for g in groups] == [
        ("high", ("high",), 2), ("default", ("celery",), 4), ("low", ("low",), 2)]  # fmt: skip
    values = [float(i) for i in range(1, 101)]
    assert priority.percentile(values, 50) == 50.0
    assert priority.percentile(values, 99) == 99.0
    assert priority.percentile([3.0], 99) == 3.0


def test_autoscale_prints_a_table_and_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = autoscale.run(2_000, (1.0,), "high")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps({"bench": "autoscale", **result}))
    assert {r["metric"] for r in result["runs"]} == {"queueDepth", "backlogPerTask"}
    assert all(r["drained_at"] is not None for r in result["runs"])
