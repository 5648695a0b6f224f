"""Cadastral pipeline (seed 003): PySpark transforms to Delta tables and a hash-compare
sync into PostgreSQL."""
