"""Field types shared by the domains: bounded text, countries, request models."""

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import pycountry
from pydantic import AfterValidator, AwareDatetime, ConfigDict, StringConstraints, model_validator
from sqlmodel import SQLModel


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


def _country(value: str) -> str:
    if pycountry.countries.get(alpha_2=value) is None:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return value


def Text(max_length: int, min_length: int = 0) -> Any:
    """A string of bounded length with no NUL characters."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(_no_nul),
    ]


# Instants stay within years every backend stores and that date arithmetic
# (a review due one year later) cannot push past datetime's own range.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("instant out of range (years 0001 to 9998)")
    return value.astimezone(UTC)


# An RFC 3339 instant with an offset, normalised to UTC; a naive one is a 422.
UTCInstant = Annotated[AwareDatetime, AfterValidator(_to_utc)]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]
Label = Text(200, 1)
ShortText = Text(200)
LongText = Text(10_000)
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


# More unknown fields than this in one object are one error, not one each:
# a body of a million unknown keys must not cost a million errors.
MAX_UNKNOWN_FIELDS = 20


class RequestModel(SQLModel):
    """Base of every request body: unknown or read-only fields are a 422."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _bound_unknown_fields(cls, data: Any) -> Any:
        fields = cls.model_fields
        if isinstance(data, dict) and len(data) > len(fields) + MAX_UNKNOWN_FIELDS:
            unknown = len(data.keys() - fields.keys())
            if unknown > MAX_UNKNOWN_FIELDS:
                raise ValueError(f"{unknown} fields this object does not have")
        return data


class UpdateModel(RequestModel):
    """A PATCH body: only the fields sent change; a required field cannot be nulled."""

    not_nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _reject_nulls(self) -> "UpdateModel":
        for name in self.model_fields_set & self.not_nullable:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)
