"""A case as its home sends it to a peer (a snapshot), and as the peer holds it (a mirror).

A snapshot is the case and every row under it that the peer's agencies may
see, with the same ids and versions as at home, read in one repeatable-read
transaction so that it is consistent. Information requests go only to a
peer hosting one of their two agencies (only they see a request, §3), and
detainees' personal data only when the case's `share_personal_data` says so.

The peer replaces its mirror with the snapshot in one transaction: applying
the same snapshot twice leaves the same mirror, which is what makes delivery
"at least once" apply once. A peer that stops qualifying gets a withdrawal
and deletes its mirror.
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
from app.core.uow import Row, Statements, Tx
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
# Parents before children: the order rows are inserted in, reversed to delete them.
MIRRORED: tuple[sa.Table, ...] = (
    CASES,
    PARTICIPANTS,
    table_of(Location),
    ITEMS,
    table_of(CustodyEvent),
    DETAINEES,
    table_of(Identifier),
    REQUESTS,
    table_of(RequestMessage),
    ATTACHMENTS,
)
# Agencies as a snapshot names them: what the peer needs to hold the rows that refer to them.
AGENCY_FIELDS = ("id", "code", "name", "country", "kind", "parent_id", "version", "created_at", "updated_at")


class MalformedDelivery(AppError):
    def __init__(self, detail: str) -> None:
        super().__init__(422, f"The delivery is malformed: {detail}.", slug="validation-error")


def beyond_authority(detail: str) -> AppError:
    """A peer sent what it is not the home of: refused whole (403), nothing stored."""
    return AppError(403, f"Beyond the sending peer's authority: {detail}.", slug="forbidden")


@functools.cache
def _rows_of(table: sa.Table) -> sa.Select[Any]:
    """The rows of `table` under the case `:case_id` that the peer `:peer` may hold."""
    stmt = sa.select(table)
    if table is CASES:
        return stmt.where(CASES.c.id == sa.bindparam("case_id"))
    if table is ATTACHMENTS:
        # The case's files, and those of the messages of the requests the peer holds.
        requests = sa.select(REQUESTS.c.id).where(
            REQUESTS.c.case_id == sa.bindparam("case_id"), access.peer_is_party(REQUESTS)
        )
        return stmt.where(
            sa.or_(ATTACHMENTS.c.case_id == sa.bindparam("case_id"), ATTACHMENTS.c.request_id.in_(requests))
        )
    if "case_id" in table.c and table is not REQUESTS:
        return stmt.where(table.c.case_id == sa.bindparam("case_id"))
    if table is REQUESTS:
        return stmt.where(table.c.case_id == sa.bindparam("case_id"), access.peer_is_party(table))
    if "seized_item_id" in table.c:
        return stmt.where(
            table.c.seized_item_id.in_(
                sa.select(ITEMS.c.id).where(ITEMS.c.case_id == sa.bindparam("case_id"))
            )
        )
    assert "request_id" in table.c, table.name
    requests = sa.select(REQUESTS.c.id).where(
        REQUESTS.c.case_id == sa.bindparam("case_id"), access.peer_is_party(REQUESTS)
    )
    return stmt.where(table.c.request_id.in_(requests))


_AGENCY = sa.select(AGENCIES).where(AGENCIES.c.id == sa.bindparam("agency_id"))
_QUALIFIES = sa.select(CASES.c.id).where(
    CASES.c.id == sa.bindparam("case_id"), access.peer_sees_case_in_full()
)


async def qualifying(db: Statements, peer: str, case_id: uuid.UUID) -> bool:
    return await db.first(_QUALIFIES, {"peer": peer, "case_id": case_id}) is not None


async def snapshot(tx: Tx, me: str, peer: str, case_id: uuid.UUID) -> dict[str, Any] | None:
    """The case as `peer` may hold it, None once it does not qualify; read in
    `tx`, which must see one state of the database (repeatable read)."""
    if not await qualifying(tx, peer, case_id):
        return None
    params = {"case_id": case_id, "peer": peer}
    rows: dict[str, list[dict[str, Any]]] = {}
    for table in MIRRORED:
        rows[str(table.name)] = [row._asdict() for row in await tx.all(_rows_of(table), params)]
    [case] = rows[CASES.name]
    if not case["share_personal_data"]:
        for detainee in rows[DETAINEES.name]:
            detainee.update(dict.fromkeys(PERSONAL_FIELDS))
    agencies = []
    for agency_id in sorted(_agencies_named(rows)):
        agency = await tx.first(_AGENCY, {"agency_id": agency_id})
        assert agency is not None, "rows refer to agencies held here"
        agencies.append(
            {name: getattr(agency, name) for name in AGENCY_FIELDS}
            | {"home_instance": agency.home_instance or me}
        )
    return {"id": case_id, "agencies": agencies, "rows": rows}


def _agencies_named(rows: Mapping[str, list[dict[str, Any]]]) -> set[uuid.UUID]:
    named: set[uuid.UUID] = set()
    for table in MIRRORED:
        columns = [fk.parent.name for fk in table.foreign_keys if fk.column.table is AGENCIES]
        for row in rows[table.name]:
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
    """Which rows of `table` are under the case `:case_id`."""
    case_id: sa.BindParameter[uuid.UUID] = sa.bindparam("case_id")
    if table is CASES:
        return CASES.c.id == case_id
    requests = sa.select(REQUESTS.c.id).where(REQUESTS.c.case_id == case_id)
    if table is ATTACHMENTS:
        return sa.or_(table.c.case_id == case_id, table.c.request_id.in_(requests))
    if "case_id" in table.c:
        return table.c.case_id == case_id
    if "seized_item_id" in table.c:
        return table.c.seized_item_id.in_(sa.select(ITEMS.c.id).where(ITEMS.c.case_id == case_id))
    return table.c.request_id.in_(requests)


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
        if home != sender and raw.get("parent_id") is not None:
            agency["parent_id"] = None
        clash = await tx.first(_AGENCY_BY_CODE, {"code": agency["code"]})
        if clash is not None:
            raise beyond_authority(f"agency code {agency['code']} belongs to {clash.home_instance or me}")
        if (
            agency["parent_id"] is not None
            and await tx.first(_AGENCY, {"agency_id": agency["parent_id"]}) is None
        ):
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
    _record_events(
        tx, case_id, {name: [row._asdict() for row in rows] for name, rows in before.items()}, decoded
    )
    return sum(len(table_rows) for table_rows in decoded.values())


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
) -> None:
    """The mirror's feed: what the snapshot added, changed (a new version) or
    removed, as the home's feed said it, so that its agencies follow a mirrored
    case as a local one (GET /events, webhooks). Not audited one by one: the
    delivery's `federation.received` entry covers them."""
    requests = {row["id"]: row for rows in (before, after) for row in rows.get(REQUESTS.name, [])}
    created, deleted = [], []
    for table in MIRRORED:
        old = {_key(row): row for row in before.get(table.name, [])}
        new = {_key(row): row for row in after[table.name]}
        for key, row in new.items():
            if key not in old:
                created.append((table, "created", key, row))
            elif row.get("version") != old[key].get("version"):
                created.append((table, "updated", key, row))
        deleted += [(table, "deleted", key, row) for key, row in old.items() if key not in new]
    for table, what, key, row in created + deleted[::-1]:
        prefix, resource_type = _EVENT_NAMES.get(table.name, (table.name, table.name))
        request = requests.get(row["id"] if table is REQUESTS else row.get("request_id"))
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
            audit=False,
        )


def _key(row: dict[str, Any]) -> uuid.UUID:
    """A row's id; a participant is known by its agency."""
    return row["id"] if "id" in row else row["agency_id"]  # type: ignore[no-any-return]


def listed(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedDelivery(f"{what} are not a list")
    return value


def _check_scope(case_id: uuid.UUID, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Every row is under `case_id`, and refers only to rows of the snapshot: a
    snapshot cannot reach, or tie itself to, another case's rows."""
    if any(case["id"] != case_id for case in rows[CASES.name]):
        raise beyond_authority("a snapshot names another case")
    ids = {table.name: {row["id"] for row in rows[table.name]} for table in MIRRORED if "id" in table.c}
    for table in MIRRORED[1:]:
        inner = [fk for fk in table.foreign_keys if fk.column.table in MIRRORED[1:]]
        for row in rows[table.name]:
            # An attachment of a request's message has no case_id; its request is the snapshot's.
            if row.get("case_id", case_id) not in (case_id, None) or any(
                row[fk.parent.name] is not None and row[fk.parent.name] not in ids[fk.column.table.name]
                for fk in inner
            ):
                raise beyond_authority(f"a {table.name} row outside case {case_id}")


def files_named(rows: dict[str, Any]) -> dict[uuid.UUID, tuple[str, int]]:
    """The files a snapshot's attachments name: attachment id -> (sha256, size), checked."""
    files = {}
    for row in listed(rows.get(ATTACHMENTS.name), "attachments") if isinstance(rows, dict) else []:
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
    here as the sender's, or named by the delivery as its own and unknown here).
    hold() checks the same in the applying transaction; this is for what comes
    before it (fetching files). 403 otherwise."""
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
