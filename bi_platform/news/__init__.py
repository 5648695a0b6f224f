"""News platform: HuggingFace dataset <-> PostgreSQL news tables."""
