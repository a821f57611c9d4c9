"""`recomengine web`: the public pages, the dashboard, the demo shop and the api proxy on port
3112; `recomengine site`: build the public pages and docs."""

from __future__ import annotations

import argparse
from functools import partial

from cli.commands.database import ROOT

WEB_PORT = 3112
DIST_DIR = ROOT / "dashboard" / "dist"
SITE_DIR = ROOT / "web" / "dist"
SHOP_DIR = ROOT / ".run" / "shop"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `web` command."""
    web = subparsers.add_parser("web", help="serve the built dashboard and proxy /api/ (port 3112)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=WEB_PORT)
    web.add_argument("--api-url", default=None, help="default: the api on this machine")
    web.add_argument("--dist", default=str(DIST_DIR), help="the built dashboard")
    web.add_argument("--shop", default=str(SHOP_DIR), help="the demo shop's files")
    web.add_argument("--site", default=str(SITE_DIR), help="the built public pages and docs")
    web.set_defaults(func=run_web)
    site = subparsers.add_parser(
        "site", help="build the public pages and docs (landing, pricing, guides, API reference)"
    )
    site.add_argument("--output", default=str(SITE_DIR), help="where to write them")
    site.add_argument(
        "--base-url", default=None, help="their public address (default: the dashboard URL)"
    )
    site.add_argument(
        "--openapi",
        default=None,
        help="an OpenAPI document file (default: the one the api serves, built in-process)",
    )
    site.set_defaults(func=run_site)


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
        site_dir=Path(args.site),
        api_url=args.api_url or f"http://127.0.0.1:{settings.api_port}",
    )
    loader = AppLoader(factory=partial(create_web_app, config))
    app = loader.load()
    app.prepare(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    Sanic.serve_single(primary=app)
    return 0


def run_site(args: argparse.Namespace) -> int:
    """Render the public pages into the output folder and say what was written."""
    import json
    from pathlib import Path

    from cli.commands.openapi import openapi_document
    from store.settings import Settings
    from web.site_build import build_site

    document = json.loads(Path(args.openapi).read_text()) if args.openapi else openapi_document()
    # Only the public address is read: the build needs no secrets, in any mode.
    base_url = args.base_url or Settings(environment="development").dashboard_url
    pages = build_site(openapi=document, output=Path(args.output), base_url=base_url)
    print(f"built {len(pages)} public pages into {args.output}")
    return 0
