"""What the operator commands of every package share: click parameter types that refuse a bad
value in one line naming it (an endpoint URL, an AWS region) and a command group that prints
usage errors as that one line (``params``).

Domains' own ``cli`` modules import this package, never ``jobs.cli`` (which assembles them).
"""
