"""Routes that describe themselves, and the OpenAPI document built from them.

Packages declare routes with `api_route(...)`, naming the msgspec types of their path
parameters, headers, query, body and response; the document at `/api/openapi.json` is generated
from those declarations, so it cannot drift. It is OpenAPI 3.1, whose schemas are JSON Schema
2020-12: what msgspec emits.

Patterns in those types are checked by msgspec with Python's `re.search` and by clients with
ECMA-262 regular expressions, so they are written to mean the same in both: explicit classes
(`[0-9]`, not `\\d`), and `$(?!\\n)` for the end of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.http import Id, present_type

OPENAPI_VERSION = "3.1.0"
JSON_MEDIA = "application/json"

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Operation:
    summary: str
    body: Any = None
    response: Any = None
    query: Any = None
    status: int = 200
    roles: tuple[str, ...] = ()
    # (name, msgspec type) of each required header and of each path parameter
    headers: tuple[tuple[str, Any], ...] = ()
    path: tuple[tuple[str, Any], ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
    # other success statuses with the same response (e.g. 200 when a create finds it exists)
    also: tuple[int, ...] = ()
    # the success response's media type; a non-JSON one is a string
    media_type: str = JSON_MEDIA

    @property
    def body_required(self) -> bool:
        """A body is required when its type has a required field: an empty body reads as `{}`
        (core.http.read_json), so a type with none is served by no body at all."""
        if self.body is None:
            return False
        fields = msgspec.structs.fields(self.body)
        return any(f.required for f in fields)

    @property
    def statuses(self) -> tuple[int, ...]:
        """The error statuses the route answers with: its own, plus those its body (400 not JSON,
        413 too large, 422 invalid) and its authentication (401) bring."""
        implied: set[int] = set()
        if self.body is not None:
            implied |= {400, 413, 422}
        if self.query is not None:
            implied.add(422)
        if self.roles:
            implied.add(401)
        return tuple(sorted(implied | set(self.errors)))


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
    headers: Mapping[str, Any] | None = None,
    path_params: Mapping[str, Any] | None = None,
    errors: Iterable[int] = (),
    tag: str = "",
    also: Iterable[int] = (),
    media_type: str = JSON_MEDIA,
) -> Route:
    """A route described in the OpenAPI document. Path parameters are ids (`core.http.Id`)
    unless `path_params` names another type."""
    params = dict(path_params or {})
    names = _PARAM.findall(path)
    if names:
        errors = (*errors, 404)  # an id that names nothing, or is no id at all
    route = Route(path, endpoint, methods=list(methods))
    operation = Operation(
        summary=summary,
        body=body,
        response=response,
        query=query,
        status=status,
        roles=tuple(roles),
        headers=tuple((headers or {}).items()),
        path=tuple((name, params.get(name, Id)) for name in names),
        errors=tuple(sorted(set(errors))),
        tags=(tag,) if tag else (),
        also=tuple(also),
        media_type=media_type,
    )
    route.operations = {m: operation for m in route.methods or ()}  # type: ignore[attr-defined]
    return route


def one_route_per_path(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """`routes` with the routes that share a path (e.g. `POST` and `GET /api/products`) joined
    into one, at the place of the first: Starlette answers 405 (and so OPTIONS) from the first
    route whose path matches, so that route must know every method of the path for its `Allow`
    header to list them all."""
    routes = list(routes)
    groups: dict[str, list[Route]] = {}
    for route in routes:
        if isinstance(route, Route):
            groups.setdefault(route.path, []).append(route)
    joined: list[BaseRoute] = []
    for route in routes:
        if not isinstance(route, Route) or len(groups[route.path]) == 1:
            joined.append(route)
        elif route is groups[route.path][0]:
            joined.append(_joined(groups[route.path]))
    return joined


def _joined(group: list[Route]) -> Route:
    handlers: dict[str, Callable[[Request], Any]] = {}
    operations: dict[str, Operation] = {}
    for route in group:
        for method in route.methods or ():
            if method in handlers:
                raise ValueError(f"{method} {route.path} is declared twice")
            handlers[method] = route.endpoint
        operations.update(getattr(route, "operations", {}))

    async def by_method(request: Request) -> Response:
        response: Response = await handlers[request.method](request)
        return response

    by_method.__name__ = by_method.__qualname__ = "+".join(
        getattr(r.endpoint, "__name__", "endpoint") for r in group
    )
    route = Route(group[0].path, by_method, methods=sorted(handlers), name=group[0].name)
    route.operations = operations  # type: ignore[attr-defined]
    route.endpoints = dict(handlers)  # type: ignore[attr-defined]
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
            "schema": msgspec.json.schema(present_type(f.type)),
        }
        for f in msgspec.structs.fields(kind)
    ]


def _operation(op: Operation, by_type: Mapping[Any, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": msgspec.json.schema(kind)}
        for name, kind in op.path
    ]
    params += [
        {"name": name, "in": "header", "required": True, "schema": msgspec.json.schema(kind)}
        for name, kind in op.headers
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
            "required": op.body_required,
            "content": {JSON_MEDIA: {"schema": by_type[op.body]}},
        }
    ok: dict[str, Any] = {"description": "success"}
    if op.response is not None:
        ok["content"] = {op.media_type: {"schema": by_type[op.response]}}
    for status in (op.status, *op.also):
        item["responses"][str(status)] = ok
    for status in op.statuses:
        item["responses"][str(status)] = {
            "description": "error",
            "content": {JSON_MEDIA: {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return item


def build_openapi(routes: Iterable[BaseRoute], title: str, version: str) -> dict[str, Any]:
    described = [
        (route, method, op)
        for route in one_route_per_path(routes)
        if isinstance(route, Route)
        for method, op in getattr(route, "operations", {}).items()
        if method != "HEAD"
    ]
    types = sorted(
        {t for _, _, op in described for t in (op.body, op.response) if t is not None}, key=repr
    )
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    components["Error"] = _ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for route, method, op in described:
        template = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(template, {})[method.lower()] = _operation(op, by_type)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
