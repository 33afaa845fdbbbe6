"""Webhooks: delivering an event to an organisation's endpoint, signed, over HTTPS.

- ``tasks``: the ``dispatch_webhook`` task (on ``high``) and its retry rules.
- ``delivery``: one HTTPS request with pycurl, its timeouts and its verdict.
- ``endpoints``: the registry of organisations' endpoints in the data Redis.
- ``netguard``: which addresses a delivery may reach (no private or metadata networks).
- ``cli``: ``amply-jobs webhooks ...``, the operator commands.
"""
