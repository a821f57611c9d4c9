"""A worker pool killed with SIGKILL cannot remove its metrics folder; the next pool does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cli.commands.processes import METRICS_DIR_PREFIX, _remove_metrics_dirs_of_dead_pools


def test_the_next_pool_removes_the_metrics_folders_of_killed_pools_and_keeps_live_ones() -> None:
    dead_pool = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pool.wait()
    dead = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{dead_pool.pid}-"))
    (dead / "counter_1.db").write_bytes(b"x")
    live = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-"))
    try:
        _remove_metrics_dirs_of_dead_pools()
        assert not dead.exists()
        assert live.exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
