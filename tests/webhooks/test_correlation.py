"""The producer's correlation id on a webhook delivery (``Amply-Correlation-Id``) and on its
retry, through a real prefork worker on the moto server and a real HTTPS receiver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.runtime.app import make_app
from jobs.runtime.correlation import HEADER
from jobs.webhooks.delivery import CORRELATION_ID_HEADER
from jobs.webhooks.endpoints import register
from tests.support.workers import run_worker
from tests.webhooks.conftest import SECRET, Tls
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_on_a_worker import WEBHOOK, wait_for

pytestmark = pytest.mark.integration


def test_the_correlation_id_reaches_each_delivery_and_its_retry(
    make_stack: Callable[..., Any], redis_client: redis.Redis, redis_url: str,
    receiver: Receiver, tls: Tls, tmp_path: Path,
) -> None:  # fmt: skip
    register(redis_client, "ep-ok", receiver.url("/ok"), SECRET, local=True)
    register(redis_client, "ep-flaky", receiver.url("/status/503"), SECRET, local=True)
    env = make_stack().env(AMPLY_REDIS_URL=redis_url, AMPLY_WEBHOOK_CA_BUNDLE=tls.ca_bundle)
    producer = make_app(env, set_as_current=False)
    event = {"id": "evt_c1", "type": "donation.recorded"}

    with run_worker(env, queues=("high",), concurrency=1, include=(), log_dir=tmp_path) as worker:
        producer.send_task(WEBHOOK, args=["ep-ok", event], headers={HEADER: "req-7f3a"})
        flaky = producer.send_task(WEBHOOK, args=["ep-flaky", event],
                                   headers={HEADER: "req-503"}).id  # fmt: skip
        unset = producer.send_task(WEBHOOK, args=["ep-ok", {"id": "evt_c2"}]).id

        def deliveries(path: str) -> list[dict[str, str]]:
            return [r.headers for r in list(receiver.received) if r.path == path]

        wait_for(lambda: len(deliveries("/status/503")) >= 2, "the delivery and its retry")
        wait_for(lambda: len(deliveries("/ok")) >= 2, "both deliveries to /ok")
        worker.wait_for_log(r"webhook_retryable_failure .*correlation_id=req-503")
        log = worker.log()

    name = CORRELATION_ID_HEADER.lower()
    assert {h[name] for h in deliveries("/status/503")} == {"req-503"}  # the retry kept it
    by_delivery = {h["amply-delivery-id"]: h[name] for h in deliveries("/ok")}
    assert "req-7f3a" in by_delivery.values()
    assert len(by_delivery[unset]) == 32  # none given: the producer's publish made one
    assert f"task_id={flaky}" in log
