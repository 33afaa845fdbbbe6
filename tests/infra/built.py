"""One part of the Pulumi program built under Pulumi's mocks, for the component tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from infra.mocks import RecordingMonitor, run_mocked
from infra.settings import StackSettings


@dataclass
class Built:
    """What a program built with ``settings`` registered (``monitor``) and returned."""

    settings: StackSettings
    monitor: RecordingMonitor
    outputs: dict[str, Any]


B = TypeVar("B", bound=Built)


def build_with(program: Callable[[], dict[str, Any]], settings: StackSettings,
               kind: type[B]) -> B:  # fmt: skip
    """Run ``program`` under fresh mocks for ``settings``' stack and region."""
    run = run_mocked(program, settings.stack, region=settings.region)
    return kind(settings, run.monitor, run.value)
