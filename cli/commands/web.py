"""`recomengine web`: the dashboard, the demo shop and the api proxy on port 3112."""

from __future__ import annotations

import argparse
from functools import partial

from cli.commands.database import ROOT

WEB_PORT = 3112
DIST_DIR = ROOT / "dashboard" / "dist"
SHOP_DIR = ROOT / ".run" / "shop"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `web` command."""
    web = subparsers.add_parser("web", help="serve the built dashboard and proxy /api/ (port 3112)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=WEB_PORT)
    web.add_argument("--api-url", default=None, help="default: the api on this machine")
    web.add_argument("--dist", default=str(DIST_DIR), help="the built dashboard")
    web.add_argument("--shop", default=str(SHOP_DIR), help="the demo shop's files")
    web.set_defaults(func=run_web)


def run_web(args: argparse.Namespace) -> int:
    """Serve until stopped (one process: static files and a proxy need no more)."""
    from pathlib import Path

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from store.settings import get_settings
    from web.app import WebConfig, create_web_app

    settings = get_settings()
    config = WebConfig(
        dist_dir=Path(args.dist),
        shop_dir=Path(args.shop),
        api_url=args.api_url or f"http://127.0.0.1:{settings.api_port}",
    )
    loader = AppLoader(factory=partial(create_web_app, config))
    app = loader.load()
    app.prepare(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    Sanic.serve_single(primary=app)
    return 0
