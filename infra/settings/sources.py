"""Where settings come from: the stack file (no engine needed) and ``pulumi.Config`` (inside
the program).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Which tier each task runs on, the table producers and the DLQ tool route by: a stack without
# a tier some task needs is refused here, before deploy.
from infra.settings.limits import PROJECT
from infra.settings.model import Problem, SettingsError, StackSettings
from infra.settings.parsing import _STRING_KEYS, TOP_LEVEL_KEYS, parse

ROOT = Path(__file__).resolve().parent.parent.parent


def stack_file(stack: str, root: Path | None = None) -> Path:
    return (root or ROOT) / f"Pulumi.{stack}.yaml"


def fill_missing(doc: Any, values: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """``doc`` (a stack document) with the config keys of ``values`` that it lacks, mappings
    filled key by key; and the keys filled. What the file sets always wins: this is how the
    offline plan and the tests supply deploy-only values (tests/fixtures/deploy-values.yaml)
    that a stack file leaves to its operator."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config") or {}, Mapping):
        return doc, []
    config = dict(doc.get("config") or {})
    values = _in_the_files_account(config, values)
    filled: list[str] = []
    for key, value in values.items():
        held = config.get(key)
        if held is None:
            config[key] = value
            filled.append(key)
        elif isinstance(held, Mapping) and isinstance(value, Mapping):
            merged = dict(held)
            for sub, v in value.items():
                if merged.get(sub) is None:
                    merged[sub] = v
                    filled.append(f"{key}.{sub}")
            config[key] = merged
    return {**doc, "config": config}, filled


_ACCOUNT_IN = re.compile(r"^(\d{12})\.dkr\.ecr\.|^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")


def _in_the_files_account(
    config: Mapping[str, Any], values: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``values`` moved into the account the file's own deploy-only values name, if any.

    An operator commits the secret ARNs (their real account) but never the image (each release
    sets it): filled from the fixture as they are, the image would name the fixture's account
    and the cross-check would refuse every offline plan of a stack file that is right."""
    held = [v for v in config.values() if isinstance(v, str)]
    accounts = {a for v in held if (m := _ACCOUNT_IN.match(v)) for a in m.groups() if a}
    if len(accounts) != 1:
        return values  # none held, or already inconsistent: the validation says so
    (account,) = accounts
    text = json.dumps(dict(values))
    theirs = {a for a in re.findall(r"\b\d{12}\b", text)}
    for other in theirs - {account}:
        text = text.replace(other, account)
    result: dict[str, Any] = json.loads(text)
    return result


def load_stack(
    stack: str, root: Path | None = None, *, deploy: bool = False,
    fill: Mapping[str, Any] | None = None,
) -> StackSettings:  # fmt: skip
    """Read ``Pulumi.<stack>.yaml`` as plain YAML, without the Pulumi engine; ``fill`` supplies
    config keys the file lacks (:func:`fill_missing`), ``deploy`` requires the deploy-only
    values (:func:`parse`)."""
    path = stack_file(stack, root)
    if not path.is_file():
        available = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in path.parent.glob(
            "Pulumi.*.yaml"))  # fmt: skip
        raise SettingsError(
            str(path),
            [
                Problem(
                    "stack",
                    stack,
                    f"no file {path.name}; stacks here: {', '.join(available) or 'none'}",
                )
            ],
        )
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise SettingsError(
            str(path), [Problem(where, path.name, f"is not valid YAML: {exc}")]
        ) from None
    if fill:
        doc, _ = fill_missing(doc, fill)
    return from_mapping(doc, stack, str(path), deploy=deploy)


def from_mapping(
    doc: Any, stack: str, source: str = "<settings>", deploy: bool = False
) -> StackSettings:
    """Parse a whole stack document:
    ``{"config": {"amply-jobs:tiers": ..., "aws:region": ...}}``."""
    if not isinstance(doc, Mapping):
        raise SettingsError(source, [Problem("(document)", doc, "must be a YAML mapping")])
    raw = doc.get("config") or {}
    if not isinstance(raw, Mapping):
        raise SettingsError(source, [Problem("config", raw, "must be a mapping")])
    ns = f"{PROJECT}:"
    project_keys = {
        k[len(ns) :]: v for k, v in raw.items() if isinstance(k, str) and k.startswith(ns)
    }
    stray = [k for k in raw if not (isinstance(k, str) and (k.startswith(ns) or ":" in k))]
    settings_or_error: StackSettings | SettingsError
    try:
        settings_or_error = parse(project_keys, stack, raw.get("aws:region"), source, deploy)
    except SettingsError as exc:
        settings_or_error = exc
    if stray:
        extra = [Problem(str(k), raw[k], f"has no namespace; write it as {ns}{k}") for k in stray]
        problems = extra + (settings_or_error.problems
                            if isinstance(settings_or_error, SettingsError) else [])  # fmt: skip
        raise SettingsError(source, problems)
    if isinstance(settings_or_error, SettingsError):
        raise settings_or_error
    return settings_or_error


def from_pulumi_config(deploy: bool = True) -> StackSettings:
    """Read the settings inside the Pulumi program, through ``pulumi.Config``; ``deploy``
    requires the deploy-only values (off only to create the image repository on a first
    run, ``__main__.py``)."""
    import pulumi

    cfg = pulumi.Config(PROJECT)
    # The engine hands plain strings over as they are (not JSON-quoted), and everything else
    # (numbers, booleans, lists, mappings) as JSON: get_object would fail on `amply-dev`.
    values = {k: cfg.get(k) if k in _STRING_KEYS else cfg.get_object(k) for k in TOP_LEVEL_KEYS}
    # Plain scalars come back as objects too (YAML parses them); drop the unset ones.
    project_keys = {k: v for k, v in values.items() if v is not None}
    region = pulumi.Config("aws").get("region")
    return parse(project_keys, pulumi.get_stack(), region, f"Pulumi.{pulumi.get_stack()}.yaml",
                 deploy=deploy)  # fmt: skip
