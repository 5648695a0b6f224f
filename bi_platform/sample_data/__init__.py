"""Deterministic sample data: raw exports that stand in for the real source systems."""
