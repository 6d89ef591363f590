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
"""

import enum
import inspect
import re
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import annotated_types
from fastapi import Request, Response
from fastapi.params import Depends, Param, Query

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
            kwargs = await self.lean(request) if self.lean is not None else None
            if kwargs is None:
                return await full(request)
            return await endpoint(**kwargs)  # type: ignore[no-any-return]

        return handler
