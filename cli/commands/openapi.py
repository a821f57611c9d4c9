"""`recomengine openapi`: print the api's OpenAPI document, built in-process (nothing started)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `openapi` command."""
    parser = subparsers.add_parser(
        "openapi", help="print the OpenAPI document the api serves at /api/v1/openapi.json"
    )
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    parser.set_defaults(func=run_openapi)


def openapi_document() -> dict[str, Any]:
    """The document the api serves, from the app factory (no server, no connections)."""
    # Importing the app imports the actor handles, whose broker module reads the settings:
    # development mode lets them load without secrets; nothing here connects or signs.
    os.environ.setdefault("RECOMENGINE_ENVIRONMENT", "development")
    from api.app import APP_VERSION, create_app
    from api.openapi import build_document
    from store.settings import Settings

    settings = Settings(environment="development", log_level="WARNING")
    app = create_app(settings, name="recomengine_openapi")
    app.router.finalize()
    return build_document(app, version=APP_VERSION)


def run_openapi(args: argparse.Namespace) -> int:
    """Print (or write) the OpenAPI document."""
    text = json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0
