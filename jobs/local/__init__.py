"""Developer tooling: the embedded SQS emulator, provisioning from the stack settings, the
local stack. Never imported by the worker runtime (it reads ``infra.settings``)."""
