"""The offline plan: the real program under mocks, in a fresh interpreter; snapshots per stack
that fail with a readable diff when the infrastructure changes."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import ROOT, SNAPSHOTS, STACKS, plan_json_text, run_plan


@pytest.mark.parametrize("stack", STACKS)
def test_the_plan_matches_its_snapshot(stack: str, update_snapshots: bool) -> None:
    current = plan_json_text(stack)
    path = SNAPSHOTS / f"{stack}.json"
    if update_snapshots:
        path.write_text(current)
        return
    assert path.is_file(), (
        f"no snapshot {path.relative_to(ROOT)}; create it with "
        "`pytest tests/infra --update-snapshots`"
    )
    saved = path.read_text()
    if current != saved:
        pytest.fail(
            f"the infrastructure of stack {stack} changed. If that is intended, review the "
            f"changes and run `pytest tests/infra --update-snapshots` (or set "
            f"AMPLY_UPDATE_SNAPSHOTS=1).\n{describe_changes(saved, current)}",
            pytrace=False,
        )


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``: a change reads as one path, not a hunk."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{path}[{i}]"))
        return out
    return {path: value}


def describe_changes(saved_text: str, current_text: str) -> str:
    """Resources added, removed and changed (property by property), and changed outputs."""
    try:
        saved, current = json.loads(saved_text), json.loads(current_text)
    except ValueError:
        return "".join(
            difflib.unified_diff(saved_text.splitlines(True), current_text.splitlines(True))
        )

    def index(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f"{r['type']}  {r['name']}": r for r in plan["resources"]}

    before, after = index(saved), index(current)
    lines = [f"+ added    {k}" for k in sorted(set(after) - set(before))]
    lines += [f"- removed  {k}" for k in sorted(set(before) - set(after))]
    for key in sorted(set(before) & set(after)):
        old, new = _flatten(before[key]), _flatten(after[key])
        changed = sorted(
            p for p in set(old) | set(new) if old.get(p, "<unset>") != new.get(p, "<unset>")
        )
        if changed:
            lines.append(f"~ changed  {key}")
            lines += [
                f"      {p}: {json.dumps(old.get(p, '<unset>'))} -> "
                f"{json.dumps(new.get(p, '<unset>'))}"
                for p in changed
            ]
    old_out, new_out = _flatten(saved["outputs"]), _flatten(current["outputs"])
    for p in sorted(set(old_out) | set(new_out)):
        if old_out.get(p, "<unset>") != new_out.get(p, "<unset>"):
            lines.append(
                f"~ output   {p}: {json.dumps(old_out.get(p, '<unset>'))} -> "
                f"{json.dumps(new_out.get(p, '<unset>'))}"
            )
    return "\n".join(lines) or "(only formatting differs)"


def test_a_change_is_described_resource_by_resource() -> None:
    saved = {
        "resources": [
            {"type": "aws:sqs/queue:Queue", "name": "q", "inputs": {"a": 1, "p": {"S": [1, 2]}}},
            {"type": "aws:sns/topic:Topic", "name": "gone", "inputs": {}},
        ],
        "outputs": {"url": "x"},
    }
    current = {
        "resources": [
            {"type": "aws:sqs/queue:Queue", "name": "q", "inputs": {"a": 2, "p": {"S": [1, 3]}}},
            {"type": "aws:sns/topic:Topic", "name": "new", "inputs": {}},
        ],
        "outputs": {"url": "y"},
    }
    text = describe_changes(json.dumps(saved), json.dumps(current))
    assert text.splitlines() == [
        "+ added    aws:sns/topic:Topic  new",
        "- removed  aws:sns/topic:Topic  gone",
        "~ changed  aws:sqs/queue:Queue  q",
        "      inputs.a: 1 -> 2",
        "      inputs.p.S[1]: 2 -> 3",
        '~ output   url: "x" -> "y"',
    ]


def test_the_plan_is_deterministic() -> None:
    first = run_plan("dev", "--json")
    second = run_plan("dev", "--json")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    text_a, text_b = run_plan("prod"), run_plan("prod")
    assert text_a.stdout == text_b.stdout and text_a.returncode == 0


@pytest.mark.parametrize("stack", STACKS)
def test_json_shape(stack: str, plan_of: Callable[[str], dict[str, Any]]) -> None:
    plan = plan_of(stack)
    assert set(plan) == {"stack", "resources", "outputs"}
    assert plan["stack"] == stack
    for r in plan["resources"]:
        assert {"type", "name", "inputs"} <= set(r)
        assert isinstance(r["inputs"], dict)
    types = {r["type"] for r in plan["resources"]}
    assert {
        "aws:sqs/queue:Queue",
        "aws:sqs/queuePolicy:QueuePolicy",
        "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:sns/topic:Topic",
        "aws:cloudwatch/dashboard:Dashboard",
        "aws:iam/policy:Policy",
    } <= types
    # Policy documents arrive parsed, not as escaped strings.
    for r in plan["resources"]:
        if r["type"] in ("aws:iam/policy:Policy", "aws:sqs/queuePolicy:QueuePolicy"):
            assert isinstance(r["inputs"]["policy"], dict)
            assert r["inputs"]["policy"]["Version"] == "2012-10-17"
    queue = next(
        r
        for r in plan["resources"]
        if r["type"] == "aws:sqs/queue:Queue" and "redrivePolicy" in r["inputs"]
    )
    assert isinstance(queue["inputs"]["redrivePolicy"], dict)


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_hold_the_runtime_contract(
    stack: str, plan_of: Callable[[str], dict[str, Any]]
) -> None:
    out = plan_of(stack)["outputs"]
    prefix = "amply" if stack == "prod" else "amply-dev"
    base = "https://sqs.eu-west-1.amazonaws.com/246813579024"
    urls = {
        "high": f"{base}/{prefix}-celery-high",
        "celery": f"{base}/{prefix}-celery",
        "low": f"{base}/{prefix}-celery-low",
    }
    assert out["queueUrls"] == urls
    assert out["queueArns"] == {
        t: f"arn:aws:sqs:eu-west-1:246813579024:{u.rsplit('/', 1)[1]}" for t, u in urls.items()
    }
    assert out["dlqUrl"] == f"{base}/{prefix}-celery-dlq"
    assert out["dlqArn"] == f"arn:aws:sqs:eu-west-1:246813579024:{prefix}-celery-dlq"
    # AMPLY_QUEUES is a JSON string (the env var's value), in priority order.
    assert isinstance(out["jobsEnvironment"], str)
    assert list(json.loads(out["jobsEnvironment"]).items()) == list(urls.items())
    assert json.loads(out["jobsTiers"])["high"] == {
        "visibility_timeout": 120,
        "soft_time_limit": 480,
        "time_limit": 540,
    }
    assert out["alarmTopicArn"] == f"arn:aws:sns:eu-west-1:246813579024:{prefix}-jobs-alarms"
    assert out["dashboardName"] == f"{prefix}-jobs"
    assert out["producerPolicyArn"].startswith("arn:aws:iam::246813579024:policy/")
    assert out["dlqOperatorPolicyArn"].startswith("arn:aws:iam::246813579024:policy/")
    names = {
        r["inputs"].get("name")
        for r in plan_of(stack)["resources"]
        if r["type"] == "aws:iam/policy:Policy"
    }
    for key in ("producerPolicyArn", "dlqOperatorPolicyArn"):
        assert out[key].rsplit("/", 1)[1] in names


def test_prod_queues_are_protected_in_the_plan(plan_of: Callable[[str], dict[str, Any]]) -> None:
    for stack, expected in (("prod", True), ("dev", False)):
        queues = [r for r in plan_of(stack)["resources"] if r["type"] == "aws:sqs/queue:Queue"]
        # 3 tiers, the DLQ and the schedules' DLQ (infra/schedules.py)
        assert len(queues) == 5 and {r["protect"] for r in queues} == {expected}


def test_text_plan_lists_every_resource_and_output(
    plan_of: Callable[[str], dict[str, Any]],
) -> None:
    proc = run_plan("prod")
    assert proc.returncode == 0, proc.stderr
    plan = plan_of("prod")
    for r in plan["resources"]:
        assert f"+ {r['type']}  {r['name']}" in proc.stdout
    for key in plan["outputs"]:
        assert f"  {key}: " in proc.stdout
    assert "+ aws:sqs/queue:Queue  amply-celery-high [protected]" in proc.stdout
    assert f"Resources: {len(plan['resources'])}" in proc.stdout


def test_a_bad_settings_file_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    doc = (ROOT / "Pulumi.dev.yaml").read_text()
    doc = doc.replace("maxReceiveCount: 5", "maxReceiveCount: 0", 1)
    doc = doc.replace("namePrefix: amply-dev", "namePrefix: Amply_Dev")
    (tmp_path / "Pulumi.broken.yaml").write_text(doc)
    proc = run_plan("broken", "--root", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "tiers[0].maxReceiveCount" in lines[0] and "namePrefix" in lines[0]
    assert "Traceback" not in proc.stderr


def test_an_unknown_stack_exits_2() -> None:
    proc = run_plan("staging")
    assert proc.returncode == 2
    assert "Pulumi.staging.yaml" in proc.stderr and "dev, prod" in proc.stderr
