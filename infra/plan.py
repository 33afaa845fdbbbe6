"""The offline plan: the real program (``__main__.py``) run under Pulumi's mocks with a stack's
settings, printed resource by resource.

    python -m infra.plan dev            # readable
    python -m infra.plan prod --json    # {"resources": [...], "outputs": {...}}

The Pulumi CLI and the AWS provider plugin cannot be installed from package registries, so
this is how the program is exercised off CI: every input is resolved (policy documents and
other JSON strings parsed), ids and ARNs come from :mod:`infra.mocks`, and two runs print the
same bytes. A bad settings file prints the one-line :class:`SettingsError` and exits 2.

The stack files leave the deploy-only values (image, secret ARNs, VPC, subnets) to each
environment's operator. The plan takes those a stack file lacks from a fixture of well-formed
values, ``tests/fixtures/deploy-values.yaml`` (``--deploy-values PATH`` to use another file,
``--deploy-values ''`` for none: then a missing one fails as ``pulumi preview`` would), and
the text plan's header names each key it took from there. The mocks' account is the image's.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from infra.settings import ROOT, SettingsError, fill_missing, load_stack, stack_file

PROGRAM = ROOT / "__main__.py"
DEPLOY_VALUES = ROOT / "tests" / "fixtures" / "deploy-values.yaml"
"""Well-formed deploy-only values per stack (not a real account): what the plan runs with
where a stack file leaves them to its operator."""


def deploy_values(stack: str, path: Path | None = DEPLOY_VALUES) -> dict[str, object]:
    """The fixture's config keys for ``stack``; none without a file or for another stack."""
    if path is None or not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    return dict(doc.get(stack) or {}) if isinstance(doc, dict) else {}


def pulumi_config(
    stack: str, root: Path | None = None, fill: dict[str, object] | None = None
) -> dict[str, str]:
    """The stack file's config (plus ``fill`` where it lacks a key) as the engine hands it to
    a program: plain strings as they are, everything else (numbers, booleans, lists,
    mappings) as JSON."""
    doc = yaml.safe_load(stack_file(stack, root).read_text()) or {}
    doc, _ = fill_missing(doc, fill or {})
    config = doc.get("config") or {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def _numbers(value: Any) -> Any:
    """The engine carries every number as a double: 1800.0 reads better as 1800."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _parse_json_strings(value: Any) -> Any:
    """Inputs with JSON in a string (policies, redrive policies, the dashboard) become objects,
    so a reviewer and the policy rules read documents, not escaped text."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return _parse_json_strings(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _parse_json_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_parse_json_strings(v) for v in value]
    return _numbers(value)


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else ""


def filled_keys(
    stack: str, root: Path | None = None, values: Path | None = DEPLOY_VALUES
) -> list[str]:
    """The config keys the plan of ``stack`` takes from the fixture (the file lacks them)."""
    doc = yaml.safe_load(stack_file(stack, root).read_text()) or {}
    return fill_missing(doc, deploy_values(stack, values))[1]


def build(
    stack: str, root: Path | None = None, values: Path | None = DEPLOY_VALUES
) -> dict[str, Any]:
    """Run the program for ``stack`` under mocks; the plan as one JSON-able document.

    Raises :class:`SettingsError` for a bad settings file, before anything runs: the same
    checks as ``pulumi preview`` (deploy-only values required)."""
    fill = deploy_values(stack, values)
    settings = load_stack(stack, root, deploy=True, fill=fill)
    config = pulumi_config(stack, root, fill)
    # Imported here: the settings check above must not need the Pulumi SDK to report.
    from infra.mocks import ACCOUNT, run_mocked

    run = run_mocked(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__"),
        stack,
        region=settings.region,
        account=settings.account_id or ACCOUNT,
        config=config,
    )
    resources = [
        {
            "type": r.type,
            "name": r.name,
            "parent": _name_of(r.parent),
            "protect": r.protect,
            "inputs": _parse_json_strings(r.inputs),
        }
        for r in sorted(run.monitor.registered.values(), key=lambda r: r.urn)
    ]
    return {
        "stack": stack,
        "resources": resources,
        # Outputs stay as the stack gives them: jobsEnvironment is a JSON *string*.
        "outputs": _numbers(run.outputs),
    }


def first_preview(
    stack: str, root: Path | None = None, values: Path | None = DEPLOY_VALUES
) -> list[dict[str, Any]]:
    """The resources of ``stack`` as a first ``pulumi preview`` hands them to the policy pack:
    nothing exists yet, so every input computed from another resource holds the engine's
    unknown sentinel; JSON documents stay strings. Each: ``type``, ``name``, ``urn``,
    ``props``."""
    fill = deploy_values(stack, values)
    settings = load_stack(stack, root, deploy=True, fill=fill)
    from infra.mocks import ACCOUNT, run_mocked

    run = run_mocked(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__"),
        stack,
        region=settings.region,
        account=settings.account_id or ACCOUNT,
        config=pulumi_config(stack, root, fill),
        first_preview=True,
    )
    return [
        {"type": r.type, "name": r.name, "urn": r.urn, "props": r.wire}
        for r in sorted(run.monitor.registered.values(), key=lambda r: r.urn)
        if r.custom
    ]


def render_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"


def render_text(plan: dict[str, Any], filled: list[str] | None = None, source: str = "") -> str:
    lines = [f"Offline plan of stack {plan['stack']} (Pulumi mocks; no cloud calls)"]
    if filled:
        lines.append(f"Deploy values from {source} (not in the stack "
                     f"file): {', '.join(filled)}")  # fmt: skip
    lines.append("")
    for r in plan["resources"]:
        flags = " [protected]" if r["protect"] else ""
        parent = f"  (in {r['parent']})" if r["parent"] else ""
        lines.append(f"+ {r['type']}  {r['name']}{flags}{parent}")
        for key in sorted(r["inputs"]):
            value = r["inputs"][key]
            if isinstance(value, dict | list):
                text = json.dumps(value, indent=2, sort_keys=True).replace("\n", "\n      ")
            else:
                text = json.dumps(value)
            lines.append(f"    {key}: {text}")
    counts: dict[str, int] = {}
    for r in plan["resources"]:
        counts[r["type"]] = counts.get(r["type"], 0) + 1
    lines += ["", f"Resources: {len(plan['resources'])}"]
    lines += [f"  {n:3d}  {t}" for t, n in sorted(counts.items())]
    lines += ["", "Outputs:"]
    for key in sorted(plan["outputs"]):
        lines.append(f"  {key}: {json.dumps(plan['outputs'][key], sort_keys=True)}")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("stack")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory holding Pulumi.<stack>.yaml (default: the project).",
)
@click.option(
    "--deploy-values",
    "values",
    default=str(DEPLOY_VALUES),
    show_default=True,
    help="YAML of deploy-only values per stack, used where the stack file lacks a key; '' for "
    "none.",
)
def main(stack: str, as_json: bool, root: Path | None, values: str) -> None:
    """Print the offline plan of STACK (dev, prod): every resource and the outputs."""
    path = Path(values) if values else None
    try:
        plan = build(stack, root, path)
    except SettingsError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(render_json(plan), nl=False)
    else:
        shown = str(path.relative_to(ROOT)) if path and path.is_relative_to(ROOT) else str(path)
        click.echo(render_text(plan, filled_keys(stack, root, path), shown), nl=False)


if __name__ == "__main__":
    main()
