"""Field types shared by the domains: bounded text, instants, countries, request models.

The rules on input (text normalised and free of invisible characters,
instants of what happened not in the future, dates in their order) hold in
request bodies only: the models that forbid extra fields. Public models
validate stored rows with the same field types, and a value stored before a
rule existed must stay readable.
"""

import re
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar

import annotated_types
import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlmodel import SQLModel

from app.core.config import Settings
from app.core.errors import invalid


def _in_request_body(info: ValidationInfo) -> bool:
    return info.config is not None and info.config.get("extra_fields_behavior") == "forbid"


# The Unicode property Default_Ignorable_Code_Point (DerivedCoreProperties.txt,
# UAX #44; Unicode 14 to 16 list the same ranges): characters a text renderer
# shows as nothing when it has no glyph for them. Among them the soft hyphen,
# the combining grapheme joiner, the Hangul fillers, zero-width characters,
# bidi controls (they make a reference read otherwise than it is: "Trojan
# Source"), variation selectors and tag characters: in a value that names
# something, two that look the same would be different ones.
_DEFAULT_IGNORABLE = (
    "\u00ad\u034f\u061c\u115f-\u1160\u17b4-\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
# C0 and C1 controls, DEL and lone surrogates (JSON's "\ud800", which no
# database stores); in one line also line and paragraph separators and the
# default-ignorable characters.
_SINGLE_LINE_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_DEFAULT_IGNORABLE}\ud800-\udfff]")
_MULTI_LINE_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_NEWLINES = re.compile("\r\n?")


def _refuse(found: re.Match[str]) -> None:
    raise ValueError(f"character U+{ord(found.group()):04X} is not allowed here")


def nfc(value: str) -> str:
    """Unicode NFC, the form every text is stored in (ASCII always is)."""
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def clean_line(value: str) -> str:
    """One line of text as stored: NFKC (a full-width or otherwise compatible
    spelling is the plain one) and trimmed; a ValueError names a character it
    may not hold. NFKC neither makes nor removes such characters (it maps a
    halfwidth Hangul filler to another filler), so the value as sent is checked."""
    found = _SINGLE_LINE_FORBIDDEN.search(value)
    if found:
        _refuse(found)
    return (value if value.isascii() else unicodedata.normalize("NFKC", value)).strip()


@dataclass(frozen=True)
class _TextRules(annotated_types.GroupedMetadata):
    """A bounded string with the rules of its kind, in one Python call per
    value (every text field of every request pays for it). The bounds hold
    for what is sent (checked first, natively, and documented in the
    schema) and again for what is stored. Used as `Annotated[str, Text(...)]`."""

    max_length: int
    min_length: int
    multi_line: bool

    def __iter__(self) -> Iterator[object]:
        yield annotated_types.MinLen(self.min_length)
        yield annotated_types.MaxLen(self.max_length)
        yield AfterValidator(self.check)

    def check(self, value: str, info: ValidationInfo) -> str:
        if not _in_request_body(info):
            if "\x00" in value:  # never stored, whatever the model
                raise ValueError("NUL characters are not allowed")
            return value
        if self.multi_line:
            if "\r" in value:  # text pasted from another system keeps its line breaks, as LF
                value = _NEWLINES.sub("\n", value)
            found = _MULTI_LINE_FORBIDDEN.search(value)
            if found:
                _refuse(found)
            value = nfc(value)
        else:
            value = clean_line(value)
        if self.min_length and not value.strip():
            raise ValueError("must not be empty or only whitespace")
        if not self.min_length <= len(value) <= self.max_length:
            raise ValueError(f"must be {self.min_length} to {self.max_length} characters once normalised")
        return value


def Text(max_length: int, min_length: int = 0) -> _TextRules:
    """One line of text (a reference, title, label, code, name, subject): NFKC,
    trimmed, no control or default-ignorable characters; required (min_length
    >= 1) means not blank."""
    return _TextRules(max_length, min_length, multi_line=False)


def MultilineText(max_length: int, min_length: int = 0) -> _TextRules:
    """Free text (a summary, body, note, description): NFC, line breaks as LF,
    tabs and newlines allowed, no other control characters."""
    return _TextRules(max_length, min_length, multi_line=True)


# Instants stay within years every backend stores and that date arithmetic
# (a review due one year later) cannot push past datetime's own range.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError("instant out of range (years 0001 to 9998)")
    return value.astimezone(UTC)


# The `clock_skew_seconds` of the app or command validating. A validator has no
# way to that app's settings, so whoever validates input sets it for its own
# context (clock_skew()): app.core.http.StrictJSONRoute around each request, a
# bundle import process around each import, the CLI around each command.
# Anywhere else (a test or script building a model) it is the setting's default.
_CLOCK_SKEW: ContextVar[timedelta] = ContextVar(
    "clock_skew", default=timedelta(seconds=Settings.model_fields["clock_skew_seconds"].default)
)


@contextmanager
def clock_skew(seconds: int) -> Iterator[None]:
    """Within the block, instants of what happened may lie this far in the future."""
    token = _CLOCK_SKEW.set(timedelta(seconds=seconds))
    try:
        yield
    finally:
        _CLOCK_SKEW.reset(token)


def latest_past() -> datetime:
    """The latest instant a record of something that happened may name: now,
    give or take the clocks of the agencies' systems (clock_skew())."""
    return datetime.now(UTC) + _CLOCK_SKEW.get()


def _happened(value: datetime, info: ValidationInfo) -> datetime:
    if _in_request_body(info) and value > latest_past():
        raise ValueError("must not be in the future")
    return value


def _born(value: date, info: ValidationInfo) -> date:
    # A day, not an instant: tomorrow in UTC is already today east of it.
    if _in_request_body(info) and value > (latest_past() + timedelta(days=1)).date():
        raise ValueError("must not be in the future")
    return value


# An RFC 3339 instant with an offset, normalised to UTC; a naive one is a 422.
UTCInstant = Annotated[AwareDatetime, AfterValidator(_to_utc)]
# An instant at which something happened (a seizure, a search, a detention):
# one far in the future would freeze every rule of order that follows it.
PastInstant = Annotated[AwareDatetime, AfterValidator(_to_utc), AfterValidator(_happened)]
PastDate = Annotated[date, AfterValidator(_born)]


def _country(value: str) -> str:
    if pycountry.countries.get(alpha_2=value) is None:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return value


CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]
Label = Annotated[str, Text(200, 1)]
ShortText = Annotated[str, Text(200)]
LongText = Annotated[str, MultilineText(10_000)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

# Pairs of fields (earlier, later) whose values must come in this order.
Ordering = tuple[tuple[str, str], ...]


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def order_violations(
    ordering: Ordering, values: Mapping[str, Any], sent: set[str]
) -> Iterator[tuple[str, str]]:
    """(field, message) for each pair out of order, naming the field that was
    sent (the later one when both were). A day compared with an instant
    allows a day either way: the instant is in UTC, the day in local time."""
    for early, late in ordering:
        first, then = values.get(early), values.get(late)
        if first is None or then is None:
            continue
        if isinstance(first, datetime) != isinstance(then, datetime):
            out_of_order = _day(then) < _day(first) - timedelta(days=1)
        else:
            out_of_order = then < first
        if out_of_order:
            field = early if early in sent and late not in sent else late
            yield field, f"{late} must not be before {early}"


def require_order(ordering: Ordering, values: Mapping[str, Any], sent: set[str]) -> None:
    """A 422 naming the body field of the first pair out of order."""
    for field, msg in order_violations(ordering, values, sent):
        raise invalid(["body", field], msg)


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

    ordering: ClassVar[Ordering] = ()

    @model_validator(mode="after")
    def _in_order(self) -> "RequestModel":
        if not self.ordering:
            return self
        values = {name: getattr(self, name, None) for pair in self.ordering for name in pair}
        errors = [
            InitErrorDetails(type=PydanticCustomError("order", msg), loc=(field,), input=values[field])
            for field, msg in order_violations(self.ordering, values, self.model_fields_set)
        ]
        if errors:
            # Raised here, the error keeps its place in the document (a bundle's
            # ["body", "detainees", 3, "review_due"]), which a ValueError would lose.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class UpdateModel(RequestModel):
    """A PATCH body: only the fields sent change; a required field cannot be nulled."""

    not_nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _reject_nulls(self) -> "UpdateModel":
        for name in self.model_fields_set & self.not_nullable:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self, stored: Any) -> dict[str, Any]:
        """The fields sent, in order with the stored values of the fields not sent."""
        changes = self.model_dump(exclude_unset=True)
        if self.ordering:
            names = {name for pair in self.ordering for name in pair}
            merged = {name: changes.get(name, getattr(stored, name)) for name in names}
            require_order(self.ordering, merged, set(changes))
        return changes
