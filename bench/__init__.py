"""kvbox benchmarks: scripts that print ratios against baselines measured in the same run.

Run `python -m bench.run` (or `make bench`); `--quick` checks the harness in about a minute.
"""
