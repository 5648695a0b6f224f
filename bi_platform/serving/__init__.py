"""BI serving: the DuckDB warehouse and the query API for concurrent users."""
