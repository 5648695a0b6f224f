"""What every domain shares: atomic file writes, neutralised CSV, URL masking, warning
filters.

Modules here import neither Dagster nor any ``bi_platform`` domain, so any layer may use
them:

- :mod:`bi_platform.lib.files`: atomic writes with explicit fsync rules;
- :mod:`bi_platform.lib.safe_csv`: CSV with cells neutralised against formula injection;
- :mod:`bi_platform.lib.secrets`: URLs and messages with their secrets masked;
- :mod:`bi_platform.lib.warning_filters`: the narwhals/Dask FutureWarning filter.
"""
