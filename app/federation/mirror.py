"""A case as its home sends it to a peer (a snapshot, or an amendment), and as the peer holds it (a mirror).

A snapshot is the case and every row under it that the peer's agencies may
see, with the same ids and versions as at home, read in one repeatable-read
transaction so that it is consistent. Information requests go only to a
peer hosting one of their two agencies (only they see a request, §3), and
detainees' personal data only when the case's `share_personal_data` says so.
An amendment is the same for the rows a few changes named: those rows as
the peer may hold them now, and the ids of those it may hold no more. A
case goes whole when a peer starts holding it and whenever the case itself
or its participants change (that decides who holds what); every other
change goes as an amendment, so a delivery costs what changed, not what the
case holds.

The peer replaces its mirror with a snapshot, or applies an amendment to
it, in one transaction: applying either twice leaves the same mirror, which
is what makes delivery "at least once" apply once. A peer that stops
qualifying gets a withdrawal and deletes its mirror.
"""

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app import access
from app.agencies.models import Agency
from app.attachments.models import Attachment
from app.attachments.storage import SHA256
from app.cases.models import Case
from app.core.db import UTCDateTime, table_of
from app.core.errors import AppError
from app.core.journal import CLI, record
from app.core.uow import Row, Statements, Tx, all_of, one_of, one_of_chunks
from app.detainees.models import PERSONAL_FIELDS, Detainee
from app.evidence.models import CustodyEvent, SeizedItem
from app.identifiers.models import Identifier
from app.locations.models import Location
from app.participants.models import Participant
from app.requests.models import InformationRequest, RequestMessage

CASES = table_of(Case)
AGENCIES = table_of(Agency)
PARTICIPANTS = table_of(Participant)
ITEMS = table_of(SeizedItem)
REQUESTS = table_of(InformationRequest)
DETAINEES = table_of(Detainee)
ATTACHMENTS = table_of(Attachment)
LOCATIONS = table_of(Location)
CUSTODY = table_of(CustodyEvent)
IDENTIFIERS = table_of(Identifier)
MESSAGES = table_of(RequestMessage)
# Parents before children: the order rows are inserted in, reversed to delete them.
MIRRORED: tuple[sa.Table, ...] = (
    CASES,
    PARTICIPANTS,
    LOCATIONS,
    ITEMS,
    CUSTODY,
    DETAINEES,
    IDENTIFIERS,
    REQUESTS,
    MESSAGES,
    ATTACHMENTS,
)
# The table of the record a change of each resource type names, for the
# changes that reach a mirror as an amendment. Any other change (of the case,
# of its participants, or of a kind not named here) sends the case whole.
AMENDED_BY: dict[str, sa.Table] = {
    "location": LOCATIONS,
    "seized_item": ITEMS,
    "custody_event": CUSTODY,
    "detainee": DETAINEES,
    "identifier": IDENTIFIERS,
    "information_request": REQUESTS,
    "request_message": MESSAGES,
    "attachment": ATTACHMENTS,
    "message_attachment": ATTACHMENTS,
}
# The tables an amendment touches, parents first.
AMENDABLE = tuple(table for table in MIRRORED if table in AMENDED_BY.values())
CHUNK = 64  # ids per statement (app.core.uow.one_of)
# Agencies as a snapshot names them: what the peer needs to hold the rows that refer to them.
AGENCY_FIELDS = ("id", "code", "name", "country", "kind", "parent_id", "version", "created_at", "updated_at")


class MalformedDelivery(AppError):
    def __init__(self, detail: str) -> None:
        super().__init__(422, f"The delivery is malformed: {detail}.", slug="validation-error")


NOT_HELD = "mirror-not-held"


class NotHeld(AppError):
    """An amendment of a case this instance holds no mirror of (it was lost
    with a restore, or with the home removed and added again as a peer):
    the home forgets that it sent it, and sends it whole next."""

    def __init__(self, case_id: uuid.UUID) -> None:
        super().__init__(
            409,
            f"No mirror of case {case_id} is held here: send it whole.",
            slug=NOT_HELD,
            extra={"case_id": str(case_id)},
        )


def beyond_authority(detail: str) -> AppError:
    """A peer sent what it is not the home of: refused whole (403), nothing stored."""
    return AppError(403, f"Beyond the sending peer's authority: {detail}.", slug="forbidden")


@functools.cache
def _rows_of(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` under the case `:case_id` that the peer `:peer` may hold."""
    stmt = sa.select(table)
    if table is REQUESTS:
        return stmt.where(table.c.case_id == sa.bindparam("case_id"), access.peer_is_party(table))
    if table is ATTACHMENTS:
        # The case's files, and those of the messages of the requests the peer holds.
        return stmt.where(
            sa.or_(
                ATTACHMENTS.c.case_id == sa.bindparam("case_id"),
                _request_of_case(ATTACHMENTS, access.peer_is_party(REQUESTS)),
            )
        )
    if "request_id" in table.c:
        return stmt.where(_request_of_case(table, access.peer_is_party(REQUESTS)))
    return stmt.where(_under_case(table))


@functools.cache
def _rows_by_id(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` among `:id_*` that the peer `:peer` may hold under the case `:case_id`."""
    return _rows_of(table).where(one_of(table.c.id, "id", CHUNK))


_AGENCY = sa.select(AGENCIES).where(AGENCIES.c.id == sa.bindparam("agency_id"))


async def snapshot(tx: Tx, me: str, peer: str, case_id: uuid.UUID) -> dict[str, Any] | None:
    """The case as `peer` may hold it, None once it does not qualify; read in
    `tx`, which must see one state of the database (repeatable read)."""
    case = await tx.first(access.PEER_HOLDS_CASE, {"peer": peer, "case_id": case_id})
    if case is None:
        return None
    params = {"case_id": case_id, "peer": peer}
    rows: dict[str, list[dict[str, Any]]] = {}
    for table in MIRRORED:
        rows[str(table.name)] = [row._asdict() for row in await tx.all(_rows_of(table), params)]
    if not case.share_personal_data:
        _redact(rows)
    return {"id": case_id, "agencies": await _agencies(tx, me, rows), "rows": rows}


def amendable(resource_types: Iterable[str]) -> bool:
    """Whether changes of these kinds reach a mirror as an amendment (not the case whole)."""
    return all(resource_type in AMENDED_BY for resource_type in resource_types)


async def amendment(
    tx: Tx, me: str, peer: str, case_id: uuid.UUID, named: Iterable[tuple[str, uuid.UUID]]
) -> dict[str, Any] | None:
    """The records `named` (resource type, id: changes of the case, all
    amendable()) as `peer` may hold them now, and the ids of those it may hold
    no more (deleted, or never its to hold); None once the case does not
    qualify. Read in `tx`, as snapshot()."""
    case = await tx.first(access.PEER_HOLDS_CASE, {"peer": peer, "case_id": case_id})
    if case is None:
        return None
    wanted: dict[sa.Table, set[uuid.UUID]] = {}
    for resource_type, resource_id in named:
        if resource_id is not None:
            wanted.setdefault(AMENDED_BY[resource_type], set()).add(resource_id)
    changes: dict[str, list[dict[str, Any]]] = {}
    removed: dict[str, list[uuid.UUID]] = {}
    params = {"case_id": case_id, "peer": peer}
    for table in AMENDABLE:
        if table in wanted:
            found = await all_of(tx, _rows_by_id(table), "id", sorted(wanted[table]), CHUNK, params)
            changes[str(table.name)] = [row._asdict() for row in found]
            removed[str(table.name)] = sorted(wanted[table] - {row.id for row in found})
    if not case.share_personal_data:
        _redact(changes)
    return {
        "id": case_id,
        "agencies": await _agencies(tx, me, changes),
        "changes": changes,
        "removed": removed,
    }


def _redact(rows: Mapping[str, list[dict[str, Any]]]) -> None:
    for detainee in rows.get(DETAINEES.name, ()):
        detainee.update(dict.fromkeys(PERSONAL_FIELDS))


async def _agencies(tx: Tx, me: str, rows: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The agencies `rows` refer to, as the peer needs them to hold the rows."""
    agencies = []
    for agency_id in sorted(_agencies_named(rows)):
        agency = await tx.first(_AGENCY, {"agency_id": agency_id})
        assert agency is not None, "rows refer to agencies held here"
        agencies.append(
            {name: getattr(agency, name) for name in AGENCY_FIELDS}
            | {"home_instance": agency.home_instance or me}
        )
    return agencies


def _agencies_named(rows: Mapping[str, list[dict[str, Any]]]) -> set[uuid.UUID]:
    named: set[uuid.UUID] = set()
    for table in MIRRORED:
        columns = [fk.parent.name for fk in table.foreign_keys if fk.column.table is AGENCIES]
        for row in rows.get(table.name, ()):
            named.update(row[name] for name in columns if row[name] is not None)
    return named


# ---- the peer's side ----------------------------------------------------------------------------


def _decoder(column: sa.Column[Any]) -> Callable[[Any], Any]:
    """How a column's JSON value becomes what the column holds; ValueError or
    TypeError for anything else (a delivery is input from the network)."""
    kind = column.type
    if isinstance(kind, sa.Uuid):
        return lambda v: uuid.UUID(_typed(v, str))
    if isinstance(kind, UTCDateTime):
        return lambda v: _aware(datetime.fromisoformat(_typed(v, str)))
    if isinstance(kind, sa.Date):
        return lambda v: date.fromisoformat(_typed(v, str))
    if isinstance(kind, sa.Enum) and kind.enum_class is not None:
        enum_class: type[Enum] = kind.enum_class
        return lambda v: enum_class(_typed(v, str))
    if isinstance(kind, sa.JSON):
        return lambda v: v
    if isinstance(kind, sa.Boolean):
        return lambda v: _typed(v, bool)
    if isinstance(kind, sa.Integer):
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else _typed(v, int)
    return lambda v: _typed(v, str)


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"not a {kind.__name__}")
    return value


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("an instant without its offset")
    return at


@functools.cache
def _decoders(table: sa.Table) -> dict[str, Callable[[Any], Any]]:
    return {column.name: _decoder(column) for column in table.columns}


def decode(table: sa.Table, row: Any) -> dict[str, Any]:
    """A row of `table` from its JSON form: every column, each of its type."""
    if not isinstance(row, dict) or row.keys() != _decoders(table).keys():
        raise MalformedDelivery(f"a {table.name} row does not have the table's columns")
    decoded: dict[str, Any] = {}
    for name, decode_value in _decoders(table).items():
        value = row[name]
        if value is None:
            if not table.c[name].nullable:
                raise MalformedDelivery(f"{table.name}.{name} is null")
            decoded[name] = None
            continue
        try:
            decoded[name] = decode_value(value)
        except (TypeError, ValueError):
            raise MalformedDelivery(f"{table.name}.{name} holds no value of its type") from None
    return decoded


_CASE = sa.select(CASES.c.id, CASES.c.home_instance).where(CASES.c.id == sa.bindparam("case_id"))


async def held_case(tx: Statements, sender: str, case_id: uuid.UUID) -> bool:
    """Whether this instance holds a mirror of the case from `sender`; 403 when
    it holds the case otherwise (its own case, or another home's mirror)."""
    case = await tx.first(_CASE, {"case_id": case_id})
    if case is None:
        return False
    if case.home_instance != sender:
        raise beyond_authority(f"case {case_id} does not live on {sender}")
    return True


@functools.cache
def _under(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` under the case `:case_id` held here (all, not a peer's share)."""
    return sa.select(table).where(_under_case(table))


@functools.cache
def _delete_under(table: sa.Table) -> sa.Delete:
    return sa.delete(table).where(_under_case(table))


def _under_case(table: sa.Table) -> sa.ColumnElement[bool]:
    """Which rows of `table` are under the case `:case_id`. Rows under a seized
    item or a request are found through it row by row (EXISTS), not through
    the list of all of the case's: a few rows looked up by id cost what they
    are, not what the case holds."""
    case_id: sa.BindParameter[uuid.UUID] = sa.bindparam("case_id")
    if table is CASES:
        return CASES.c.id == case_id
    if table is ATTACHMENTS:
        return sa.or_(table.c.case_id == case_id, _request_of_case(table))
    if "case_id" in table.c:
        return table.c.case_id == case_id
    if "seized_item_id" in table.c:
        return sa.exists().where(ITEMS.c.id == table.c.seized_item_id, ITEMS.c.case_id == case_id)
    return _request_of_case(table)


def _request_of_case(table: sa.Table, *also: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """The row's request is under the case `:case_id` (and meets `also`)."""
    return sa.exists().where(
        REQUESTS.c.id == table.c.request_id, REQUESTS.c.case_id == sa.bindparam("case_id"), *also
    )


async def withdraw(tx: Tx, case_id: uuid.UUID) -> None:
    """Delete a mirror and everything under it, children first. The files its
    attachments named stay until `caseapi storage sweep` finds no row names them."""
    for table in reversed(MIRRORED):
        await tx.execute(_delete_under(table), {"case_id": case_id})


async def hold_agencies(tx: Tx, me: str, sender: str, agencies: Iterable[Any]) -> None:
    """Make sure this instance holds each agency a snapshot names, as a read-only
    record of its home. A sender never takes over an agency: one held here
    with another home, or a code held by another agency, is refused (403)."""
    for raw in agencies:
        if not isinstance(raw, dict) or not isinstance(raw.get("home_instance"), str):
            raise MalformedDelivery("an agency without its home instance")
        home = raw["home_instance"]
        fields = {name: raw.get(name) for name in AGENCY_FIELDS}
        agency = decode(AGENCIES, fields | {"home_instance": home})
        held = await tx.first(_AGENCY, {"agency_id": agency["id"]})
        if held is not None:
            if (held.home_instance or me) != home:
                raise beyond_authority(f"agency {held.code} lives on {held.home_instance or me}, not {home}")
            continue
        if home == me:
            raise beyond_authority(f"agency {agency['code']} is said to live here, and does not")
        clash = await tx.first(_AGENCY_BY_CODE, {"code": agency["code"]})
        if clash is not None:
            raise beyond_authority(f"agency code {agency['code']} belongs to {clash.home_instance or me}")
        # Held under a parent of the same home only: under TLP:AMBER a sub-agency
        # sees its parent's cases, and only this instance's operator (`caseapi
        # peer add`) places a peer's agency under another instance's.
        if agency["parent_id"] is not None:
            parent = await tx.first(_AGENCY, {"agency_id": agency["parent_id"]})
            if parent is None or parent.home_instance != home or home != sender:
                agency["parent_id"] = None
        await tx.insert([(AGENCIES, [agency])])


_AGENCY_BY_CODE = sa.select(AGENCIES.c.id, AGENCIES.c.home_instance).where(
    AGENCIES.c.code == sa.bindparam("code")
)


async def hold(tx: Tx, sender: str, case_id: uuid.UUID, rows: Any) -> int:
    """Replace the mirror of `case_id` with the snapshot's rows (its agencies
    already held); how many rows it holds. The rows must all be of this case."""
    if not isinstance(rows, dict) or set(rows) != {table.name for table in MIRRORED}:
        raise MalformedDelivery("a snapshot holds every mirrored table, and nothing else")
    decoded = {
        table.name: [decode(table, row) for row in listed(rows[table.name], "rows")] for table in MIRRORED
    }
    if len(decoded[CASES.name]) != 1:
        raise MalformedDelivery("a snapshot holds its case, once")
    _check_scope(case_id, decoded)
    [case] = decoded[CASES.name]
    lead = await tx.first(_AGENCY, {"agency_id": case["lead_agency_id"]})
    if lead is None or lead.home_instance != sender:
        raise beyond_authority(f"the lead agency of case {case_id} does not live on {sender}")
    case["home_instance"] = sender
    if not case["share_personal_data"]:
        for detainee in decoded[DETAINEES.name]:
            detainee.update(dict.fromkeys(PERSONAL_FIELDS))
    before: dict[str, list[Row]] = {}
    if await held_case(tx, sender, case_id):
        before = {table.name: await tx.all(_under(table), {"case_id": case_id}) for table in MIRRORED}
        await withdraw(tx, case_id)
    try:
        for table in MIRRORED:
            await tx.insert_many(table, decoded[table.name])
    except IntegrityError:
        # An id held here by another record, or an agency the snapshot does not name.
        raise beyond_authority(f"case {case_id} names records that are not its own") from None
    held = {name: [row._asdict() for row in rows] for name, rows in before.items()}
    _record_events(tx, case_id, held, decoded, _requests_of(held, decoded))
    return sum(len(table_rows) for table_rows in decoded.values())


@functools.cache
def _held_by_id(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` among `:id_*` held here under the case `:case_id`."""
    return sa.select(table).where(one_of(table.c.id, "id", CHUNK), _under_case(table))


@functools.cache
def _any_by_id(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` among `:id_*`, under whatever case, each with
    whether it is under the case `:case_id` (`of_case`)."""
    of_case = sa.case((_under_case(table), True), else_=False).label("of_case")
    return sa.select(table, of_case).where(one_of(table.c.id, "id", CHUNK))


@functools.cache
def _children(table: sa.Table, column: str) -> sa.Select[Any]:
    """The ids of the rows of `table` whose `column` is among `:id_*`, under the case `:case_id`."""
    return sa.select(table.c.id).where(one_of(table.c[column], "id", CHUNK), _under_case(table))


@functools.cache
def _delete_by_id(table: sa.Table) -> sa.Delete:
    return sa.delete(table).where(one_of(table.c.id, "id", CHUNK), _under_case(table))


@functools.cache
def _update(table: sa.Table) -> sa.Update:
    """Every column of the row `:row_id` of `table`, from `:set_<column>`."""
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id", type_=table.c.id.type))
        .values(
            {c.name: sa.bindparam(f"set_{c.name}", type_=c.type) for c in table.columns if c.name != "id"}
        )
    )


_SHARES = sa.select(CASES.c.share_personal_data).where(CASES.c.id == sa.bindparam("case_id"))


async def amend(tx: Tx, sender: str, case_id: uuid.UUID, changes: Any, removed: Any) -> int:
    """Apply an amendment to the mirror of `case_id` (its agencies already
    held): its rows inserted or updated, the rows it names as removed deleted
    with the rows under them (their home deleted those too, or could not have
    deleted them); how many rows it named. Every row must be of this case and
    refer only to rows of it (403 otherwise); 409 NotHeld when there is no
    mirror to amend."""
    if not await held_case(tx, sender, case_id):
        raise NotHeld(case_id)
    tables = {table.name: table for table in AMENDABLE}
    if not (
        isinstance(changes, dict)
        and isinstance(removed, dict)
        and changes.keys() | removed.keys() <= tables.keys()
    ):
        raise MalformedDelivery("an amendment names rows of the tables under a case, and nothing else")
    decoded = {
        name: [decode(tables[name], row) for row in listed(rows, "rows")] for name, rows in changes.items()
    }
    gone = {name: _ids(listed(ids, "removed ids")) for name, ids in removed.items()}
    if not await tx.scalar(_SHARES, {"case_id": case_id}):
        _redact(decoded)
    held = await _held_rows(tx, case_id, decoded, gone)
    after = {table.name: decoded.get(table.name, []) for table in MIRRORED}
    _check_scope(case_id, after, await _held_parents(tx, case_id, decoded))
    try:
        for table in AMENDABLE:
            ids = {row["id"] for row in held.get(table.name, [])}
            rows = decoded.get(table.name, [])
            for row in (row for row in rows if row["id"] in ids):
                params = {f"set_{name}": value for name, value in row.items()}
                await tx.execute(_update(table), params | {"row_id": row["id"]})
            await tx.insert_many(table, [row for row in rows if row["id"] not in ids])
        for table in reversed(AMENDABLE):
            await _remove(tx, case_id, table, gone.get(table.name, set()))
    except IntegrityError:
        raise beyond_authority(f"case {case_id} names records that are not its own") from None
    _record_events(
        tx,
        case_id,
        held,
        decoded,
        _requests_of(held, decoded) | await _requests_named(tx, case_id, held, decoded),
    )
    return sum(len(rows) for rows in decoded.values()) + sum(len(ids) for ids in gone.values())


def _without(row: dict[str, Any], name: str) -> dict[str, Any]:
    del row[name]
    return row


def _ids(values: list[Any]) -> set[uuid.UUID]:
    try:
        return {uuid.UUID(_typed(value, str)) for value in values}
    except (TypeError, ValueError):
        raise MalformedDelivery("a removed id is not a UUID") from None


async def _held_rows(
    tx: Tx, case_id: uuid.UUID, decoded: dict[str, list[dict[str, Any]]], gone: dict[str, set[uuid.UUID]]
) -> dict[str, list[dict[str, Any]]]:
    """The rows held here under the case that an amendment updates or removes,
    as they were; 403 when one of its ids is held here under another case."""
    held: dict[str, list[dict[str, Any]]] = {}
    for table in AMENDABLE:
        changed = [row["id"] for row in decoded.get(table.name, [])]
        ids = set(changed) | gone.get(table.name, set())
        if len(ids) != len(changed) + len(gone.get(table.name, ())):
            raise MalformedDelivery(f"an amendment names a {table.name} row twice")
        if not ids:
            continue
        rows = await all_of(tx, _any_by_id(table), "id", sorted(ids), CHUNK, {"case_id": case_id})
        if not all(row.of_case for row in rows):
            raise beyond_authority(f"case {case_id} names records that are not its own")
        held[table.name] = [_without(row._asdict(), "of_case") for row in rows]
    return held


async def _held_parents(
    tx: Tx, case_id: uuid.UUID, decoded: dict[str, list[dict[str, Any]]]
) -> dict[str, set[uuid.UUID]]:
    """Of the rows an amendment's rows refer to outside it, those held here under the case."""
    wanted: dict[sa.Table, set[uuid.UUID]] = {}
    for table in AMENDABLE:
        rows = decoded.get(table.name, [])
        inner = [fk for fk in table.foreign_keys if fk.column.table in AMENDABLE]
        for fk in inner:
            parent = fk.column.table
            sent = {row["id"] for row in decoded.get(parent.name, [])}
            refs = {row[fk.parent.name] for row in rows} - sent - {None}
            wanted.setdefault(parent, set()).update(refs)
    found: dict[str, set[uuid.UUID]] = {}
    for parent, ids in wanted.items():
        held = await all_of(tx, _held_by_id(parent), "id", sorted(ids), CHUNK, {"case_id": case_id})
        found[parent.name] = {row.id for row in held}
    return found


async def _remove(tx: Tx, case_id: uuid.UUID, table: sa.Table, ids: set[uuid.UUID]) -> None:
    """Delete the rows `ids` of `table` under the case, and the rows under them first."""
    if not ids:
        return
    for child in AMENDABLE:
        for fk in child.foreign_keys:
            if fk.column.table is table:
                rows = await all_of(
                    tx, _children(child, fk.parent.name), "id", sorted(ids), CHUNK, {"case_id": case_id}
                )
                await _remove(tx, case_id, child, {row.id for row in rows})
    for chunk in one_of_chunks("id", sorted(ids), CHUNK):
        await tx.execute(_delete_by_id(table), chunk | {"case_id": case_id})


def _requests_of(*rows: Mapping[str, list[dict[str, Any]]]) -> dict[uuid.UUID, dict[str, Any]]:
    return {row["id"]: row for table_rows in rows for row in table_rows.get(REQUESTS.name, [])}


async def _requests_named(
    tx: Tx, case_id: uuid.UUID, *rows: Mapping[str, list[dict[str, Any]]]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The requests held here that the messages and attachments among `rows` belong to."""
    ids = {
        row["request_id"]
        for table in (MESSAGES, ATTACHMENTS)
        for table_rows in rows
        for row in table_rows.get(table.name, [])
        if row["request_id"] is not None
    }
    found = await all_of(tx, _held_by_id(REQUESTS), "id", sorted(ids), CHUNK, {"case_id": case_id})
    return {row.id: row._asdict() for row in found}


# How the home's feed names a change of each table's rows: (event type prefix, resource type).
_EVENT_NAMES = {
    "information_request": ("request", "information_request"),
    "attachment": ("attachment", "attachment"),
}


def _record_events(
    tx: Tx,
    case_id: uuid.UUID,
    before: dict[str, list[dict[str, Any]]],
    after: dict[str, list[dict[str, Any]]],
    requests: Mapping[uuid.UUID, dict[str, Any]],
) -> None:
    """The mirror's feed: what a snapshot or an amendment added, changed (a new
    version) or removed of the rows `before` and `after` hold, as the home's
    feed said it, so that its agencies follow a mirrored case as a local one
    (GET /events, webhooks). `requests` names the requests of the messages and
    attachments among them: only their two agencies see those records. Not
    audited one by one: the delivery's `federation.received` entry covers them."""
    created, deleted = [], []
    for table in MIRRORED:
        old = {_key(row): row for row in before.get(table.name, [])}
        new = {_key(row): row for row in after.get(table.name, [])}
        for key, row in new.items():
            if key not in old:
                created.append((table, "created", key, row))
            elif row.get("version") != old[key].get("version"):
                created.append((table, "updated", key, row))
        deleted += [(table, "deleted", key, row) for key, row in old.items() if key not in new]
    for table, what, key, row in created + deleted[::-1]:
        prefix, resource_type = _EVENT_NAMES.get(table.name, (table.name, table.name))
        request_id: uuid.UUID | None = row["id"] if table is REQUESTS else row.get("request_id")
        request = requests.get(request_id) if request_id is not None else None
        if table is ATTACHMENTS and request is not None:
            resource_type = "message_attachment"
        record(
            tx,
            CLI,
            action=f"{prefix}.{what}",
            resource_type=resource_type,
            resource_id=key,
            # A request's records are its two agencies' only, as at home (app.requests.service).
            case_id=None if request is not None else case_id,
            request_parties=(request["from_agency_id"], request["to_agency_id"]) if request else None,
            request_id=request_id if request else None,
            audit=False,
        )


def _key(row: dict[str, Any]) -> uuid.UUID:
    """A row's id; a participant is known by its agency."""
    return row["id"] if "id" in row else row["agency_id"]  # type: ignore[no-any-return]


def listed(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedDelivery(f"{what} are not a list")
    return value


def _check_scope(
    case_id: uuid.UUID,
    rows: dict[str, list[dict[str, Any]]],
    held: Mapping[str, set[uuid.UUID]] | None = None,
) -> None:
    """Every row is under `case_id`, and refers only to rows of the delivery,
    or (`held`, for an amendment) to rows held here under the case: a delivery
    cannot reach, or tie itself to, another case's rows."""
    held = held or {}
    if any(case["id"] != case_id for case in rows[CASES.name]):
        raise beyond_authority("a snapshot names another case")
    ids = {
        table.name: {row["id"] for row in rows[table.name]} | held.get(table.name, set())
        for table in MIRRORED
        if "id" in table.c
    }
    for table in MIRRORED[1:]:
        inner = [fk for fk in table.foreign_keys if fk.column.table in MIRRORED[1:]]
        for row in rows[table.name]:
            if not _of_case(table, row, case_id) or any(
                row[fk.parent.name] is not None and row[fk.parent.name] not in ids[fk.column.table.name]
                for fk in inner
            ):
                raise beyond_authority(f"a {table.name} row outside case {case_id}")


def _of_case(table: sa.Table, row: dict[str, Any], case_id: uuid.UUID) -> bool:
    """Whether a row names the case as its own, where its table has a case_id.
    An attachment of a request's message names none: its request (checked
    among the rows it refers to) must be the case's."""
    if "case_id" not in table.c:
        return True
    if table is ATTACHMENTS and row["case_id"] is None:
        return row["request_id"] is not None
    return bool(row["case_id"] == case_id)


def files_named(rows: Any) -> dict[uuid.UUID, tuple[str, int]]:
    """The files the attachments of a snapshot's or an amendment's rows name:
    attachment id -> (sha256, size), checked."""
    files = {}
    for row in listed(rows.get(ATTACHMENTS.name, []), "attachments") if isinstance(rows, dict) else []:
        attachment = decode(ATTACHMENTS, row)
        if not SHA256.fullmatch(attachment["sha256"]) or attachment["size"] < 0:
            raise MalformedDelivery("an attachment without a valid sha256 and size")
        files[attachment["id"]] = (attachment["sha256"], attachment["size"])
    return files


def held_files() -> sa.Select[Any]:
    """The files the attachments under the case `:case_id` held here name."""
    return _HELD_FILES


_HELD_FILES = sa.select(ATTACHMENTS.c.sha256).where(_under_case(ATTACHMENTS))


async def may_send(db: Statements, sender: str, case: dict[str, Any]) -> uuid.UUID:
    """The id of a case of a delivery, once it is clear that `sender` may send it:
    not a case held here otherwise, and led by an agency the sender hosts (held
    here as the sender's, or named by the delivery as its own and unknown here);
    an amendment only to a mirror held here from the sender. hold() and amend()
    check the same in the applying transaction; this is for what comes before
    it (fetching files). 403 (409 for an amendment of no mirror) otherwise."""
    if "changes" in case:
        try:
            case_id = uuid.UUID(case["id"])
        except (KeyError, TypeError, ValueError):
            raise MalformedDelivery("a case without its id") from None
        if not await held_case(db, sender, case_id):
            raise NotHeld(case_id)
        return case_id
    try:
        case_id = uuid.UUID(case["id"])
        [row] = listed(case["rows"][CASES.name], "cases")
        lead_id = uuid.UUID(row["lead_agency_id"])
    except (KeyError, TypeError, ValueError):
        raise MalformedDelivery("a case without its id, its row or its lead") from None
    await held_case(db, sender, case_id)
    lead = await db.first(_AGENCY, {"agency_id": lead_id})
    if lead is not None:
        if lead.home_instance != sender:
            raise beyond_authority(f"the lead agency of case {case_id} does not live on {sender}")
        return case_id
    named = [a for a in listed(case.get("agencies"), "a case's agencies") if isinstance(a, dict)]
    if not any(a.get("id") == str(lead_id) and a.get("home_instance") == sender for a in named):
        raise beyond_authority(f"the lead agency of case {case_id} does not live on {sender}")
    return case_id
