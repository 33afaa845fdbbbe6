"""The reader that walks the raw stack document, collecting every problem rather than stopping
at the first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from infra.settings.model import Problem

_MISSING = object()


class _Reader:
    """Walks raw YAML values, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.defaulted: set[str] = set()
        """Keys the file leaves unset (absent or null), which therefore hold their default."""

    def bad(self, key: str, value: Any, rule: str) -> None:
        self.problems.append(Problem(key, value, rule))

    def mapping(self, key: str, raw: Any, known: set[str]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.bad(key, raw, "must be a mapping")
            return {}
        for k in raw:
            if k not in known:
                self.bad(
                    f"{key}.{k}", raw[k], f"unknown key; known keys: {', '.join(sorted(known))}"
                )
        return dict(raw)

    def integer(
        self, key: str, raw: Any, default: Any = _MISSING, lo: int | None = None,
        hi: int | None = None,
    ) -> int:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return 0
            self.defaulted.add(key)
            return int(default)
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.bad(key, raw, "must be a whole number")
            return int(default) if default is not _MISSING else 0
        if (lo is not None and raw < lo) or (hi is not None and raw > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.bad(key, raw, f"must be in {rng}")
        return raw

    def number(self, key: str, raw: Any, default: float, lo_exclusive: float = 0.0) -> float:
        if raw is None:
            self.defaulted.add(key)
            return default
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self.bad(key, raw, "must be a number")
            return default
        if not math.isfinite(raw):  # YAML's .nan / .inf: AWS's JSON APIs refuse them
            self.bad(key, raw, "must be a finite number")
            return default
        if raw <= lo_exclusive:
            self.bad(key, raw, f"must be greater than {lo_exclusive:g}")
        return float(raw)

    def boolean(self, key: str, raw: Any, default: bool) -> bool:
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.bad(key, raw, "must be true or false")
            return default
        return raw

    def string(
        self, key: str, raw: Any, default: Any = _MISSING, pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> str:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return ""
            self.defaulted.add(key)
            return str(default)
        if not isinstance(raw, str):
            self.bad(key, raw, "must be a string")
            return str(default) if default is not _MISSING else ""
        if pattern is not None and not pattern.match(raw):
            self.bad(key, raw, rule or f"must match {pattern.pattern}")
        return raw

    def choice(self, key: str, raw: Any, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, raw, default)
        if value not in choices:
            self.bad(key, raw, f"must be one of {', '.join(choices)}")
        return value

    def strings(
        self, key: str, raw: Any, default: tuple[str, ...] | object = _MISSING,
        item: Callable[[str, Any], str] | None = None,
    ) -> tuple[str, ...]:  # fmt: skip
        if raw is None:
            if default is _MISSING:
                self.bad(key, raw, "is required")
                return ()
            return tuple(default)  # type: ignore[arg-type]
        if not isinstance(raw, list):
            self.bad(key, raw, "must be a list of strings")
            return ()
        out: list[str] = []
        for i, v in enumerate(raw):
            if not isinstance(v, str) or not v:
                self.bad(f"{key}[{i}]", v, "must be a non-empty string")
                out.append("")  # keeps the positions of the items after it, for the keys
                continue
            out.append(item(f"{key}[{i}]", v) if item else v)
        return tuple(out)

    def items(self, key: str, raw: Any) -> Iterator[tuple[str, Any]]:
        if raw is None:
            self.bad(key, raw, "is required")
            return
        if not isinstance(raw, list) or not raw:
            self.bad(key, raw, "must be a non-empty list")
            return
        for i, v in enumerate(raw):
            yield f"{key}[{i}]", v
