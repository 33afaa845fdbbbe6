"""The environment contract parsed by jobs.runtime.config (pure) and its errors, in one
line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.runtime.app import broker_url, settings_from_environment
from jobs.runtime.config import DEFAULT_TIERS, TierLimits, load_config
from jobs.runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
QUEUES = {
    "high": "http://127.0.0.1:5000/123456789012/p-celery-high",
    "celery": "http://127.0.0.1:5000/123456789012/p-celery",
    "low": "http://127.0.0.1:5000/123456789012/p-celery-low",
}


def contract(**extra: str) -> dict[str, str]:
    return {"AMPLY_QUEUES": json.dumps(QUEUES), "AWS_REGION": "eu-west-1", **extra}


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_full_contract_is_parsed() -> None:
    tiers = {
        "high": {"visibility_timeout": 60, "soft_time_limit": 40, "time_limit": 50},
        "celery": {"visibility_timeout": 90, "soft_time_limit": 60, "time_limit": 80},
        "low": {"visibility_timeout": 90, "soft_time_limit": 60, "time_limit": 80},
    }
    cfg = load_config(contract(AMPLY_SQS_ENDPOINT="http://127.0.0.1:5000", AMPLY_ENV="dev",
                               AMPLY_RESULT_BACKEND="redis://127.0.0.1:6379/1",
                               AMPLY_TIERS=json.dumps(tiers)))  # fmt: skip
    assert dict(cfg.queues) == QUEUES
    assert cfg.region == "eu-west-1"
    assert cfg.sqs_endpoint == "http://127.0.0.1:5000"
    assert cfg.env == "dev"
    assert cfg.result_backend == "redis://127.0.0.1:6379/1"
    assert cfg.tiers["high"] == TierLimits(60, 40, 50)
    assert cfg.limits_for("low") == TierLimits(90, 60, 80)
    assert cfg.limits_for("unknown") == TierLimits(60, 40, 50)  # the strictest tier
    with pytest.raises(AttributeError):
        cfg.region = "us-east-1"  # type: ignore[misc]


def test_defaults_are_the_prod_tiers_and_no_backend() -> None:
    cfg = load_config(contract())
    assert cfg.tiers == DEFAULT_TIERS
    assert cfg.tiers["high"] == TierLimits(120, 480, 540)
    assert cfg.tiers["low"] == TierLimits(120, 1500, 1680)
    assert cfg.result_backend is None and cfg.sqs_endpoint is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "AMPLY_QUEUES is not set"),
        ("", "AMPLY_QUEUES is not set"),
        ("{high: x}", "AMPLY_QUEUES is not valid JSON"),
        ('["http://x/1"]', "AMPLY_QUEUES must be a JSON object"),
        ('{"high": 3}', "the URL of queue 'high' must be a string"),
        ('{"high": "p-celery-high"}', "is not an http(s) URL"),
        (json.dumps({"high": QUEUES["high"]}), "AMPLY_QUEUES lacks queue(s) celery, low"),
    ],
)
def test_bad_amply_queues_name_the_variable(value: str | None, expected: str) -> None:
    env = contract()
    if value is None:
        del env["AMPLY_QUEUES"]
    else:
        env["AMPLY_QUEUES"] = value
    message = error_of(env)
    assert expected in message
    assert message.startswith("AMPLY_QUEUES")


def test_missing_region() -> None:
    env = contract()
    del env["AWS_REGION"]
    assert error_of(env).startswith("AWS_REGION is not set")


def test_a_time_limit_past_the_base_visibility_is_the_workers_to_extend() -> None:
    """The visibility timeout is a base the worker extends while a task runs: a 25-minute
    limit on a 2-minute base is a valid contract, and the receive asks for that base."""
    tiers = {name: {"visibility_timeout": 120, "soft_time_limit": 1500, "time_limit": 1680}
             for name in QUEUES}  # fmt: skip
    env = contract(AMPLY_TIERS=json.dumps(tiers))
    assert load_config(env).tiers["low"].time_limit == 1680
    options = settings_from_environment(env)["broker_transport_options"]
    assert options["amply_visibility"] == dict.fromkeys(QUEUES, 120)


def test_limits_sqs_cannot_keep_are_refused() -> None:
    tiers = {name: {"visibility_timeout": 600, "soft_time_limit": 480, "time_limit": 540}
             for name in QUEUES}  # fmt: skip
    tiers["low"] = {"visibility_timeout": 60, "soft_time_limit": 43_000, "time_limit": 43_150}
    message = error_of(contract(AMPLY_TIERS=json.dumps(tiers)))
    assert message.startswith("AMPLY_TIERS: tier 'low' has time_limit 43150s")
    assert "(12 h) from receipt" in message
    tiers["low"] = {"visibility_timeout": 1, "soft_time_limit": 20, "time_limit": 30}
    message = error_of(contract(AMPLY_TIERS=json.dumps(tiers)))
    assert message.startswith("AMPLY_TIERS: tier 'low' has visibility_timeout 1s")


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ("nope", "AMPLY_TIERS is not valid JSON"),
        ('{"high": {"visibility_timeout": 60, "soft_time_limit": 40}}', "lacks 'time_limit'"),
        ('{"high": {"visibility_timeout": 60, "soft_time_limit": 55, "time_limit": 50}}',
         "soft_time_limit 55s above its time_limit 50s"),
        ('{"high": {"visibility_timeout": "60", "soft_time_limit": 4, "time_limit": 5}}',
         "high.visibility_timeout must be a positive whole number"),
        ('{"high": {"visibility_timeout": 60, "soft_time_limit": 40, "time_limit": 50}}',
         "no limits for queue(s) celery, low"),
    ],
)  # fmt: skip
def test_bad_amply_tiers(tiers: str, expected: str) -> None:
    assert expected in error_of(contract(AMPLY_TIERS=tiers))


def test_bad_endpoint_backend_and_soft_shutdown() -> None:
    assert "AMPLY_SQS_ENDPOINT" in error_of(contract(AMPLY_SQS_ENDPOINT="localhost:4566"))
    message = error_of(contract(AMPLY_RESULT_BACKEND="amqp://user:secret@host//"))
    assert message.startswith("AMPLY_RESULT_BACKEND") and "secret" not in message
    assert "from 1 to 90" in error_of(contract(AMPLY_SOFT_SHUTDOWN_SECONDS="120"))


@pytest.mark.parametrize("raw", ["-1", "abc", "2.5", "1001", "20ms"])
def test_a_bad_receive_fill_is_named_with_its_range(raw: str) -> None:
    message = error_of(contract(AMPLY_SQS_RECEIVE_FILL_MS=raw))
    assert message.startswith("AMPLY_SQS_RECEIVE_FILL_MS") and "from 0 to 1000" in message
    assert repr(raw) in message


@pytest.mark.parametrize(("raw", "seconds"), [(None, 0.02), ("0", 0.0), ("150", 0.15)])
def test_the_receive_fill_reaches_the_transport(raw: str | None, seconds: float) -> None:
    env = contract() if raw is None else contract(AMPLY_SQS_RECEIVE_FILL_MS=raw)
    options = settings_from_environment(env)["broker_transport_options"]
    assert options["amply_receive_fill_seconds"] == seconds


@pytest.mark.parametrize("raw", ["-1", "one", "1.5", "64"])
def test_a_bad_reserved_slots_is_named_with_its_range(raw: str) -> None:
    message = error_of(contract(AMPLY_SQS_RESERVED_SLOTS=raw))
    assert message.startswith("AMPLY_SQS_RESERVED_SLOTS") and "from 0 to 63" in message
    assert repr(raw) in message


@pytest.mark.parametrize(("raw", "slots"), [(None, 0), ("0", 0), ("2", 2)])
def test_the_reserved_slots_reach_the_transport(raw: str | None, slots: int) -> None:
    env = contract() if raw is None else contract(AMPLY_SQS_RESERVED_SLOTS=raw)
    options = settings_from_environment(env)["broker_transport_options"]
    assert options["amply_reserved_slots"] == slots


def test_celery_settings_follow_the_contract() -> None:
    conf = settings_from_environment(contract(AMPLY_SQS_ENDPOINT="http://127.0.0.1:5000"))
    options = conf["broker_transport_options"]
    assert conf["broker_url"] == "sqs://127.0.0.1:5000"
    assert conf["broker_transport"] == "jobs.runtime.transport:Transport"
    assert options["predefined_queues"] == {k: {"url": v} for k, v in QUEUES.items()}
    assert "queue_name_prefix" not in options
    assert (options["wait_time_seconds"], options["polling_interval"],
            options["visibility_timeout"]) == (20, 1, 1800)  # fmt: skip
    assert conf["task_routes"] == {"amply.jobs.webhooks.*": {"queue": "high"},
                                   "amply.jobs.checkpoints.*": {"queue": "celery"},
                                   "amply.jobs.reports.*": {"queue": "low"}}  # fmt: skip
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["task_acks_on_failure_or_timeout"] is False
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_enable_remote_control"] is False
    assert conf["result_backend"] is None
    assert 0 < conf["worker_soft_shutdown_timeout"] <= 90
    assert broker_url(None) == "sqs://"
    assert broker_url("https://sqs.example.test") == "sqs://sqs.example.test:443"


def test_importing_the_app_needs_no_contract_and_no_infra() -> None:
    code = ("import sys, jobs.runtime.app; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pulumi', 'infra')]; "
            "print(bad)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "AMPLY_QUEUES is not set"),
        ({"AMPLY_QUEUES": "{not json"}, "AMPLY_QUEUES is not valid JSON"),
        ({"AMPLY_QUEUES": json.dumps(QUEUES), "AWS_REGION": "eu-west-1",
          "AMPLY_TIERS": json.dumps({q: {"visibility_timeout": 60, "soft_time_limit": 50,
                                         "time_limit": 43_200} for q in QUEUES})},
         "time_limit 43200s; with its visibility_timeout 60s that is past the 43200s"),
    ],
)  # fmt: skip
def test_the_worker_command_fails_in_one_line(env: dict[str, str], expected: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "jobs.runtime.app", "worker", "-c", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    assert out.returncode == 78
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("amply-jobs: configuration error: ")
    assert expected in lines[0]
