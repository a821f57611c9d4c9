"""`recomengine api|worker|scheduler`: the long-running processes."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from cli.process_groups import process_alive
from workers.queues import QUEUES

DEFAULT_THREADS = 32


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the process subcommands."""
    api = subparsers.add_parser("api", help="run the HTTP api (Sanic)")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.add_argument("--workers", type=int, default=None, help="Sanic worker processes")
    api.set_defaults(func=run_api)

    worker = subparsers.add_parser("worker", help="run a Dramatiq worker pool")
    worker.add_argument("--queues", default=",".join(QUEUES), help="comma-separated queue names")
    worker.add_argument("--processes", type=int, default=1)
    # Every actor is async: a thread only waits for its message's coroutine on the process's
    # event loop, so threads are the messages in flight, and ingestion stores the messages in
    # flight of a tenant as one group. With 4, a trickle of small messages (single events
    # coalesced by the api) made groups of a few events and one process stored about 720 a
    # second; with 32 it keeps up with what one api accepts (bench.load).
    worker.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    worker.set_defaults(func=run_worker)

    scheduler = subparsers.add_parser("scheduler", help="run the periodic job scheduler")
    scheduler.set_defaults(func=run_scheduler)


def run_api(args: argparse.Namespace) -> int:
    """Serve the api until stopped."""
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from api.app import create_app
    from store.settings import get_settings

    settings = get_settings()
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    workers = args.workers or settings.api_workers
    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(
        host=host,
        port=port,
        workers=workers,
        single_process=workers == 1,
        access_log=False,
        motd=False,
    )
    if workers == 1:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return 0


METRICS_DIR_PREFIX = "recomengine-worker-metrics-"


def _remove_metrics_dirs_of_dead_pools() -> None:
    """Remove the metrics folders of pools that were killed before they could remove their own."""
    for folder in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*"):
        owner = folder.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def run_worker(args: argparse.Namespace) -> int:
    """Run a Dramatiq worker pool on the given queues until stopped."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from store.logs import configure_logging
    from store.settings import get_settings

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        print(f"unknown queues: {', '.join(unknown)}; known: {', '.join(QUEUES)}", file=sys.stderr)
        return 2
    # The pool's parent logs JSON lines to its own stderr like every other process; each worker
    # process sets up its own logging when it boots (workers.supervision), so nothing goes
    # through Dramatiq's log pipes, which block once their reader is gone.
    settings = get_settings()
    configure_logging(settings.log_level)
    # Worker processes are forked from this one: each must build its own broker (its own
    # consumer id, heartbeat and connections), so this process must not have built one.
    assert "workers.broker" not in sys.modules, "the pool's parent imported the broker"
    # Each worker process writes its metrics to files here; this process serves their sums on
    # one port. Set before anything imports prometheus-client, which reads it once.
    _remove_metrics_dirs_of_dead_pools()
    metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from workers.metrics import serve_pool_metrics

    serve_pool_metrics(
        queues=queues,
        broker_url=settings.broker_url,
        host=settings.worker_metrics_host,
        port=settings.worker_metrics_port,
    )
    pool = make_argument_parser().parse_args(
        [
            "workers.main",
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
            "--skip-logging",
            "--queues",
            *queues,
        ]
    )
    try:
        return int(dramatiq_main(pool) or 0)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def run_scheduler(args: argparse.Namespace) -> int:
    """Run the scheduler until stopped."""
    from scheduler.run import run

    run()
    return 0
