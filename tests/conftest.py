"""Shared fixtures live in tests/support; this file only makes them visible."""

from tests.support.redis import redis_client, redis_url
from tests.support.sqs import make_stack, sqs, sqs_endpoint

__all__ = ["make_stack", "redis_client", "redis_url", "sqs", "sqs_endpoint"]
