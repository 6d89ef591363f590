"""Hot routes: the reads agency tools poll, bound without FastAPI's per-request dependency solving.

A hot route is declared as any other, and marked `@hot`; its signature still
documents it in OpenAPI, and FastAPI still serves every request the lean
binder does not take. HotRoute builds, once, a binder from the endpoint's
signature that accepts only what is plainly well-formed:

- a path id in the canonical 8-4-4-4-12 form;
- a query parameter given at most once: an enum's value, a string within
  its max_length, a canonically written integer within ge/le;
- a dependency with a lean form (`lean_dependency`: the caller's key and
  scope, the reads) or one whose own parameters are bindable alike (the page).

Anything else (a malformed id, an out-of-range limit, a repeated
parameter, a missing or odd Authorization header) goes to FastAPI's own
handler, which answers it exactly as it always did. So the lean path never
answers differently, only sooner (tests/test_hot.py drives both). Errors the
endpoint raises (401, 403, 404) leave by the same exception handlers either way.

HotPaths goes one step further for the GETs: it finds, once, the paths
FastAPI's router could only ever give to a hot route, so that the app's
middleware (app.core.gate) answers those requests through the lean binder
without FastAPI's routing and per-request wrapping.
"""

import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import annotated_types
from fastapi import Request, Response
from fastapi.params import Depends, Param, Query
from fastapi.routing import iter_route_contexts
from starlette.convertors import Convertor
from starlette.routing import BaseRoute, Mount

from app.core.http import StrictJSONRoute

E = TypeVar("E", bound=Callable[..., Awaitable[Response]])
Binder = Callable[[Request], Awaitable[dict[str, Any] | None]]
# One parameter's value, from the request.
Getter = Callable[[Request], Awaitable[Any]]


class NoLeanValue(Exception):
    """Raised by a getter: the request goes to FastAPI's own handler."""


_LEAN: dict[Callable[..., Any], Getter] = {}
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,17}")


def hot(endpoint: E) -> E:
    """Mark an endpoint of a HotRoute router for the lean binder (a TypeError at startup if it can't be)."""
    endpoint.__hot__ = True  # type: ignore[attr-defined]
    return endpoint


def lean_dependency(dependency: Callable[..., Any], getter: Getter) -> None:
    """Register how to get `dependency`'s value from a request without FastAPI's solver.
    `getter` may raise what the dependency raises, or NoLeanValue to hand the
    request to FastAPI."""
    _LEAN[dependency] = getter


def _query_getter(name: str, annotation: Any, default: Any, required: bool, info: Query | None) -> Getter:
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [t for t in typing.get_args(annotation) if t is not type(None)] if optional else [annotation]
    kind = kinds[0] if len(kinds) == 1 else None
    bounds = {type(m): m for m in (info.metadata if info is not None else [])}
    if info is not None and (
        info.alias not in (None, name)
        or set(bounds) - {annotated_types.MaxLen, annotated_types.Ge, annotated_types.Le}
    ):
        raise TypeError(f"query parameter {name!r}: only max_length, ge and le are bound lean")
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        by_value = {member.value: member for member in kind}

        def parse(text: str) -> Any:
            return by_value[text]
    elif kind is str:
        longest = bounds[annotated_types.MaxLen].max_length if annotated_types.MaxLen in bounds else None

        def parse(text: str) -> Any:
            if longest is not None and len(text) > longest:
                raise ValueError
            return text
    elif kind is int:
        low = bounds[annotated_types.Ge].ge if annotated_types.Ge in bounds else None
        high = bounds[annotated_types.Le].le if annotated_types.Le in bounds else None

        def parse(text: str) -> Any:
            if not _CANONICAL_INT.fullmatch(text):
                raise ValueError
            value = int(text)
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError
            return value
    else:
        raise TypeError(f"query parameter {name!r}: {annotation!r} is not bound lean")

    async def get(request: Request) -> Any:
        values = request.query_params.getlist(name)
        if not values:
            if required:
                raise NoLeanValue  # FastAPI's 422
            return default
        if len(values) > 1:
            raise NoLeanValue
        try:
            return parse(values[0])
        except (KeyError, ValueError):
            raise NoLeanValue from None

    return get


def _path_getter(name: str, annotation: Any) -> Getter:
    if annotation is not uuid.UUID:
        raise TypeError(f"path parameter {name!r}: only UUIDs are bound lean")

    async def get(request: Request) -> Any:
        text = request.path_params[name]
        if not _CANONICAL_UUID.fullmatch(text):
            raise NoLeanValue
        return uuid.UUID(text)

    return get


def _depends_getter(dependency: Callable[..., Any], path_names: set[str]) -> Getter:
    if dependency in _LEAN:
        return _LEAN[dependency]
    bind = binder(dependency, path_names)
    call = dependency

    async def get(request: Request) -> Any:
        kwargs = await bind(request)
        if kwargs is None:
            raise NoLeanValue
        return await call(**kwargs)

    return get


def binder(function: Callable[..., Any], path_names: set[str]) -> Binder:
    """The lean binder of `function`'s parameters; a TypeError if one of them has none."""
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{function.__qualname__}: only coroutines are bound lean (others run in threads)")
    hints = typing.get_type_hints(function, include_extras=True)
    getters: list[tuple[str, Getter]] = []
    for name, param in inspect.signature(function).parameters.items():
        annotation = hints.get(name, Any)
        metadata: tuple[Any, ...] = ()
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *rest = typing.get_args(annotation)
            metadata = tuple(rest)
        depends = next((m for m in metadata if isinstance(m, Depends)), None)
        query = next((m for m in metadata if isinstance(m, Query)), None)
        if any(isinstance(m, Param) and not isinstance(m, Query) for m in metadata):
            raise TypeError(f"{function.__qualname__}: parameter {name!r} is not bound lean")
        if depends is not None and depends.dependency is not None:
            getters.append((name, _depends_getter(depends.dependency, path_names)))
        elif annotation is Request:
            getters.append((name, _request))
        elif name in path_names:
            getters.append((name, _path_getter(name, annotation)))
        else:
            if isinstance(param.default, Param):
                raise TypeError(f"{function.__qualname__}: parameter {name!r}: declare Query() in Annotated")
            required = param.default is inspect.Parameter.empty
            default = None if required else param.default
            getters.append((name, _query_getter(name, annotation, default, required, query)))

    async def bind(request: Request) -> dict[str, Any] | None:
        kwargs = {}
        try:
            for name, get in getters:
                kwargs[name] = await get(request)
        except NoLeanValue:
            return None
        return kwargs

    return bind


async def _request(request: Request) -> Request:
    return request


class HotRoute(StrictJSONRoute):
    """The route class of routers with `@hot` endpoints: those are answered
    through their lean binder when it takes the request, else as any route."""

    lean: Binder | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        endpoint = self.endpoint
        if not getattr(endpoint, "__hot__", False):
            return full
        if self.lean is None:
            self.lean = binder(endpoint, set(self.param_convertors))

        async def handler(request: Request) -> Response:
            response = await self.answer(request)
            return await full(request) if response is None else response

        return handler

    async def answer(self, request: Request) -> Response | None:
        """The endpoint's answer through the lean binder; None when the binder
        leaves the request to FastAPI (an endpoint that is not hot: always)."""
        kwargs = await self.lean(request) if self.lean is not None else None
        if kwargs is None:
            return None
        return await self.endpoint(**kwargs)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _HotPath:
    route: HotRoute
    regex: re.Pattern[str]  # the path as the app serves it, its routers' prefixes included
    convertors: dict[str, Convertor[Any]]


_WHOLE_PARAMETER = re.compile(r"\{\w+\}")


def _segments(path: str) -> list[str | None]:
    """A path template's segments, None for one that holds a parameter."""
    return [None if "{" in part else part for part in path.split("/")]


def _may_take(earlier: str, hot: str, *, mount: bool) -> bool:
    """Whether a route of path template `earlier` (a Mount's prefix with
    `mount`) could match a request for the template `hot` whose parameters are
    canonical UUIDs: True unless some segment rules it out."""
    if ":path}" in earlier:
        return True  # matches across segments: not worth reasoning about
    theirs, ours = _segments(earlier), _segments(hot)
    if mount:
        ours = ours[: len(theirs)]
    if len(theirs) != len(ours):
        return False
    for their, our in zip(theirs, ours, strict=True):
        if their is None:
            continue  # a parameter of theirs takes anything
        if our is None:
            if not _CANONICAL_UUID.fullmatch(their):
                return False  # a literal of theirs is never one of our ids
        elif their != our:
            return False
    return True


class HotPaths:
    """The requests FastAPI's router could only give to a hot GET route.

    Found once among the app's `routes` (the routes of routers included in it
    as the router sees them: their prefixes added, in their order): a hot
    route's path is taken when no route before it could match a GET of that
    path whose parameters are canonical UUIDs, as the router gives a request
    to the first route that matches it in full. A route whose path cannot be
    read counts as one that may match anything.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.paths: list[_HotPath] = []
        earlier: list[tuple[str, bool]] = []  # (path template, is a Mount) of the GET routes before
        for context in iter_route_contexts(routes):
            route = context.original_route
            path = context.path
            methods = context.methods
            regex = getattr(context, "path_regex", None)
            if path is None or regex is None:
                earlier.append(("/{path:path}", True))
                continue
            if (
                isinstance(route, HotRoute)
                and route.lean is not None
                and methods is not None
                and "GET" in methods
                and getattr(context, "max_body_size", None) is None
                and all(_WHOLE_PARAMETER.fullmatch(part) for part in path.split("/") if "{" in part)
                and not any(_may_take(template, path, mount=mount) for template, mount in earlier)
            ):
                self.paths.append(_HotPath(route, regex, dict(context.param_convertors)))
            if methods is None or "GET" in methods:
                earlier.append((path, isinstance(route, Mount)))

    def match(self, path: str) -> tuple[HotRoute, dict[str, Any]] | None:
        """The hot route of a GET of `path` (a route path: without the root path)
        and its path parameters, or None: FastAPI's router decides."""
        for hot in self.paths:
            found = hot.regex.match(path)
            if found is None:
                continue
            params = found.groupdict()
            for name, value in params.items():
                if not _CANONICAL_UUID.fullmatch(value):
                    return None
                params[name] = hot.convertors[name].convert(value)
            return hot.route, params
        return None
