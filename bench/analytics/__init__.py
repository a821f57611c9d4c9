"""Analytics benchmark: `python -m bench.analytics` (see __main__ for what it measures)."""
