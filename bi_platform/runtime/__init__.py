"""Embedded services (local PostgreSQL), paths and the `bi-platform` CLI."""
