"""Delays on a real SQS endpoint: an ETA within 900 s is SQS's DelaySeconds, a longer one is
refused before any request (jobs/runtime/delays.py); never an ETA a worker would hold."""

from __future__ import annotations

import pytest

from jobs.runtime.delays import DelayRefused
from tests.support.runtime import Runtime, runtime, runtime_factory

__all__ = ["runtime", "runtime_factory"]

pytestmark = pytest.mark.integration

CHECKPOINT = "amply.jobs.checkpoints.generate_checkpoint"


@pytest.mark.parametrize("options", [{"countdown": 7200}, {"delay_seconds": 901}],
                         ids=["two-hour countdown", "delay_seconds over 900"])  # fmt: skip
def test_a_delay_past_900_seconds_is_refused_and_nothing_sent(
    runtime: Runtime, options: dict[str, int]
) -> None:
    with pytest.raises(DelayRefused) as info:
        runtime.app.send_task(CHECKPOINT, **options)
    message = str(info.value)
    assert CHECKPOINT in message and "900 s" in message and "amply-jobs:schedules" in message
    assert "\n" not in message
    assert runtime.proxy.actions() == []


def test_a_countdown_within_900_seconds_is_an_sqs_delay(runtime: Runtime) -> None:
    runtime.app.send_task(CHECKPOINT, countdown=600)
    (send,) = runtime.proxy.actions("SendMessage")
    # ceil of what is left of the 600 s when the message is built
    assert 599 <= int(send.params["DelaySeconds"]) <= 600
