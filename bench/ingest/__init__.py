"""Event ingestion benchmark (`python -m bench.ingest`)."""
