"""OpenAPI 3.1, built from the app's real routes and the pydantic models they declare."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from sanic import Sanic

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Operation:
    """What a route documents about itself."""

    summary: str
    tags: list[str]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    security: str | None = None
    content_type: str = "application/json"
    # The handler's docstring unless the route gives one.
    description: str = ""
    # Error statuses this route answers beyond those its traits imply (see `_implied_errors`),
    # each with what it means here.
    errors: dict[int, str] = field(default_factory=dict)
    # OpenAPI links of the success answer: name -> "METHOD /path" of the operation it leads to,
    # with the values of its path parameters (a runtime expression each; a parameter the two
    # paths share comes from the request's path).
    links: dict[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """Where a created resource can be used next: `operation` ("GET /api/v1/x/{id}") with
    `parameters` ({"id": "$response.body#/id"})."""

    operation: str
    parameters: Mapping[str, str]


def linked(operations: Iterable[str], **parameters: str) -> dict[str, Link]:
    """Links from one answer to each of `operations`, all taking the same `parameters`."""
    found = {}
    for operation in operations:
        method, path = operation.split(" ", 1)
        found[_operation_id(method.lower(), path)] = Link(operation, parameters)
    return found


# Error statuses a route documents with a decorator argument: the per-address throttle of the
# sign-in routes, and the cookie routes' CSRF check.
THROTTLED_BY_ADDRESS: Mapping[int, str] = {
    429: "Too many sign-in calls from this address (or failed sign-ins of this account) in the "
    "window; wait `Retry-After` seconds.",
    503: "The throttle cannot be checked (Redis unavailable); refused rather than unmetered.",
}
METRICS_ACCESS: Mapping[int, str] = {
    403: "The caller is not on the api's own machine (or came through a proxy) and sent no "
    "valid `Authorization: Bearer <RECOMENGINE_METRICS_TOKEN>`.",
}
CSRF_CHECKED: Mapping[int, str] = {
    401: "No refresh cookie, or its session has ended.",
    403: "The X-CSRF-Token header does not equal the CSRF cookie.",
}


def document(
    *,
    summary: str,
    tags: list[str],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | None] | None = None,
    security: str | None = None,
    content_type: str = "application/json",
    description: str | None = None,
    errors: Mapping[int, str] | None = None,
    links: Mapping[str, Link] | None = None,
) -> Callable[[F], F]:
    """Route decorator (put it outermost): attaches the operation's documentation."""

    def decorate(handler: F) -> F:
        handler.__openapi__ = Operation(  # type: ignore[attr-defined]
            summary=summary,
            tags=tags,
            body=body,
            query=query,
            responses=responses or {200: None},
            security=security,
            content_type=content_type,
            description=description or inspect.getdoc(handler) or "",
            errors=dict(errors or {}),
            links=dict(links or {}),
        )
        return handler

    return decorate


_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": ["string", "null"]},
        "requestId": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Limit": {
        "description": "Requests the key may make in the current one-minute window (its read "
        "or its write budget).",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window starts to refill.",
        "schema": {"type": "integer"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    },
    "ETag": {
        "description": "Strong validator of the content: send it back in If-None-Match to get "
        "a 304 while it has not changed.",
        "schema": {"type": "string"},
    },
}
_RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
_SUCCESS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: queued, done shortly after the answer",
    204: "No content",
    304: "Not modified: the If-None-Match ETag still matches",
    503: "Not ready",
}
# Errors implied by what every admin route of a tag is (the operators' console needs the role).
_TAG_ERRORS: dict[str, dict[int, str]] = {
    "operations": {403: "The signed-in admin is not an operator."},
}


def _implied_errors(op: Operation, *, has_path_params: bool) -> dict[int, str]:
    """The error statuses a route answers because of its traits: its body, query, credentials
    and path parameters (api/problems.py maps each failure to one of these)."""
    found: dict[int, str] = {}
    if op.body is not None:
        found[400] = "The body is empty or not valid JSON."
        found[413] = "The body is larger than the api accepts."
        found[422] = "A field breaks a rule; `errors` lists each field with what is wrong."
    if op.query is not None:
        found[422] = (
            "A parameter or field breaks a rule; `errors` lists each one with what is wrong."
        )
    schemes = _schemes(op)
    if "apiKey" in schemes:
        found[401] = "No API key, or one that is not valid (revoked, unknown)."
        found[403] = "The key may not do this (a read key writing) or the tenant is suspended."
        found[429] = "The key's per-minute budget is spent; wait `Retry-After` seconds."
        found[503] = "The rate limit cannot be checked (Redis unavailable); retry shortly."
    if "bearer" in schemes:
        found[401] = (
            "No credential, or one that is not valid (an expired token, an ended session, "
            "a revoked key)."
            if "apiKey" in schemes
            else "No admin access token, an expired one, or its session has ended."
        )
    if has_path_params:
        found[404] = "Not found, or it belongs to another tenant or admin."
    if "bearer" in schemes:
        for tag in op.tags:
            found.update(_TAG_ERRORS.get(tag, {}))
    return found


def _schemes(op: Operation) -> set[str]:
    """The security schemes a route takes ("bearer|apiKey": either)."""
    return set(op.security.split("|")) if op.security else set()


def _headers_of(op: Operation, status: int) -> dict[str, Any]:
    """Response headers of one status: rate limits on every key-authenticated answer, Retry-After
    on 429 and on a 503 problem, the ETag where a route answers 304."""
    names: list[str] = []
    if "apiKey" in _schemes(op) and (200 <= status < 300 or status in (304, 429)):
        names.extend(_RATE_HEADERS)
    if status == 429:
        names.extend(n for n in ("Retry-After", *_RATE_HEADERS) if n not in names)
    if status == 503 and op.responses.get(503) is None:
        names.append("Retry-After")
    if status in (200, 304) and 304 in op.responses:
        names.append("ETag")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


# api/headers.py refuses a NUL byte anywhere in the URL (400) before any route runs.
_NO_NUL = "^[^\x00]*$"


def _url_text(schema: dict[str, Any]) -> dict[str, Any]:
    """A path or query parameter's schema, its free text stating that it holds no NUL."""
    if schema.get("type") == "string" and not ({"pattern", "enum", "const"} & schema.keys()):
        return {**schema, "pattern": _NO_NUL}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_url_text(branch) for branch in schema["anyOf"]]}
    return schema


def _operations(app: Sanic) -> list[tuple[str, str, Operation, list[str]]]:
    found = []
    for route in app.router.routes:
        handler = route.handler
        while handler is not None and not hasattr(handler, "__openapi__"):
            handler = getattr(handler, "__wrapped__", None)
        if handler is None:
            continue
        path = "/" + route.path.lstrip("/")
        params = [p.name for p in route.params.values()]
        for name in params:
            path = path.replace(f"<{name}>", "{" + name + "}")
            path = path.replace(f"<{name}:str>", "{" + name + "}")
        for method in sorted(route.methods):
            if method in {"HEAD", "OPTIONS"}:
                continue
            found.append((path, method.lower(), handler.__openapi__, params))
    return found


def _operation_id(method: str, path: str) -> str:
    words = path.strip("/").replace("{", "").replace("}", "").replace("/", "_").replace("-", "_")
    return f"{method}_{words}"


def _add_links(
    paths: dict[str, dict[str, Any]], operations: list[tuple[str, str, Operation, list[str]]]
) -> None:
    """Each operation's links on its success answers with a body; a link to an operation the
    document lacks is a mistake caught here, not by a client."""
    for path, method, op, params in operations:
        if not op.links:
            continue
        entry = paths[path][method]
        links = {}
        for name, link in op.links.items():
            target_method, target_path = link.operation.split(" ", 1)
            target = paths.get(target_path, {}).get(target_method.lower())
            if target is None:
                raise ValueError(f"{method.upper()} {path} links to {link.operation}, not a route")
            values = dict(link.parameters)
            for parameter in target["parameters"]:
                if parameter["in"] == "path" and parameter["name"] not in values:
                    if parameter["name"] not in params:
                        raise ValueError(f"{link.operation}: no value for {parameter['name']}")
                    values[parameter["name"]] = f"$request.path.{parameter['name']}"
            links[name] = {"operationId": target["operationId"], "parameters": values}
        for status, response in entry["responses"].items():
            if status.startswith("2") and "content" in response:
                response["links"] = links


def build_document(app: Sanic, *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of `app`."""
    operations = _operations(app)
    models: set[type[BaseModel]] = set()
    for _, _, op, _ in operations:
        models.update(m for m in (op.body, *op.responses.values()) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, schema = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    components: dict[str, Any] = dict(schema.get("$defs", {}))
    components["Problem"] = _PROBLEM
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, params in operations:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "description": op.description,
            "tags": op.tags,
            "operationId": _operation_id(method, path),
            "parameters": [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": _url_text({"type": "string"}),
                }
                for name in params
            ],
            "responses": {},
        }
        if op.query is not None:
            query_schema = op.query.model_json_schema(by_alias=True)
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                entry["parameters"].append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "schema": _url_text(prop),
                    }
                )
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if 304 in op.responses:
            entry["parameters"].append(
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "The ETag of a copy the client holds.",
                }
            )
        problem_body = {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
        errors = {**_implied_errors(op, has_path_params=bool(params)), **op.errors}
        for status, model in op.responses.items():
            response: dict[str, Any] = {
                "description": errors.get(status) or _SUCCESS_TEXT.get(status, str(status))
            }
            if model is not None:
                response["content"] = {op.content_type: {"schema": refs[(model, "validation")]}}
            elif status >= 400:
                response["content"] = problem_body
            entry["responses"][str(status)] = response
        for status, meaning in sorted(errors.items()):
            if str(status) not in entry["responses"]:
                entry["responses"][str(status)] = {"description": meaning, "content": problem_body}
        for status_text, response in entry["responses"].items():
            headers = _headers_of(op, int(status_text))
            if headers:
                response["headers"] = headers
        entry["responses"]["default"] = {
            "description": "Any other failure, as RFC 9457 problem+json (500: quote the "
            "requestId when reporting it).",
            "content": problem_body,
        }
        if op.security:
            # "bearer|apiKey": either scheme (alternatives).
            entry["security"] = [{scheme: []} for scheme in op.security.split("|")]
        paths.setdefault(path, {})[method] = entry
    _add_links(paths, operations)
    return {
        "openapi": "3.1.0",
        "info": {"title": "RecomEngine API", "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "headers": _HEADERS,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
