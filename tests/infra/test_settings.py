"""The settings model: the real stack files load; every invalid file is rejected with the bad key
named (all bad keys at once); inside the program, pulumi.Config yields the same settings."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.mocks import install
from infra.plan import deploy_values, pulumi_config
from infra.settings import SettingsError, from_mapping, from_pulumi_config, load_stack

ROOT = Path(__file__).resolve().parents[2]
NS = "amply-jobs:"


def stack_doc(stack: str = "dev") -> dict[str, Any]:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())


def cfg(doc: dict[str, Any], key: str) -> Any:
    return doc["config"][NS + key]


Mutation = Callable[[dict[str, Any]], None]


def setter(key: str, path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = cfg(doc, key)
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return mutate


def top(key: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["config"][NS + key] = value

    return mutate


def drop(full_key: str) -> Mutation:
    return lambda doc: doc["config"].pop(full_key)


# (id, mutation of the dev stack file, the key the error must name)
INVALID: list[tuple[str, Mutation, str]] = [
    (
        "visibility above 43200",
        setter("tiers", (0, "visibilityTimeoutSeconds"), 43_201),
        "tiers[0].visibilityTimeoutSeconds",
    ),
    (
        "visibility negative",
        setter("tiers", (1, "visibilityTimeoutSeconds"), -1),
        "tiers[1].visibilityTimeoutSeconds",
    ),
    (
        "visibility not a number",
        setter("tiers", (2, "visibilityTimeoutSeconds"), "1800"),
        "tiers[2].visibilityTimeoutSeconds",
    ),
    (
        "retention below 60",
        setter("tiers", (1, "messageRetentionSeconds"), 59),
        "tiers[1].messageRetentionSeconds",
    ),
    (
        "retention above 14 days",
        setter("tiers", (1, "messageRetentionSeconds"), 1_209_601),
        "tiers[1].messageRetentionSeconds",
    ),
    (
        "message size below 1024",
        setter("tiers", (2, "maximumMessageSize"), 1_023),
        "tiers[2].maximumMessageSize",
    ),
    (
        "message size above 256 KiB",
        setter("tiers", (2, "maximumMessageSize"), 262_145),
        "tiers[2].maximumMessageSize",
    ),
    (
        "long poll above 20",
        setter("tiers", (0, "receiveWaitTimeSeconds"), 21),
        "tiers[0].receiveWaitTimeSeconds",
    ),
    ("delay above 900", setter("tiers", (0, "delaySeconds"), 901), "tiers[0].delaySeconds"),
    ("maxReceiveCount 0", setter("tiers", (0, "maxReceiveCount"), 0), "tiers[0].maxReceiveCount"),
    (
        "maxReceiveCount 1001",
        setter("tiers", (1, "maxReceiveCount"), 1_001),
        "tiers[1].maxReceiveCount",
    ),
    ("duplicate tier name", setter("tiers", (2, "name"), "high"), "tiers[2].name"),
    (
        "group queue not a tier",
        setter("workerGroups", (1, "queues"), ["low", "urgent"]),
        "workerGroups[1].queues[1]",
    ),
    (
        "downstream not a tier",
        setter("workerGroups", (0, "downstream"), ["reports"]),
        "workerGroups[0].downstream[0]",
    ),
    (
        "min above max capacity",
        setter("workerGroups", (0, "minCapacity"), 5),
        "workerGroups[0].minCapacity",
    ),
    # high: base visibility 120; 43,081 s + 120 s is past SQS's 12 h from receipt.
    (
        "time limit past 12 h from receipt",
        setter("tiers", (0, "timeLimitSeconds"), 43_081),
        "tiers[0].timeLimitSeconds",
    ),
    (
        "soft limit not below hard",
        setter("tiers", (1, "softTimeLimitSeconds"), 1_680),
        "tiers[1].softTimeLimitSeconds",
    ),
    ("fargate cpu", setter("workerGroups", (0, "cpu"), 300), "workerGroups[0].cpu"),
    (
        "fargate memory for cpu",
        setter("workerGroups", (1, "memory"), 4_096),
        "workerGroups[1].memory",
    ),
    ("prefix not lowercase", top("namePrefix", "Amply_Dev"), "namePrefix"),
    ("region missing", drop("aws:region"), "aws:region"),
    ("alarm email", setter("alarms", ("emails",), ["oncall-at-amply"]), "alarms.emails[0]"),
    ("alarm period", setter("alarms", ("periodSeconds",), 45), "alarms.periodSeconds"),
    ("log retention not a CloudWatch value", top("logRetentionDays", 10), "logRetentionDays"),
    ("unknown top-level key", top("tierz", []), "tierz"),
    ("unknown tier key", setter("tiers", (0, "visibility"), 600), "tiers[0].visibility"),
    ("no tiers", top("tiers", []), "tiers"),
    (
        "dlq retention",
        setter("dlq", ("messageRetentionSeconds",), 30),
        "dlq.messageRetentionSeconds",
    ),
    ("protect not a boolean", top("protect", "yes"), "protect"),
    (
        "receive fill over a second",
        setter("workerGroups", (1, "receiveFillMs"), 1_500),
        "workerGroups[1].receiveFillMs",
    ),
    # Last, so that the cases picked by index above stay the same.
    (
        "base visibility too short to extend",
        setter("tiers", (0, "visibilityTimeoutSeconds"), 1),
        "tiers[0].visibilityTimeoutSeconds",
    ),
    (
        "tier no worker group consumes",
        setter("workerGroups", (1, "queues"), ["celery"]),
        "tiers[2].name",
    ),
    (
        "a task routed to a tier the stack lacks",
        lambda doc: (
            cfg(doc, "tiers").pop(2),
            cfg(doc, "workerGroups").pop(1),
        ),
        "tiers",
    ),
    (
        "every process reserved for the first queue",
        setter("workerGroups", (0, "reservedSlots"), 4),
        "workerGroups[0].reservedSlots",
    ),
]


@pytest.mark.parametrize(
    ("index", "concurrency", "given", "expected"),
    [(0, 4, None, 1), (0, 1, None, 0), (1, 2, None, 0), (0, 4, 0, 0), (0, 4, 3, 3)],
)  # fmt: skip
def test_a_group_of_several_queues_keeps_a_process_for_its_first_by_default(
    index: int, concurrency: int, given: int | None, expected: int
) -> None:
    """dev's group 0 consumes high and celery, group 1 low alone."""
    doc = copy.deepcopy(stack_doc())
    group = cfg(doc, "workerGroups")[index]
    group["concurrency"] = concurrency
    if given is not None:
        group["reservedSlots"] = given
    settings = from_mapping(doc, "dev", "Pulumi.dev.yaml")
    assert settings.worker_groups[index].reserved_slots == expected
    env = settings.worker_groups[index].environment()
    assert env["AMPLY_SQS_RESERVED_SLOTS"] == str(expected)


def test_the_matrix_is_big_enough() -> None:
    assert len(INVALID) >= 15
    assert len({key for _, _, key in INVALID}) >= 15


@pytest.mark.parametrize(
    ("mutation", "key"), [(m, k) for _, m, k in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_settings_are_rejected_naming_the_key(mutation: Mutation, key: str) -> None:
    doc = copy.deepcopy(stack_doc())
    mutation(doc)
    with pytest.raises(SettingsError) as info:
        from_mapping(doc, "dev", "Pulumi.dev.yaml")
    err = info.value
    # The key itself is named first; its consequences may follow (a negative visibility
    # timeout also puts the time limit above it; a renamed tier leaves a group's queue undefined).
    assert err.keys[0] == key, err.one_line()
    assert key in err.one_line() and "\n" not in err.one_line()
    assert key in str(err)


def test_every_bad_key_is_listed_at_once() -> None:
    doc = copy.deepcopy(stack_doc())
    chosen = [INVALID[0], INVALID[12], INVALID[19], INVALID[21]]
    for _, mutate, _ in chosen:
        mutate(doc)
    with pytest.raises(SettingsError) as info:
        from_mapping(doc, "dev")
    assert sorted(info.value.keys) == sorted(k for _, _, k in chosen)
    # Each problem carries the value and the rule, not just the key.
    first = info.value.problems[0]
    assert first.value is not None and first.rule


def test_a_broken_yaml_file_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text("config:\n  amply-jobs:tiers: [\n")
    with pytest.raises(SettingsError) as info:
        load_stack("broken", tmp_path)
    assert "not valid YAML" in info.value.one_line()


def test_an_unknown_stack_names_the_stacks_there(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_stack("staging")
    assert "Pulumi.staging.yaml" in info.value.one_line()
    assert "dev" in info.value.one_line() and "prod" in info.value.one_line()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_real_stack_files_load(stack: str) -> None:
    s = load_stack(stack)
    prefix = "amply" if stack == "prod" else "amply-dev"
    assert s.name_prefix == prefix
    assert s.region == "eu-west-1"
    assert s.protect is (stack == "prod")
    assert [s.queue_name(t) for t in s.tiers] == [
        f"{prefix}-celery-high",
        f"{prefix}-celery",
        f"{prefix}-celery-low",
    ]
    assert s.dlq_name == f"{prefix}-celery-dlq"
    assert s.tier_names == ("high", "celery", "low")
    assert s.tier("high").visibility_timeout == 120
    assert s.tier("celery").visibility_timeout == s.tier("low").visibility_timeout == 120
    assert {t.max_receive_count for t in s.tiers} == {5}
    assert {g.name for g in s.worker_groups} == {"high", "low"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pulumi_config_gives_the_same_settings_as_the_file(stack: str) -> None:
    # The engine hands the program plain strings as-is and everything else as JSON.
    fill = deploy_values(stack)
    install(stack, config=pulumi_config(stack, fill=fill))
    assert from_pulumi_config() == load_stack(stack, deploy=True, fill=fill)


def test_pulumi_config_reports_bad_values_like_the_file() -> None:
    config = pulumi_config("dev", fill=deploy_values("dev"))
    config[NS + "namePrefix"] = "Not_Valid"
    install("dev", config=config)
    with pytest.raises(SettingsError) as info:
        from_pulumi_config()
    assert info.value.keys == ["namePrefix"]
