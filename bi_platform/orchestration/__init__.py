"""Running the platform end to end: the named jobs in dependency order with the
partitions the sensors would request (``bi-platform materialize``)."""
