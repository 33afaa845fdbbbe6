"""The stack's ECR repository of worker images, owned by the program.

The deploy workflow (.github/workflows/deploy-stack.yml) builds the worker image, pushes it
here and deploys it by digest (``amply-jobs:image``, which the settings accept only in this
repository). The repository keeps what a release and a rollback need:

* **immutable tags**: a pushed tag never moves, so the commit a tag names is the image it has;
* **scan on push**: every image is scanned for known vulnerabilities when it arrives;
* **a lifecycle policy**: untagged images (layers of replaced builds) expire after a day, and
  the last :data:`KEEP_TAGGED` tagged images are kept, so a rollback to any of the last 30
  releases finds its image (docs/runbook.md, "Roll back a release").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings
from infra.tags import common_tags

COMPONENT_TYPE = "amply:jobs:WorkerImageRepository"
KEEP_TAGGED = 30
"""Tagged images kept: the releases a rollback can go back to."""
UNTAGGED_DAYS = 1
"""Days an untagged image is kept."""


def lifecycle_policy(
    keep_tagged: int = KEEP_TAGGED, untagged_days: int = UNTAGGED_DAYS
) -> dict[str, Any]:
    """The repository's lifecycle policy (ECR's ``PutLifecyclePolicy`` document). The rule
    matching any tag comes last: ECR requires a ``tagStatus: any`` rule to have the highest
    priority number, and each image is judged by the first rule that selects it."""
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"Expire untagged images after {untagged_days} day(s)",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_days,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": f"Keep the last {keep_tagged} tagged images (the rollback window)",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": ["*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_tagged,
                },
                "action": {"type": "expire"},
            },
        ]
    }


@dataclass(frozen=True)
class WorkerImageRepositoryArgs:
    settings: StackSettings
    """The stack: the repository is ``<namePrefix>-jobs``, protected where ``protect`` is set."""


class WorkerImageRepository(pulumi.ComponentResource):
    """The ECR repository the worker image is pushed to and deployed from.

    Outputs: ``name``, ``url`` (``<account>.dkr.ecr.<region>.amazonaws.com/<name>``), ``arn``."""

    name: pulumi.Output[str]
    url: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: WorkerImageRepositoryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        s = args.settings
        self.repository = aws.ecr.Repository(
            name,
            name=s.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "AES256"}],
            # Never delete images with the repository: the running release pulls from it.
            force_delete=False,
            tags=common_tags(s),
            # Deleting the repository deletes every image a rollback would need.
            opts=pulumi.ResourceOptions(parent=self, protect=s.protect),
        )
        self.lifecycle = aws.ecr.LifecyclePolicy(
            name,
            repository=self.repository.name,
            policy=json.dumps(lifecycle_policy(), separators=(",", ":")),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.repository.name
        self.url = self.repository.repository_url
        self.arn = self.repository.arn
        self.register_outputs({"name": self.name, "url": self.url, "arn": self.arn})
