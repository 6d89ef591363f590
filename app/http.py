"""HTTP conventions shared by every route: ETags, If-Match, creation responses."""

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request, Response
from pydantic import BaseModel

from app.errors import AppError

JSON = "application/json"


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(request: Request, version: int) -> None:
    """Strong comparison (RFC 9110 13.1.1): missing -> 428, stale -> 412.

    `If-Match: *` is refused: it would let a client overwrite a change it
    has never seen, which is what this header is here to prevent.
    """
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        raise AppError(428, "Send If-Match with the ETag you last read.", slug="precondition-required")
    tags = [t.strip() for t in header.split(",")]
    if etag(version) not in tags:
        raise AppError(
            412,
            "The resource has changed since you read it; fetch it again.",
            slug="precondition-failed",
            headers={"ETag": etag(version)},
        )


def with_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


M = TypeVar("M", bound=BaseModel)


def public(model: type[M], row: Any, **computed: Any) -> M:
    """The public view of a stored row, built without validating again what
    the schema and the database already guarantee (the hot read paths spend
    more on that than on the query)."""
    fields = {name: getattr(row, name) for name in model.model_fields if name not in computed}
    return model.model_construct(**fields, **computed)


def ok(body: BaseModel, *, version: int | None = None) -> Response:
    """A 200 with the body serialised once; the route's response_model documents it."""
    headers = {"ETag": etag(version)} if version is not None else None
    return Response(body.model_dump_json().encode(), media_type=JSON, headers=headers)


def created(body: BaseModel, *, location: str, version: int | None) -> Response:
    headers = {"Location": location}
    if version is not None:
        headers["ETag"] = etag(version)
    return Response(body.model_dump_json().encode(), status_code=201, headers=headers, media_type=JSON)


def api_path(*parts: str | uuid.UUID) -> str:
    return "/api/v1/" + "/".join(str(p) for p in parts)


Purpose = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=500, description="Why personal data is needed (audited)"),
]
