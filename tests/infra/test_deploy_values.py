"""The deploy-only values (image, secret ARNs, VPC, subnets): the stack files hold none, so a
preview of a stack whose operator has not set them fails with one line per key, naming the
``pulumi config set`` command; a value that is set is checked against AWS's formats and against
the others (one region, one account, no example account). The local stack needs none of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.mocks import install
from infra.plan import deploy_values, pulumi_config
from infra.settings import (
    PROJECT,
    SettingsError,
    fill_missing,
    from_mapping,
    from_pulumi_config,
    load_stack,
)
from tests.infra.conftest import ROOT, run_plan, unset_stack_doc

NS = f"{PROJECT}:"
DEPLOY_KEYS = ("image", "dataRedisSecretArn", "network.vpcId", "network.privateSubnetIds")


def deploy_doc(stack: str = "dev") -> dict[str, Any]:
    """The stack file with the fixture's deploy values: a stack an operator has set up."""
    return copy.deepcopy(fill_missing(unset_stack_doc(stack), deploy_values(stack))[0])


def unset_doc(stack: str = "dev") -> dict[str, Any]:
    return unset_stack_doc(stack)


def write_unset(root: Path, stack: str) -> Path:
    (root / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(unset_doc(stack)))
    return root


def problems(doc: dict[str, Any], deploy: bool = True) -> list[str]:
    with pytest.raises(SettingsError) as info:
        from_mapping(doc, "dev", "Pulumi.dev.yaml", deploy=deploy)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_files_hold_no_placeholder_and_no_fixture_value(stack: str) -> None:
    # Each operator sets the deploy values (`pulumi config set` writes them into the file):
    # whatever is there must load (well-formed, no example account), and none may be the
    # fixture's, which names no real account.
    load_stack(stack)
    text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
    fixture = yaml.safe_dump(deploy_values("dev")) + yaml.safe_dump(deploy_values("prod"))
    for token in ("246813579024", "vpc-0dev", "subnet-0dev", "vpc-0prod", "123456789012"):
        assert token not in text.replace("<account>", "")
    for line in fixture.splitlines():
        value = line.split(": ", 1)[-1].strip("- ")
        if len(value) > 12:
            assert value not in text, value


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_preview_of_an_unset_stack_names_each_missing_key_and_its_command(
    stack: str, tmp_path: Path
) -> None:
    # What `pulumi preview` reads: the stack file alone, through pulumi.Config.
    install(stack, config=pulumi_config(stack, write_unset(tmp_path, stack)))
    with pytest.raises(SettingsError) as info:
        from_pulumi_config()
    assert info.value.keys == list(DEPLOY_KEYS)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == len(DEPLOY_KEYS)
    for key, line in zip(DEPLOY_KEYS, lines, strict=True):
        assert line.startswith(f"  - {key} = null: is required")
        assert "pulumi config set" in line and f"{NS}{key}" in line
    assert "pulumi config set amply-jobs:image " in lines[0]
    assert "pulumi config set --path 'amply-jobs:network.privateSubnetIds[0]' subnet-" in lines[3]


def test_the_offline_plan_without_the_fixture_refuses_as_preview_does(tmp_path: Path) -> None:
    write_unset(tmp_path, "prod")
    proc = run_plan("prod", "--deploy-values", "", "--root", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    for key in DEPLOY_KEYS:
        assert f"{key} = null" in line
    assert "Traceback" not in proc.stderr


def test_the_text_plan_says_which_values_come_from_the_fixture(tmp_path: Path) -> None:
    proc = run_plan("dev", "--root", str(write_unset(tmp_path, "dev")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        "Deploy values from tests/fixtures/deploy-values.yaml (not in the stack file): "
        "amply-jobs:image, amply-jobs:resultBackendSecretArn, amply-jobs:dataRedisSecretArn, "
        "amply-jobs:network"
    )


def test_the_local_stack_loads_without_deploy_values(tmp_path: Path) -> None:
    # make run / amply-jobs dev read the stack file for tiers and groups only.
    s = load_stack("dev", write_unset(tmp_path, "dev"))
    assert s.image == "" and s.network.vpc_id == "" and s.worker_groups


def test_values_set_in_the_stack_file_win_over_the_fixture() -> None:
    doc = unset_doc("dev")
    doc["config"][NS + "network"] = {"vpcId": "vpc-0123456789abcdef0"}
    filled, keys = fill_missing(doc, deploy_values("dev"))
    assert filled["config"][NS + "network"]["vpcId"] == "vpc-0123456789abcdef0"
    assert f"{NS}network.privateSubnetIds" in keys and f"{NS}network.vpcId" not in keys


def test_the_fixture_is_a_valid_deploy() -> None:
    for stack in ("dev", "prod"):
        s = from_mapping(deploy_doc(stack), stack, deploy=True)
        assert s.account_id == "246813579024"


# (id, key, value, the start of the rule) for one value set wrong on an otherwise valid stack.
WRONG: list[tuple[str, str, Any, str]] = [
    ("the old placeholder vpc (not hex)", "network.vpcId", "vpc-0dev0000000000001",
     "must be a VPC id"),
    ("a vpc id of 9 digits", "network.vpcId", "vpc-0123abcd9", "must be a VPC id"),
    ("uppercase hex", "network.vpcId", "vpc-0123ABCD", "must be a VPC id"),
    ("the old placeholder subnet", "network.privateSubnetIds", ["subnet-0dev000000000000a"],
     "must be a subnet id"),
    ("a repeated subnet", "network.privateSubnetIds",
     ["subnet-0123abcd", "subnet-0123abcd"], "duplicate subnet"),
    ("a Docker Hub image", "image", "python:3.11", "must be an ECR image"),
    ("the example account", "image",
     "123456789012.dkr.ecr.eu-west-1.amazonaws.com/amply-jobs:1.4.2",
     "names the example account 123456789012"),
    ("latest", "image", "246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-dev-jobs:latest",
     "must be pinned by digest"),
    ("a release tag", "image",
     "246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-dev-jobs:2026.12.1",
     "must be pinned by digest"),
    ("no tag", "image", "246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-dev-jobs",
     "must be pinned by digest"),
    ("another stack's repository", "image",
     "246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-jobs@sha256:" + "ab" * 32,
     "its repository amply-jobs must be the stack's own, amply-dev-jobs"),
    ("another region", "image",
     "246813579024.dkr.ecr.us-east-1.amazonaws.com/amply-dev-jobs@sha256:" + "ab" * 32,
     "its registry's region us-east-1 must be the stack's"),
    ("a short digest", "image",
     "246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-dev-jobs@sha256:abc",
     "the digest must be sha256:"),
    ("an uppercase repository (ECR's model)", "image",
     "246813579024.dkr.ecr.eu-west-1.amazonaws.com/Amply-Jobs@sha256:" + "ab" * 32,
     "'Amply-Jobs' must match"),
    ("a secret in another account", "dataRedisSecretArn",
     "arn:aws:ssm:eu-west-1:210987654321:parameter/amply/dev/data-redis-url",
     "its account 210987654321 must be the image registry's (246813579024)"),
    ("a secret in another region", "resultBackendSecretArn",
     "arn:aws:secretsmanager:us-east-1:246813579024:secret:amply/dev/results-AbCdEf",
     "its region us-east-1 must be the stack's"),
    ("a secret in the example account", "dataRedisSecretArn",
     "arn:aws:ssm:eu-west-1:123456789012:parameter/amply/dev/data-redis-url",
     "names the example account 123456789012"),
    ("not an ARN", "dataRedisSecretArn", "/amply/dev/data-redis-url",
     "must be an SSM parameter ARN"),
    ("an S3 ARN", "resultBackendSecretArn", "arn:aws:s3:::bucket/key",
     "must be an SSM parameter ARN"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "rule"), [w[1:] for w in WRONG], ids=[w[0] for w in WRONG]
)
def test_a_wrong_deploy_value_is_refused_naming_key_value_and_rule(
    key: str, value: Any, rule: str
) -> None:
    doc = deploy_doc()
    top, _, sub = key.partition(".")
    if sub:
        doc["config"][NS + top][sub] = value
    else:
        doc["config"][NS + top] = value
    # Refused whether or not the caller deploys: a set value is always checked.
    for deploy in (False, True):
        found = problems(copy.deepcopy(doc), deploy)
        assert any(rule in p for p in found), found
        assert all(p.startswith(key) for p in found), found


def test_well_formed_values_of_every_shape_are_accepted() -> None:
    doc = deploy_doc()
    c = doc["config"]
    c[NS + "network"] = {"vpcId": "vpc-0123abcd", "privateSubnetIds": ["subnet-89abcdef"]}
    c[NS + "image"] = ("246813579024.dkr.ecr.eu-west-1.amazonaws.com/amply-dev-jobs@sha256:"
                       + "0123456789abcdef" * 4)  # fmt: skip
    c[NS + "resultBackendSecretArn"] = (
        "arn:aws:secretsmanager:eu-west-1:246813579024:secret:amply/dev/results-AbCdEf"
    )
    s = from_mapping(doc, "dev", deploy=True)
    assert s.account_id == "246813579024"


def test_every_bad_deploy_value_is_listed_at_once() -> None:
    doc = deploy_doc()
    c = doc["config"]
    c[NS + "network"]["vpcId"] = "vpc-0dev0000000000001"
    c[NS + "image"] = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/amply-jobs:latest"
    c[NS + "dataRedisSecretArn"] = "arn:aws:ssm:eu-west-1:123456789012:parameter/x"
    with pytest.raises(SettingsError) as info:
        from_mapping(doc, "dev", deploy=True)
    assert set(info.value.keys) == {"network.vpcId", "image", "dataRedisSecretArn"}


def test_a_stack_file_with_its_operators_values_still_plans_offline(tmp_path: Path) -> None:
    # Runbook, first deploy: the operator commits the secret ARNs and the network (their real
    # account), never the image (each release sets it). The offline plan (make test, the
    # pull-request preview) fills the image from the fixture: in the file's account, or the
    # one-account cross-check would refuse a stack file that is right.
    doc = unset_doc("dev")
    account = "370045891632"
    doc["config"][NS + "dataRedisSecretArn"] = (
        f"arn:aws:ssm:eu-west-1:{account}:parameter/amply/dev/data-redis-url"
    )
    doc["config"][NS + "network"] = {
        "vpcId": "vpc-0123456789abcdef0",
        "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    }
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    proc = run_plan("dev", "--json", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    outputs = yaml.safe_load(proc.stdout)["outputs"]
    assert outputs["workerImage"].startswith(f"{account}.dkr.ecr.eu-west-1.amazonaws.com/")
