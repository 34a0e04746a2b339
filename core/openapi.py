"""Routes that describe themselves, and the OpenAPI document built from them.

Packages declare routes with `api_route(...)`, naming the msgspec body and response types; the
document at `/api/openapi.json` is generated from those declarations, so it cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Operation:
    summary: str
    body: Any = None
    response: Any = None
    query: Any = None
    status: int = 200
    roles: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
    # other success statuses with the same response (e.g. 200 when a create finds it exists)
    also: tuple[int, ...] = ()


def api_route(
    path: str,
    endpoint: Callable[..., Any],
    *,
    methods: Sequence[str],
    summary: str,
    body: Any = None,
    response: Any = None,
    query: Any = None,
    status: int = 200,
    roles: Iterable[str] = (),
    headers: Iterable[str] = (),
    errors: Iterable[int] = (),
    tag: str = "",
    also: Iterable[int] = (),
) -> Route:
    route = Route(path, endpoint, methods=list(methods))
    route.operation = Operation(  # type: ignore[attr-defined]
        summary=summary,
        body=body,
        response=response,
        query=query,
        status=status,
        roles=tuple(roles),
        headers=tuple(headers),
        errors=tuple(errors),
        tags=(tag,) if tag else (),
        also=tuple(also),
    )
    return route


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _query_parameters(kind: Any) -> list[dict[str, Any]]:
    """The fields of a query Struct (see `core.http.read_query`) as OpenAPI query parameters."""
    if kind is None:
        return []
    return [
        {
            "name": f.encode_name,
            "in": "query",
            "required": f.required,
            "schema": msgspec.json.schema(f.type),
        }
        for f in msgspec.structs.fields(kind)
    ]


def build_openapi(routes: Iterable[BaseRoute], title: str, version: str) -> dict[str, Any]:
    described = [
        (r, r.operation) for r in routes if isinstance(r, Route) and hasattr(r, "operation")
    ]
    types = {t for _, op in described for t in (op.body, op.response) if t is not None}
    schemas, components = msgspec.json.schema_components(
        sorted(types, key=repr), ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(sorted(types, key=repr), schemas, strict=True))
    components["Error"] = _ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for route, op in described:
        template = _PARAM.sub(r"{\1}", route.path)
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        params += [
            {
                "name": h,
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
            for h in op.headers
        ]
        params += _query_parameters(op.query)
        item: dict[str, Any] = {"summary": op.summary, "parameters": params, "responses": {}}
        if op.tags:
            item["tags"] = list(op.tags)
        if op.roles:
            item["security"] = [{"bearer": []}]
            item["description"] = "roles: " + ", ".join(op.roles)
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.body]}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": by_type[op.response]}}
        for status in (op.status, *op.also):
            item["responses"][str(status)] = ok
        for status in sorted({400, 422, *op.errors} if op.body is not None else set(op.errors)):
            item["responses"][str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            paths.setdefault(template, {})[method.lower()] = item
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
