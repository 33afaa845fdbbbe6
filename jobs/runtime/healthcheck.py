"""The worker container's health check: ``python -m jobs.runtime.healthcheck [--max-age SECONDS]``.

Exits 0 when the heartbeat file (``AMPLY_HEARTBEAT_FILE``, written by :mod:`jobs.runtime.heartbeat`
from the worker's event loop) was touched at most ``--max-age`` seconds ago (default 60), and
1 otherwise, with one line saying why. ECS (infra/workers.py) and the Dockerfile's HEALTHCHECK
run it; after three failures in a row ECS replaces the task.

Standard library only and no Celery import: it runs every 30 s next to a busy worker, and must
answer in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MAX_AGE = 60.0

OK, UNHEALTHY, USAGE = 0, 1, 2


def check(path: Path, max_age: float, now: float | None = None) -> tuple[int, str]:
    """The exit status and the one line to print."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return UNHEALTHY, (f"unhealthy: no heartbeat file {path}: the worker has not started "
                           "consuming yet, or it does not load jobs.runtime.heartbeat")  # fmt: skip
    except OSError as exc:
        return UNHEALTHY, f"unhealthy: cannot read heartbeat file {path}: {exc.strerror}"
    age = (time.time() if now is None else now) - mtime
    if age > max_age:
        return UNHEALTHY, (f"unhealthy: heartbeat {age:.0f}s old (at most {max_age:g}s): the "
                           "worker's event loop is stuck or stopped")  # fmt: skip
    return OK, f"ok: heartbeat {max(age, 0):.0f}s old"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.runtime.healthcheck",
        description="Exit 0 if the worker's heartbeat file is fresh, 1 if not.",
    )
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE,
                        help="oldest acceptable heartbeat, in seconds (default 60)")  # fmt: skip
    parser.add_argument("--file", default=os.environ.get("AMPLY_HEARTBEAT_FILE", ""),
                        help="the heartbeat file (default: $AMPLY_HEARTBEAT_FILE)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.file:
        print(
            "error: AMPLY_HEARTBEAT_FILE is not set and no --file given: set it to the path "
            "the worker touches (the task definition and the image set it)",
            file=sys.stderr,
        )
        return USAGE
    if args.max_age <= 0:
        print(f"error: --max-age must be above 0, not {args.max_age:g}", file=sys.stderr)
        return USAGE
    status, line = check(Path(args.file), args.max_age)
    print(line, file=sys.stdout if status == OK else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
