"""Cadastral pipeline: PySpark transforms to Delta tables and a hash-compare
sync into PostgreSQL."""
