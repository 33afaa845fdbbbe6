"""Run every benchmark (``make bench``, ``make bench-quick``): each script's output is printed
and kept in ``build/bench/<name>.txt``, and the JSON lines are gathered in
``build/bench/results.jsonl``.

The idle benchmark only counts requests over a fixed window, which other work on the machine
does not change: it runs alongside the others, which run one after the other because their
figures are rates. A missed goal is a figure, not a failure; a script that cannot measure
(a worker died, a deadline passed) makes the run exit 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench"
PARALLEL = ("idle",)
SEQUENTIAL = ("enqueue", "consume", "priority", "autoscale")


def _command(name: str, quick: bool) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]


def _is_result(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        return "bench" in json.loads(line)
    except ValueError:
        return False


@click.command()
@click.option("--quick", is_flag=True, help="Every script's quick mode (under 2 minutes).")
def main(quick: bool) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    background = {}
    for name in PARALLEL:
        out = (OUT / f"{name}.txt").open("wb")
        background[name] = (subprocess.Popen(_command(name, quick), cwd=ROOT, stdout=out,
                                             stderr=subprocess.STDOUT), out)  # fmt: skip
    failed: list[str] = []
    for name in SEQUENTIAL:
        done = subprocess.run(_command(name, quick), cwd=ROOT, capture_output=True, text=True)
        (OUT / f"{name}.txt").write_text(done.stdout + done.stderr)
        sys.stdout.write(done.stdout)
        if done.returncode:
            sys.stdout.write(done.stderr[-3000:])
            failed.append(name)
    for name, (proc, out) in background.items():
        proc.wait()
        out.close()
        sys.stdout.write((OUT / f"{name}.txt").read_text())
        if proc.returncode:
            failed.append(name)
    lines = []
    for name in (*SEQUENTIAL, *PARALLEL):
        text = (OUT / f"{name}.txt").read_text().splitlines()
        lines += [line for line in text if _is_result(line)]
    (OUT / "results.jsonl").write_text("".join(f"{line}\n" for line in lines))
    elapsed = time.monotonic() - start
    summary = {"bench": "all", "quick": quick, "seconds": round(elapsed, 1), "failed": failed}
    print(json.dumps(summary, separators=(",", ":")))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
