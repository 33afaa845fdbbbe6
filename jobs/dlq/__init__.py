"""The dead-letter queue, operated without losing a message: ``amply-jobs dlq``.

- ``operations``: inspect, export, redrive and purge, and the rules they keep.
- ``messages``: decoding a dead letter (its task, arguments, tier, receive count).
- ``sqs``: the SQS requests the operations make, each failure one line.
- ``cli``: the ``amply-jobs dlq`` commands.

Only the environment contract is needed; no task module is imported.
"""
