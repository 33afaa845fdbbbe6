"""Copy the tables of the last run (build/bench/<name>.txt) into docs/benchmarks.md, between
its ``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->`` markers, and the machine into
``bench:machine``. The readings around them are prose, written by hand.

    python -m bench.docfill
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import click

from bench.common import machine
from bench.run_all import OUT, PARALLEL, SEQUENTIAL

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def tables(name: str) -> str:
    path = OUT / f"{name}.txt"
    if not path.exists():
        raise click.ClickException(f"{path} is missing: run `make bench-quick` first")
    lines = [ln.rstrip() for ln in path.read_text().splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("{")]
    return "```text\n" + "\n".join(kept) + "\n```"


def machine_block() -> str:
    m = machine()
    ran = datetime.datetime.fromtimestamp((OUT / "results.jsonl").stat().st_mtime, datetime.UTC)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "| | |", "|---|---|",
        f"| CPUs (`nproc`) | {m['nproc']} |",
        f"| CPU model | {m['cpu']} |",
        f"| memory | {m['mem_gib']} GiB |",
        f"| Python | {m['python']} |",
        f"| run finished | {ran:%Y-%m-%d %H:%M} UTC (load average when filled in: {load}) |",
    ])  # fmt: skip


def fill(doc: str, name: str, body: str) -> str:
    rx = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not rx.search(doc):
        raise click.ClickException(f"{DOC} has no bench:{name} markers")
    return rx.sub(lambda m: m.group(1) + body + "\n" + m.group(2), doc)


@click.command()
def main() -> None:
    doc = DOC.read_text()
    doc = fill(doc, "machine", machine_block())
    for name in (*SEQUENTIAL, *PARALLEL):
        doc = fill(doc, name, tables(name))
    DOC.write_text(doc)
    click.echo(f"filled {DOC}")


if __name__ == "__main__":
    main()
