"""The base layer: configuration, data types, errors and exit codes, logging,
durable file operations."""
