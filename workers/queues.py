"""The queues, named by workload. A module of its own, light to import: the `recomengine`
command reads it without building the broker, which each worker process must build itself."""

QUEUES = ("ingest", "catalog", "projections", "training", "maintenance")
