"""Experiments domain: variant assignment, lifecycle rules and user-level statistics (no I/O)."""
