"""The worker image and the GitHub workflows: what they promise, and that the linters which
``make lint-ci`` runs actually reject what they are there to reject."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.workers import (
    HEALTH_CHECK,
    HEARTBEAT_MAX_AGE_SECONDS,
    SOFT_SHUTDOWN_BUDGET_SECONDS,
    STOP_TIMEOUT_SECONDS,
    worker_environment,
)
from tests.infra.conftest import deployable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1].strip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            op, _, args = current.partition(" ")
            lines.append((op.upper(), args.strip()))
            current = ""
    return lines


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return dict(doc)


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


# ---- the image ---------------------------------------------------------------------------


def test_image_health_check_is_the_ecs_one() -> None:
    (args,) = [a for op, a in dockerfile() if op == "HEALTHCHECK"]
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", args))
    assert options == {
        "interval": f"{HEALTH_CHECK['interval']}s",
        "timeout": f"{HEALTH_CHECK['timeout']}s",
        "start-period": f"{HEALTH_CHECK['startPeriod']}s",
        "retries": str(HEALTH_CHECK["retries"]),
    }
    command = json.loads(args.split(" CMD ", 1)[1])
    assert " ".join(command) == HEALTH_CHECK["command"][1]


def test_image_environment_matches_the_task_definition() -> None:
    env: dict[str, str] = {}
    for op, args in dockerfile():
        if op == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(args)))
    task_env = worker_environment(deployable("prod"), "{}")
    for key in ("REMAP_SIGTERM", "AMPLY_HEARTBEAT_FILE"):
        assert env[key] == task_env[key], key


def test_image_is_runtime_only_and_not_root() -> None:
    ops = dockerfile()
    (base,) = [a for op, a in ops if op == "FROM"]
    assert base.startswith("python:3.11-slim")
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert "pip install --no-cache-dir /src" in runs and "[" not in runs, "no extras"
    assert not any("pulumi" in a.lower() for _, a in ops), "no pulumi in the image"
    copies = [a for op, a in ops if op == "COPY"]
    assert copies == [
        "pyproject.toml /src/",
        "contract /src/contract",
        "jobs /src/jobs",
    ], "infra/ never enters the image"
    (user,) = [a for op, a in ops if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!contract/", "!jobs/"]
    (cmd,) = [a for op, a in ops if op == "CMD"]
    assert json.loads(cmd)[:4] == ["celery", "-A", "jobs.runtime.app", "worker"]


IMAGE_IMPORT_CHECK = """
import importlib, importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pulumi", "pulumi_aws", "pulumi_policy", "infra", "moto"):
            raise ImportError(f"the worker image has no {name}")
        return None

sys.meta_path.insert(0, Blocked())
import jobs.runtime.app
RUNTIME_MODULES = ["jobs.runtime.heartbeat", "jobs.runtime.healthcheck", "jobs.runtime.worker"]
for module in jobs.runtime.app.TASK_MODULES + RUNTIME_MODULES:
    importlib.import_module(module)
print("ok")
"""


def test_worker_runtime_imports_without_pulumi_infra_or_moto() -> None:
    """What the image leaves out (infra/, the extras) is never imported by a worker."""
    proc = subprocess.run([sys.executable, "-c", IMAGE_IMPORT_CHECK], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_soft_shutdown_fits_in_the_stop_timeout() -> None:
    from jobs.runtime import config

    assert config.ECS_STOP_TIMEOUT == STOP_TIMEOUT_SECONDS == 120
    assert config.DEFAULT_SOFT_SHUTDOWN <= config.MAX_SOFT_SHUTDOWN
    assert config.MAX_SOFT_SHUTDOWN <= SOFT_SHUTDOWN_BUDGET_SECONDS <= STOP_TIMEOUT_SECONDS - 30


def test_heartbeat_interval_is_well_inside_the_health_checks_max_age() -> None:
    from jobs.runtime import heartbeat

    assert heartbeat.MAX_INTERVAL <= HEARTBEAT_MAX_AGE_SECONDS
    assert heartbeat.DEFAULT_INTERVAL * 3 <= HEARTBEAT_MAX_AGE_SECONDS
    assert HEALTH_CHECK["command"][1].endswith(f"--max-age {HEARTBEAT_MAX_AGE_SECONDS}")


def test_hadolint_passes_the_dockerfile_and_rejects_a_bad_one(tmp_path: Path) -> None:
    ok = subprocess.run([BIN / "hadolint", "Dockerfile"], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install celery\n")
    proc = subprocess.run([BIN / "hadolint", str(bad)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout


# ---- the workflows -----------------------------------------------------------------------


ALL_WORKFLOWS = ("test.yml", "preview.yml", "deploy.yml", "deploy-stack.yml", "rollback.yml")


def test_every_action_is_pinned_by_commit_sha() -> None:
    for name in ALL_WORKFLOWS:
        for step in steps(workflow(name)):
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), f"{name}: {step['uses']}"


def test_least_privilege_permissions_and_no_long_lived_aws_keys() -> None:
    for name in ALL_WORKFLOWS:
        doc = workflow(name)
        assert doc["permissions"] == {}, f"{name}: nothing by default"
        for job_name, job in doc["jobs"].items():
            perms = job.get("permissions", {})
            assert perms.get("contents") == "read", f"{name}:{job_name}"
            assert set(perms) <= {"contents", "id-token", "pull-requests"}
            assert all(v in ("read", "write") for v in perms.values())
        text = (WORKFLOWS / name).read_text()
        assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
        for step in steps(doc):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_tests_run_on_every_push() -> None:
    doc = workflow("test.yml")
    assert "push" in doc["on"] and doc["on"]["push"] is None  # every branch
    assert [s.get("run") for s in steps(doc)][-1] == ".ci/run"


def _pulumi_steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for job_name, job in doc["jobs"].items():
        for s in job.get("steps", []):
            # A step without a command only installs the CLI.
            if s.get("uses", "").startswith("pulumi/actions@") and s.get("with"):
                out[job_name] = s["with"]
    return out


def test_preview_runs_for_both_stacks_on_pull_requests_with_the_policy_pack() -> None:
    doc = workflow("preview.yml")
    assert set(doc["on"]) == {"pull_request"}
    (job,) = doc["jobs"].values()
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert job["permissions"] == {"contents": "read", "id-token": "write",
                                  "pull-requests": "write"}  # fmt: skip
    (with_,) = _pulumi_steps(doc).values()
    assert with_["command"] == "preview"
    assert with_["comment-on-pr"] is True
    assert with_["policyPacks"] == "infra/policy"
    assert with_["stack-name"].endswith("/${{ matrix.stack }}")
    assert (ROOT / with_["policyPacks"] / "PulumiPolicy.yaml").is_file()


def test_deploy_goes_to_dev_on_main_then_to_prod_behind_the_protected_environment() -> None:
    doc = workflow("deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    jobs = doc["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/test.yml"
    assert jobs["dev"]["needs"] == "test" and jobs["prod"]["needs"] == "dev"
    release = "./.github/workflows/deploy-stack.yml"
    assert jobs["dev"]["uses"] == jobs["prod"]["uses"] == release
    assert jobs["dev"]["with"] == {"stack": "dev", "environment": "dev"}
    assert jobs["prod"]["with"] == {"stack": "prod", "environment": "production"}
    assert doc["concurrency"]["cancel-in-progress"] is False
    assert "workflow_call" in workflow("test.yml")["on"]


def _runs(doc: dict[str, Any]) -> list[str]:
    return [str(s.get("run") or s.get("name") or s.get("uses")) for s in steps(doc)]


def test_a_release_builds_pushes_and_deploys_by_digest_after_a_gating_preview() -> None:
    doc = workflow("deploy-stack.yml")
    assert set(doc["on"]) == {"workflow_call"}
    (job,) = doc["jobs"].values()
    assert job["environment"] == "${{ inputs.environment }}"
    runs = _runs(doc)

    def at(fragment: str) -> int:
        (i,) = [i for i, r in enumerate(runs) if fragment in r]
        return i

    with_ = [s["with"] for s in steps(doc) if s.get("uses", "").startswith("pulumi/actions@")
             and s.get("with")]  # fmt: skip
    assert [(w["command"], w["policyPacks"], w["upsert"]) for w in with_] == [
        ("preview", "infra/policy", False), ("up", "infra/policy", False)]  # fmt: skip
    pulumi = "pulumi/actions@"
    preview, up = [i for i, s in enumerate(steps(doc))
                   if s.get("uses", "").startswith(pulumi) and s.get("with")]  # fmt: skip
    # The stack exists (created on its first run), its repository too, before anything else;
    # the image is pushed, then set by digest, then previewed with the policy pack, then up.
    assert at("pulumi stack select --create") < at("AMPLY_REGISTRY_ONLY=1 pulumi up")
    assert at("AMPLY_REGISTRY_ONLY=1 pulumi up") < at("docker push")
    assert at("docker push") < at("pulumi config set amply-jobs:image") < preview < up
    first_run = runs[at("AMPLY_REGISTRY_ONLY=1 pulumi up")]
    assert "--target" in first_run and "--target-dependents" in first_run
    # The component, not its child: the engine refuses a targeted child of an untargeted new
    # parent ("untargeted create", pulumi/pulumi#5869).
    assert "amply:jobs:WorkerImageRepository::worker-images" in first_run
    assert "--policy-pack infra/policy" in first_run
    assert 'echo "image=$REPOSITORY_URL@$digest"' in runs[at("docker push")]


def test_a_rollback_redeploys_a_previous_digest_without_building() -> None:
    doc = workflow("rollback.yml")
    assert set(doc["on"]) == {"workflow_dispatch"}
    assert doc["on"]["workflow_dispatch"]["inputs"]["digest"]["required"] is True
    assert doc["concurrency"] == workflow("deploy.yml")["concurrency"]
    (job,) = doc["jobs"].values()
    assert job["uses"] == "./.github/workflows/deploy-stack.yml"
    assert job["with"]["digest"] == "${{ inputs.digest }}"
    assert job["if"] == "github.ref == 'refs/heads/main'"
    (build,) = [r for r in _runs(workflow("deploy-stack.yml")) if "docker push" in r]
    # The rollback branch checks the digest is in the repository and skips the build.
    assert build.index("ROLLBACK_DIGEST") < build.index("docker build")
    assert "imageDigest=$ROLLBACK_DIGEST" in build


def test_preview_uses_the_image_the_stack_runs() -> None:
    runs = _runs(workflow("preview.yml"))
    (select,) = [r for r in runs if "pulumi stack output workerImage" in r]
    assert 'pulumi config set amply-jobs:image "$image"' in select


def test_workflows_pass_the_schema_and_zizmor_which_reject_bad_ones(tmp_path: Path) -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    schema = subprocess.run([BIN / "check-jsonschema", "--builtin-schema",
                             "vendor.github-workflows", *files],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert schema.returncode == 0, schema.stdout + schema.stderr
    zizmor = [str(BIN / "zizmor"), "--offline", "--min-severity", "medium"]
    audit = subprocess.run([*zizmor, str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "bad.yml").write_text(
        "on: pull_request_target\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    audit = subprocess.run([*zizmor, str(bad)], capture_output=True, text=True, timeout=120)
    assert audit.returncode != 0
    assert "template-injection" in audit.stdout and "unpinned-uses" in audit.stdout
    (bad / "bad.yml").write_text("on: push\njobs:\n  x:\n    steps: []\n")
    schema = subprocess.run([BIN / "check-jsonschema", "--builtin-schema",
                             "vendor.github-workflows", str(bad / "bad.yml")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert schema.returncode != 0


@pytest.mark.parametrize("name", ["preview.yml", "deploy-stack.yml"])
def test_aws_access_is_oidc(name: str) -> None:
    for step in steps(workflow(name)):
        if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@"):
            assert set(step["with"]) == {"role-to-assume", "role-session-name", "aws-region"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_release_builds_the_architecture_every_group_runs(stack: str) -> None:
    # The pipeline builds one platform; a group on another could never start its tasks.
    (build,) = [r for r in _runs(workflow("deploy-stack.yml")) if "docker build" in r]
    platforms = re.findall(r"--platform (\S+)", build)
    archs = {"linux/amd64": "X86_64", "linux/arm64": "ARM64"}
    built = {archs[p] for ps in platforms for p in ps.split(",")}
    assert {g.architecture for g in deployable(stack).worker_groups} <= built
