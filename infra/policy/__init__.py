"""The CrossGuard policy pack: pure rules (:mod:`infra.policy.rules`) and their wiring into
``pulumi-policy`` (:mod:`infra.policy.pack`)."""
