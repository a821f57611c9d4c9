"""A worker's logging never blocks its work, whatever happens to the stream it writes to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Logs from four threads into a stderr pipe that nobody reads (its buffer holds 64 KB, about
# 500 of these lines), then reports to a file how many lines were dropped.
_PROGRAM = textwrap.dedent(
    """
    import json, logging, sys, threading
    from prometheus_client import CollectorRegistry, Counter
    from workers.supervision import configure_worker_logging

    dropped = Counter("dropped", "", registry=CollectorRegistry())
    configure_worker_logging(level="INFO", dropped=dropped)
    log = logging.getLogger("recomengine.test")

    def chatter():
        for number in range(20_000):
            log.info("line %d of a chatty worker", number, extra={"padding": "x" * 40})

    threads = [threading.Thread(target=chatter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("printed text goes to the log queue too")
    with open(sys.argv[1], "w") as report:
        json.dump({"dropped": dropped._value.get()}, report)
    """
)


def test_a_worker_that_logs_into_a_pipe_nobody_reads_finishes_its_work_and_counts_drops(
    tmp_path: Path,
) -> None:
    reader, writer = os.pipe()
    report = tmp_path / "report.json"
    try:
        finished = subprocess.run(
            [sys.executable, "-c", _PROGRAM, str(report)],
            stderr=writer,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    os.close(reader)
    assert finished.returncode == 0
    assert json.loads(report.read_text())["dropped"] > 0
