"""Backoff delays (pure) and what retry_with_backoff asks Celery for."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.runtime.retry import MAX_DELAY_SECONDS, backoff_delay, retry_delay, retry_with_backoff


@given(retries=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_delay_is_whole_seconds_within_sqs_bounds(retries: int, seed: int) -> None:
    delay = backoff_delay(retries, rng=random.Random(seed))
    assert isinstance(delay, int)
    assert 1 <= delay <= MAX_DELAY_SECONDS
    assert delay <= max(1, 2 * 2**retries)


def test_ceiling_grows_exponentially_then_caps_at_900() -> None:
    rng = random.Random(7)
    worst = {n: max(backoff_delay(n, rng=rng) for _ in range(2000)) for n in range(12)}
    assert worst[0] <= 2 and worst[1] <= 4 and worst[3] <= 16
    assert worst[5] > 32  # grew past the earlier ceilings
    assert worst[11] <= 900 and worst[11] > 800  # capped, and the cap is reached


def test_full_jitter_spreads_a_burst() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(8, rng=rng) for _ in range(500)]
    assert len(set(delays)) > 100  # not one synchronized wave


def test_negative_retries_are_a_bug() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1)


class _Retry(Exception):
    pass


def _task(retries: int, max_retries: int | None = 3) -> Any:
    calls: list[dict[str, Any]] = []

    def retry(**kwargs: Any) -> _Retry:
        calls.append(kwargs)
        return _Retry()

    request = SimpleNamespace(retries=retries, id="id-1")
    return SimpleNamespace(
        name="amply.tests.t", max_retries=max_retries, retry=retry, calls=calls, request=request
    )


def test_retry_asks_for_an_sqs_delay_and_no_countdown_or_eta() -> None:
    task = _task(retries=2)
    with pytest.raises(_Retry):
        retry_with_backoff(task, ConnectionError("down"))
    (call,) = task.calls
    assert call["countdown"] == 0 and not call["countdown"]  # falsy: no ETA is computed
    assert call["eta"] is None
    assert 1 <= call["delay_seconds"] <= 8
    assert isinstance(call["exc"], ConnectionError)


def test_exhausted_retries_reraise_the_error_for_the_dlq() -> None:
    task = _task(retries=3, max_retries=3)
    error = ConnectionError("still down")
    with pytest.raises(ConnectionError) as info:
        retry_with_backoff(task, error)
    assert info.value is error
    assert task.calls == []


@given(backoff=st.integers(1, MAX_DELAY_SECONDS), asked=st.none() | st.integers(0, 2**31))
def test_retry_after_lengthens_the_delay_never_past_sqs_maximum(
    backoff: int, asked: int | None
) -> None:
    delay = retry_delay(backoff, asked)
    assert backoff <= delay <= MAX_DELAY_SECONDS
    assert delay == min(MAX_DELAY_SECONDS, max(backoff, asked or 0))


def test_retry_honours_retry_after_capped_at_900() -> None:
    for asked, expected in ((120, 120), (86_400, MAX_DELAY_SECONDS)):
        task = _task(retries=0)
        with pytest.raises(_Retry):
            retry_with_backoff(task, ConnectionError("busy"), retry_after=asked)
        (call,) = task.calls
        assert call["delay_seconds"] == expected  # backoff_delay(0) is at most 2
        assert call["countdown"] == 0 and call["eta"] is None
    task = _task(retries=0)
    with pytest.raises(_Retry):
        retry_with_backoff(task, ConnectionError("busy"), retry_after=0)  # a date now past
    assert 1 <= task.calls[0]["delay_seconds"] <= 2  # the backoff


def test_retry_after_does_not_buy_more_retries() -> None:
    task = _task(retries=3, max_retries=3)
    error = ConnectionError("busy")
    with pytest.raises(ConnectionError) as info:
        retry_with_backoff(task, error, retry_after=60)
    assert info.value is error
    assert task.calls == []
