"""HTTP conventions shared by every route: JSON bodies, ETags, If-Match,
one helper per kind of answer (ok() a read, listed() a page of a list,
created(), deleted()), the X-Purpose header."""

import functools
import json
import operator
import re
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.core.errors import AppError, HeldElsewhere, invalid
from app.core.types import clean_line, clock_skew

JSON = "application/json"


class DuplicateKey(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through."""

    def __init__(self, key: str) -> None:
        super().__init__(400, f"The JSON body gives the key {key[:100]!r} twice in one object.")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


# One decoder for every request: json.loads() with a hook would build a new
# one per call, which costs more than parsing a small body.
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=no_duplicate_keys)


def strict_json(body: bytes) -> Any:
    """json.loads(body), refusing a key given twice in one object."""
    return _STRICT_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


class StrictJSONRequest(Request):
    """A request whose JSON body may not give a key twice in one object: a
    parser keeps the last, a proxy or a log reader may see the first."""

    async def json(self) -> Any:
        return strict_json(await self.body())


class StrictJSONRoute(APIRoute):
    """The route class of every router that takes a JSON body; its body is
    validated with the clock skew of the app's settings (app.core.types)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            strict_request = StrictJSONRequest(request.scope, request.receive)
            try:
                with clock_skew(request.app.state.settings.clock_skew_seconds):
                    return await handler(strict_request)
            except HeldElsewhere as held:
                # For its handler to send home, once the request's transaction is rolled back.
                held.body = await strict_request.body()
                raise

        return strict


def etag(version: int) -> str:
    return f'"{version}"'


# A client names the version it read, or a few it would accept; more is a
# list of guesses, i.e. a blind overwrite.
MAX_IF_MATCH_TAGS = 4
_STRONG_TAG = r'"[\x21\x23-\x7e]*"'
_IF_MATCH = re.compile(rf"{_STRONG_TAG}(?:[ \t]*,[ \t]*{_STRONG_TAG}){{0,{MAX_IF_MATCH_TAGS - 1}}}")


def check_if_match(request: Request, version: int) -> None:
    """Strong comparison (RFC 9110 13.1.1): missing -> 428, stale -> 412,
    anything but a list of up to MAX_IF_MATCH_TAGS strong entity tags -> 400.

    `If-Match: *` is refused: it would let a client overwrite a change it
    has never seen, which is what this header is here to prevent.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        raise AppError(428, "Send If-Match with the ETag you last read.", slug="precondition-required")
    header = header.strip(" \t")
    if len(header) > 200 or not _IF_MATCH.fullmatch(header):
        raise AppError(
            400,
            f"If-Match takes up to {MAX_IF_MATCH_TAGS} strong entity tags, such as the ETag you read.",
            slug="invalid-if-match",
        )
    tags = re.findall(_STRONG_TAG, header)
    if etag(version) not in tags:
        raise AppError(
            412,
            "The resource has changed since you read it; fetch it again.",
            slug="precondition-failed",
            headers={"ETag": etag(version)},
        )


M = TypeVar("M", bound=BaseModel)


def public(model: type[M], row: Any, **computed: Any) -> M:
    """The public view of a stored row, built without validating again what
    the schema and the database already guarantee (the hot read paths spend
    more on that than on the query)."""
    fields = {name: getattr(row, name) for name in model.model_fields if name not in computed}
    return model.model_construct(**fields, **computed)


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


@functools.cache
def _picker(model: type[BaseModel], row_type: type, computed: tuple[str, ...]) -> Callable[[Any], Any] | None:
    """The model's fields, in its order, from a row of `row_type` (a named
    tuple) in one call, a computed field's place held by any value; None
    when the row is no named tuple or lacks a field (getattr says which)."""
    columns: tuple[str, ...] | None = getattr(row_type, "_fields", None)
    names = _field_names(model)
    if columns is None or len(names) < 2 or not all(n in computed or n in columns for n in names):
        return None
    return operator.itemgetter(*(0 if n in computed else columns.index(n) for n in names))


def public_json(model: type[BaseModel], row: Any, **computed: Any) -> dict[str, Any]:
    """public(), as the dict its JSON is written from (ok() writes it with orjson):
    what the hot reads answer, without building a model per row."""
    names = _field_names(model)
    pick = _picker(model, row.__class__, tuple(computed))
    if pick is None:
        return {name: computed[name] if name in computed else getattr(row, name) for name in names}
    content = dict(zip(names, pick(row), strict=True))
    content.update(computed)  # in the places the model gives them
    return content


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):  # asyncpg's UUIDs (app.core.uow), a subclass orjson leaves to us
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(content: Any) -> bytes:
    """JSON as pydantic writes it for the same values (UTC instants end in Z)."""
    return orjson.dumps(content, default=_json_default, option=orjson.OPT_UTC_Z)


def ok(body: BaseModel | dict[str, Any], *, version: int | None = None) -> Response:
    """A 200 with the body serialised once; the route's response_model documents it."""
    headers = {"ETag": etag(version)} if version is not None else None
    content = body.model_dump_json().encode() if isinstance(body, BaseModel) else dump_json(body)
    return Response(content, media_type=JSON, headers=headers)


def listed(items: Sequence[BaseModel] | Sequence[Mapping[str, Any]], next_cursor: str | None) -> Response:
    """A 200 with one page of a list (app.core.pagination.Page, which the route's
    response_model documents): public() models, or public_json() dicts on the hot reads."""
    return ok({"items": list(items), "next_cursor": next_cursor})


def created(body: BaseModel, *, location: str, version: int | None) -> Response:
    """A 201 with the created resource, where it is, and its ETag when it is versioned."""
    headers = {"Location": location}
    if version is not None:
        headers["ETag"] = etag(version)
    return Response(body.model_dump_json().encode(), status_code=201, headers=headers, media_type=JSON)


def deleted() -> Response:
    """A 204: the resource is gone."""
    return Response(status_code=204)


def api_path(*parts: str | uuid.UUID) -> str:
    return "/api/v1/" + "/".join(str(p) for p in parts)


# A coroutine: FastAPI would run a plain function in a worker thread.
async def read_purpose(
    x_purpose: Annotated[
        str | None,
        Header(alias="X-Purpose", max_length=500, description="Why personal data is needed (audited)"),
    ] = None,
) -> str | None:
    """The stated purpose as the client wrote it: header values arrive as
    latin-1 bytes, and a purpose in any language is sent as UTF-8."""
    if x_purpose is None:
        return None
    try:
        return clean_line(x_purpose.encode("latin-1").decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is one
        reason = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise invalid(["header", "X-Purpose"], f"X-Purpose {reason}.") from exc


Purpose = Annotated[str | None, Depends(read_purpose)]
