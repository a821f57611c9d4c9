"""The queues, named by workload. A module of its own, light to import: the `recomengine`
command reads it without building the broker, which each worker process must build itself.

`ingest` and `ingest_bulk` are the two lanes of ingestion (live and bulk traffic, each served
fairly per tenant: store.event_queue); give each its own worker pool in production."""

from store.event_queue import LANES

QUEUES = ("ingest", "ingest_bulk", "catalog", "projections", "training", "maintenance")
__all__ = ["LANES", "QUEUES"]
