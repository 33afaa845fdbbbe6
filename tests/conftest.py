"""Shared fixtures live in tests/support; this file only makes them visible.

It also holds Hypothesis' profiles. ``dev`` (the default) draws new examples every run, so
that local runs keep exploring; ``ci`` (``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run`` and the
GitHub workflow) draws the same ones every run, so that a merge is judged on reproducible
examples. A defect a random draw finds is pinned as its own test (see test_settings_fuzz.py).
"""

import os
import signal

from hypothesis import settings

from tests.support.redis import redis_client, redis_url
from tests.support.sqs import make_stack, sqs, sqs_endpoint

__all__ = ["make_stack", "redis_client", "redis_url", "sqs", "sqs_endpoint"]

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# A non-interactive shell starts a background command with SIGINT ignored, and every process
# it starts inherits that through exec: `dev`, told to stop by Ctrl-C's signal, would ignore
# it and the tests that stop it so would hang. A handler of Python's own is reset to the
# default action at exec, so each child the suite starts reacts to SIGINT as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
