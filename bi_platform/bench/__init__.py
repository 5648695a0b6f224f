"""Benchmarks: `bi-platform bench NAME`. Each prints a table, then one JSON line whose
ratios compare against a baseline measured in the same run."""
