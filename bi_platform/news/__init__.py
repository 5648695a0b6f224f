"""News platform (seed 002): HuggingFace dataset <-> PostgreSQL news tables."""
