"""The public pages and docs, rendered to static HTML at build time: the landing page, pricing
(from domain/plans.py, the table the server enforces), the guides (Markdown in docs/, with the
platform's own rules filled in from the domain) and the REST API reference (from the served
OpenAPI document). The web process serves the result; nothing here runs per request."""

from __future__ import annotations

import hashlib
import html
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markdown_it.token import Token

from domain import events as event_rules
from domain import plans as plan_table
from domain.experiments import assignment, statistics
from domain.interactions import EVENT_WEIGHTS
from domain.storefront import PUBLIC_EVENT_TYPES

ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = ROOT / "docs"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
SITE_DIR = Path(__file__).resolve().parent / "dist"
# A fenced block whose info string has this word is run by the test suite against a platform.
RUNNABLE = "runnable"


@dataclass(frozen=True)
class Page:
    """One public page: where it is served and what a search engine reads about it."""

    path: str  # "/", "/pricing", "/docs/events"
    title: str
    description: str
    source: str  # a template name or a docs/ file

    @property
    def file(self) -> str:
        """The built file under the output folder."""
        return "index.html" if self.path == "/" else self.path.strip("/") + "/index.html"


DOC_PAGES = (
    Page("/docs", "Documentation", "Everything a developer needs to run RecomEngine.", "index.md"),
    Page(
        "/docs/quickstart",
        "Quick start",
        "From an API key to recommendations on your own page in five steps.",
        "quickstart.md",
    ),
    Page(
        "/docs/sdk",
        "JavaScript SDK reference",
        "The storefront SDK: one script tag, placements, and the window.RecomEngine calls.",
        "sdk.md",
    ),
    Page(
        "/docs/api-reference",
        "REST API reference",
        "Every endpoint of the RecomEngine REST API, from the OpenAPI document the api serves.",
        "api_reference.html",
    ),
    Page(
        "/docs/events",
        "Event schema guide",
        "Every event type, field, rule, warning and how duplicates are recognised.",
        "events.md",
    ),
    Page(
        "/docs/experiments",
        "Experiments guide",
        "A/B tests between strategies: assignment, each statistic, SRM, sequential mode, "
        "and when not to trust a result.",
        "experiments.md",
    ),
)
PAGES = (
    Page(
        "/",
        "Recommendations for your shop, measured",
        "RecomEngine gives mid-market e-commerce shops personalised product recommendations "
        "from four strategies, with A/B experiments that say whether they pay.",
        "landing.html",
    ),
    Page(
        "/pricing",
        "Pricing",
        "Usage-based plans: events and recommendation requests included each month, "
        "from a free sandbox to enterprise.",
        "pricing.html",
    ),
    *DOC_PAGES,
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _markdown() -> MarkdownIt:
    """CommonMark plus tables; headings get ids, runnable samples a label."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")

    def heading_open(renderer: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        inline = tokens[idx + 1]
        seen = env.setdefault("ids", set())
        slug = base = _slug(inline.content)
        n = 2
        while slug in seen:
            slug, n = f"{base}-{n}", n + 1
        seen.add(slug)
        return f'<{tokens[idx].tag} id="{slug}">'

    def fence(renderer: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        words = token.info.split()
        language = words[0] if words else ""
        code = html.escape(token.content)
        label = ""
        if RUNNABLE in words[1:]:
            label = '<p class="sample-label">Tested: this sample runs in our test suite.</p>'
        lang_class = f' class="language-{html.escape(language)}"' if language else ""
        return (
            f'<div class="sample">{label}<pre tabindex="0"><code{lang_class}>{code}'
            "</code></pre></div>\n"
        )

    def table_open(renderer: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        # A scrollable, named region: wide tables scroll on a phone instead of the page.
        heading = next(
            (
                tokens[i + 1].content
                for i in range(idx - 1, -1, -1)
                if tokens[i].type == "heading_open"
            ),
            "Table",
        )
        label = html.escape(heading, quote=True)
        return (
            f'<div class="table-wrap" tabindex="0" role="region" aria-label="{label}">\n<table>\n'
        )

    def table_close(renderer: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
        return "</table>\n</div>\n"

    md.add_render_rule("table_open", table_open)
    md.add_render_rule("table_close", table_close)
    md.add_render_rule("heading_open", heading_open)
    md.add_render_rule("fence", fence)
    return md


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader([str(TEMPLATES_DIR), str(DOCS_DIR)]),
        autoescape=select_autoescape(["html"], default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = lambda value: f"{value:,}"
    env.filters["slug"] = _slug
    return env


def _facts() -> dict[str, Any]:
    """What the guides quote from the code, so that a changed rule changes the docs."""
    from store.event_projections import CLIENT_ID_TTL_SECONDS, SEEN_TTL_SECONDS
    from store.experiments import SEQUENTIAL_PLANNED_USERS_PER_VARIANT

    return {
        "seen_days": SEEN_TTL_SECONDS // 86400,
        "client_id_days": CLIENT_ID_TTL_SECONDS // 86400,
        "sequential_planned": SEQUENTIAL_PLANNED_USERS_PER_VARIANT,
        "events": event_rules,
        "event_weights": dict(EVENT_WEIGHTS),
        "public_event_types": sorted(PUBLIC_EVENT_TYPES),
        "stats": statistics,
        "assignment": assignment,
        "plans": list(plan_table.PLANS.values()),
        "plan_rules": plan_table,
    }


def _schema_name(schema: dict[str, Any] | None) -> str | None:
    ref = (schema or {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(v).replace("'", '"') for v in schema["enum"])
    if schema.get("type") == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    kind = schema.get("type", "any")
    return " | ".join(kind) if isinstance(kind, list) else str(kind)


def _fields(openapi: dict[str, Any], name: str | None) -> list[dict[str, str]]:
    """The properties of one component schema, for the reference tables."""
    if name is None:
        return []
    schema = openapi["components"]["schemas"].get(name, {})
    required = set(schema.get("required", []))
    return [
        {
            "name": prop,
            "type": _type_of(spec),
            "required": "yes" if prop in required else "",
            "description": spec.get("description", spec.get("title", "")),
        }
        for prop, spec in schema.get("properties", {}).items()
    ]


def api_reference(openapi: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAPI operations grouped by tag, flattened for the reference template."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in openapi["paths"].items():
        for method, op in methods.items():
            body_schema = (
                op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ).get("schema")
            responses = []
            for status, response in op["responses"].items():
                content = response.get("content", {})
                media = next(iter(content), "")
                responses.append(
                    {
                        "status": status,
                        "description": response.get("description", ""),
                        "media": media,
                        "schema": _schema_name(content.get(media, {}).get("schema")),
                        "headers": list(response.get("headers", {})),
                    }
                )
            security = [name for entry in op.get("security", []) for name in entry]
            groups.setdefault(op["tags"][0] if op.get("tags") else "other", []).append(
                {
                    "id": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op["summary"],
                    "description": op.get("description", ""),
                    "auth": {
                        "apiKey": "API key (X-API-Key)",
                        "bearer": "Admin access token (Authorization: Bearer)",
                    }.get(security[0], security[0])
                    if security
                    else "None",
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": "yes" if p.get("required") else "",
                            "type": _type_of(p.get("schema", {})),
                            "description": p.get("description")
                            or p.get("schema", {}).get("description", ""),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": _schema_name(body_schema),
                    "body_fields": _fields(openapi, _schema_name(body_schema)),
                    "responses": responses,
                }
            )
    return [{"tag": tag, "operations": ops} for tag, ops in sorted(groups.items())]


def _asset_name(source: Path) -> str:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:10]
    return f"{source.stem}.{digest}{source.suffix}"


def build_site(*, openapi: dict[str, Any], output: Path, base_url: str) -> list[Page]:
    """Render every public page, the sitemap and robots.txt into `output` (replaced)."""
    staging = output.with_name(output.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "site-assets").mkdir(parents=True)
    assets = {}
    for source in sorted(STATIC_DIR.iterdir()):
        name = _asset_name(source)
        shutil.copyfile(source, staging / "site-assets" / name)
        assets[source.name] = f"/site-assets/{name}"
    env = _environment()
    md = _markdown()
    facts = _facts()
    shared = {
        "assets": assets,
        "doc_pages": DOC_PAGES,
        "base_url": base_url.rstrip("/"),
        "api_version": openapi["info"]["version"],
        **facts,
    }
    for page in PAGES:
        context = {**shared, "page": page}
        if page.source.endswith(".md"):
            text = env.get_template(page.source).render(**context)
            body = md.render(text, {"ids": set()})
            rendered = env.get_template("doc.html").render(**context, body=body)
        elif page.source == "api_reference.html":
            rendered = env.get_template(page.source).render(
                **context, groups=api_reference(openapi), openapi=openapi
            )
        else:
            rendered = env.get_template(page.source).render(**context)
        target = staging / page.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered, encoding="utf-8")
    (staging / "sitemap.xml").write_text(sitemap(PAGES, base_url=base_url), encoding="utf-8")
    (staging / "robots.txt").write_text(
        f"User-agent: *\nDisallow: /dashboard\nDisallow: /api/\n"
        f"Sitemap: {base_url.rstrip('/')}/sitemap.xml\n",
        encoding="utf-8",
    )
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return list(PAGES)


def sitemap(pages: tuple[Page, ...] | list[Page], *, base_url: str) -> str:
    """The sitemap.xml of the public pages."""
    day = datetime.now(UTC).date().isoformat()
    entries = "".join(
        f"  <url><loc>{xml_escape(base_url.rstrip('/') + page.path)}</loc>"
        f"<lastmod>{day}</lastmod></url>\n"
        for page in pages
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{entries}</urlset>\n"
    )


@dataclass(frozen=True)
class Sample:
    """One fenced code block of a guide: its language, flags and code."""

    page: str
    language: str
    flags: tuple[str, ...]
    code: str
    line: int

    @property
    def runnable(self) -> bool:
        """Whether the test suite runs it."""
        return RUNNABLE in self.flags


def samples(source: str) -> list[Sample]:
    """The fenced blocks of one docs/ page, in order (the guides are Jinja first)."""
    text = _environment().get_template(source).render(**_facts(), page=None, assets={})
    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence":
            continue
        words = token.info.split()
        found.append(
            Sample(
                page=source,
                language=words[0] if words else "",
                flags=tuple(words[1:]),
                code=token.content,
                line=(token.map or [0])[0] + 1,
            )
        )
    return found
