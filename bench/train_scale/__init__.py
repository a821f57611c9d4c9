"""Training at scale: ``python -m bench.train_scale``."""
