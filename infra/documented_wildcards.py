"""The only IAM wildcards this project grants, each with the reason AWS leaves no alternative.

Every other policy document is wildcard-free (``infra.iam.wildcards`` and the policy pack's
``no-iam-wildcards`` rule enforce it). The ECS execution role of a worker service needs two
grants that cannot name a single resource:

* ``ecr:GetAuthorizationToken`` supports no resource-level permissions: IAM accepts only
  ``"Resource": "*"`` for it. The token alone grants nothing; pulling an image still needs
  ``ecr:BatchGetImage`` and friends on the one repository, which the role names by ARN.
* ``logs:CreateLogStream`` and ``logs:PutLogEvents`` on the streams of *one* log group: ECS
  names each stream ``<prefix>/<container>/<task id>``, and the task id exists only once the
  task starts, so the grant is ``<log group ARN>:*`` (the form CloudWatch Logs documents for a
  log group's streams).

The task role of a worker service needs one more:

* ``ecs:UpdateTaskProtection`` / ``ecs:GetTaskProtection`` on the tasks of *one* cluster
  (``arn:aws:ecs:<region>:<account>:task/<cluster>/*``): the worker protects its own task
  from scale-in while it runs work, and a task's id, like a log stream's, exists only once
  the task starts.

A statement may use one of these wildcards only if every action in it is allowed that exact
wildcard: a statement can never smuggle another action in next to a documented exception.

Pure: no Pulumi import, so the policy pack and the tests can call it on any document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ECR_TOKEN_ACTION = "ecr:GetAuthorizationToken"
LOG_STREAM_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
TASK_PROTECTION_ACTIONS = ("ecs:GetTaskProtection", "ecs:UpdateTaskProtection")
_CLUSTER_TASKS_RE = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/[A-Za-z0-9_-]+/\*$")

# One log group's streams: arn:<partition>:logs:<region>:<account>:log-group:<name>:*
_LOG_GROUP_STREAMS_RE = re.compile(
    r"^arn:aws[a-z-]*:logs:[a-z0-9-]+:\d{12}:log-group:[A-Za-z0-9_./#-]+:\*$"
)


def documented_wildcard(actions: Iterable[str], resource: str) -> bool:
    """True if ``resource`` holds a wildcard this module documents for *all* of ``actions``."""
    acts = list(actions)
    if not acts or any("*" in a or "?" in a for a in acts):
        return False
    if resource == "*":
        return all(a == ECR_TOKEN_ACTION for a in acts)
    if _LOG_GROUP_STREAMS_RE.match(resource):
        return all(a in LOG_STREAM_ACTIONS for a in acts)
    if _CLUSTER_TASKS_RE.match(resource):
        return all(a in TASK_PROTECTION_ACTIONS for a in acts)
    return False
