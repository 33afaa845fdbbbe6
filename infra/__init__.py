"""The Pulumi program's building blocks: the settings model, typed components (queues,
alarms, IAM, workers), the mocks that run the program offline, the offline plan and the
policy pack.

Only :mod:`infra.settings` and :mod:`infra.tags` may be imported without Pulumi installed (the
local stack uses them); nothing here imports Pulumi at package level.
"""
