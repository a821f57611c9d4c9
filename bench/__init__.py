"""Benchmarks and offline evaluation (not run by the tests)."""

import os

# A benchmark imports platform modules that read this process's settings at import (the
# broker); it runs against throwaway servers only, which the harness gives real secrets.
os.environ.setdefault("RECOMENGINE_ENVIRONMENT", "development")
