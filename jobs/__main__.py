"""``python -m jobs``: the same command line as ``amply-jobs``."""

from jobs.cli import main

main(prog_name="amply-jobs")
