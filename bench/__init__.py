"""Benchmarks (issue 7): one script per figure, run by ``make bench`` / ``make bench-quick``.
Never part of the test run; docs/benchmarks.md records the last run."""
