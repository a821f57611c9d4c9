"""OpenAPI 3.1, built from the app's real routes and the pydantic models they declare."""

from __future__ import annotations

from collections.abc import Callable
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


def document(
    *,
    summary: str,
    tags: list[str],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | None] | None = None,
    security: str | None = None,
    content_type: str = "application/json",
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
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


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
            "tags": op.tags,
            "operationId": _operation_id(method, path),
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in params
            ],
            "responses": {},
        }
        if op.query is not None:
            query_schema = op.query.model_json_schema(by_alias=True)
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                entry["parameters"].append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        for status, model in op.responses.items():
            response: dict[str, Any] = {"description": str(status)}
            if model is not None:
                response["content"] = {op.content_type: {"schema": refs[(model, "validation")]}}
            entry["responses"][str(status)] = response
        entry["responses"]["default"] = {
            "description": "Problem",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        if op.security:
            entry["security"] = [{op.security: []}]
        paths.setdefault(path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "RecomEngine API", "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }
