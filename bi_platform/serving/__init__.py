"""BI serving (seed 001): the DuckDB warehouse and the query API for concurrent users."""
