"""The moto server, with its IAM evaluation of SQS requests brought in line with AWS's.

Run as ``python -m tests.support.moto_iam -H HOST -p PORT`` (the arguments of
``python -m moto.server``), with ``INITIAL_NO_AUTH_ACTION_COUNT`` set to turn enforcement on.

moto evaluates identity policies for real (``moto/iam/access_control.py``: Allow/Deny, Action
and Resource patterns), but for SQS it names some requests differently from AWS, which would
make a correct least-privilege policy fail (or a wrong one pass) for reasons that do not exist
in AWS. Exactly these are corrected here, nothing else; each follows AWS's documentation:

* **Batch actions.** AWS authorizes ``SendMessageBatch``, ``DeleteMessageBatch`` and
  ``ChangeMessageVisibilityBatch`` with ``sqs:SendMessage``, ``sqs:DeleteMessage`` and
  ``sqs:ChangeMessageVisibility``; they cannot be granted on their own (SQS Developer Guide,
  "Amazon SQS batch actions"). moto checks ``sqs:SendMessageBatch``, which no valid policy
  grants.
* **The queue a request is about.** AWS authorizes ``GetQueueUrl`` on the ARN of the queue it
  names (``QueueName``), and the message move task actions on the ARN of the *source* queue
  (``SourceArn``; for ``CancelMessageMoveTask``, the source queue encoded in the task handle).
  moto reads only ``QueueUrl``, so it evaluates these against ``*``, which no queue-scoped
  policy matches.

* **How a refusal reads.** SQS speaks JSON to current SDKs; moto answers an authorization
  failure in XML whatever the protocol, so boto3 sees error code ``403`` instead of
  ``AccessDenied`` (or ``InvalidClientTokenId``), and kombu's handling of ``AccessDenied`` would
  never run. Refusals of JSON requests are answered in JSON, with the code AWS gives.

moto does not implement the message move tasks: once authorized, they fail with moto's
"not implemented" error, so a test sees that authorization passed and nothing more.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.iam import access_control
from moto.sqs.exceptions import QueueDoesNotExist
from moto.sqs.responses import SQSResponse
from werkzeug.exceptions import HTTPException

BATCH_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
MOVE_TASK_ACTIONS = ("StartMessageMoveTask", "ListMessageMoveTasks")


def move_task_handle(source_arn: str, task_id: str = "0") -> str:
    """A task handle as SQS shapes it: base64 of a JSON object naming the source queue."""
    raw = json.dumps({"taskId": task_id, "sourceArn": source_arn}).encode()
    return base64.b64encode(raw).decode()


def _source_of_handle(handle: Any) -> str | None:
    try:
        return str(json.loads(base64.b64decode(str(handle), validate=True))["sourceArn"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


def install() -> None:
    original_init = access_control.IAMRequestBase.__init__
    original_resource = SQSResponse._determine_resource

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._action = BATCH_ACTIONS.get(self._action, self._action)

    def determine_resource(self: SQSResponse) -> str:
        action = self._get_action()
        if action == "GetQueueUrl":
            name = self._get_param("QueueName")
            if name:
                try:
                    return str(self.sqs_backend.get_queue(name).queue_arn)
                except QueueDoesNotExist:  # as moto does for a queue that is not there
                    return "*"
        if action in MOVE_TASK_ACTIONS:
            return str(self._get_param("SourceArn") or "*")
        if action == "CancelMessageMoveTask":
            return _source_of_handle(self._get_param("TaskHandle")) or "*"
        return str(original_resource(self))

    original_authorize = SQSResponse._authenticate_and_authorize_normal_action

    def authorize(self: SQSResponse, resource: str = "*") -> None:
        try:
            original_authorize(self, resource)
        except HTTPException as exc:
            code = getattr(exc, "error_type", None)
            if code and _is_json(self):
                error = JsonRESTError(code, getattr(exc, "message", ""))
                error.code = exc.code or 403
                raise error from None
            raise

    access_control.IAMRequestBase.__init__ = init  # type: ignore[method-assign]
    SQSResponse._determine_resource = determine_resource  # type: ignore[method-assign]
    SQSResponse._authenticate_and_authorize_normal_action = authorize  # type: ignore[assignment]


def _is_json(response: SQSResponse) -> bool:
    headers = response.headers
    return bool(headers.get("X-Amz-Target") or headers.get("x-amz-target"))


if __name__ == "__main__":
    from moto.server import main

    install()
    main()
