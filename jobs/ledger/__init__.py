"""The donation ledger and what is computed from it.

- ``donations``: the append-only ledger of donations in the data Redis.
- ``checkpoints``: the ``generate_checkpoint`` task (on ``celery``) that seals the ledger.
- ``reports``: the ``generate_monthly_report`` task (on ``low``), one report per organisation
  and month.
- ``cli``: ``amply-jobs ledger ...``, the operator commands.
"""
