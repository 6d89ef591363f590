"""A case as a STIX 2.1 bundle: a report, its lead agency's identity, its
identifiers as observables, each marked with the case's TLP 2.0 level.

Built as plain JSON, to the letter of `stix2-validator --strict`:

* Identifiers with a standard observable (e-mail, domain, IP, URL) are that
  observable, with the standard deterministic id (UUIDv5 over its `value`),
  so a receiver merges the same address seen in several cases.
* The others (phone numbers, IBANs, cards, wallets, documents) are object
  types of ours, each declared by an `extension-definition` in the bundle
  (`new-sco`); an identifier's note travels in a property extension.
* The report's and the identity's ids have the form STIX asks of them
  (UUIDv4) but are derived from the rows' ids, so exporting a case again
  gives the same objects the same ids and a receiver updates rather than
  duplicates them.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from app.agencies.models import Agency
from app.cases.models import HandlingCode
from app.core.db import table_of
from app.core.uow import Row, Statements
from app.identifiers.normalize import IdentifierKind
from app.identifiers.service import export_for_bundle

MEDIA_TYPE = "application/stix+json;version=2.1"

# STIX 2.1 section 2.9: the namespace of deterministic (UUIDv5) identifiers.
STIX_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

# The TLP 2.0 marking definitions as published by the OASIS CTI TC (extension
# definition 60a3c5c5-..., "created" 2022-10-01): the same ids are used by every
# STIX producer, so a receiver recognises the level without a mapping of its own.
# Ids as listed e.g. in oasis-tcs/cacao, Common-Objects/Data-Markings/README.md.
_TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
_TLP2: dict[HandlingCode, tuple[str, str]] = {
    HandlingCode.clear: ("94868c89-83c2-464b-929b-a1a8aa3c8487", "clear"),
    HandlingCode.green: ("bab4a63c-aed9-4cf5-a766-dfca5abac2bb", "green"),
    HandlingCode.amber: ("55d920b0-5e8b-4f79-9ee9-91f868d9b421", "amber"),
    HandlingCode.amber_strict: ("939a9414-2ddd-4d32-a0cd-375ea402b003", "amber+strict"),
    HandlingCode.red: ("e828b379-4e03-4974-9ac4-e53a884c97c1", "red"),
}

# caseapi as the author of its extension definitions. These ids, and the
# definitions' `created`, never change: receivers key their handling on them.
_PRODUCER = "identity--1225c327-9735-4391-b436-aaa24bc191d0"
_DEFINED_AT = "2026-12-01T00:00:00.000Z"


@dataclass(frozen=True)
class Extension:
    id: str
    name: str
    description: str
    schema: str
    extension_type: str


def _new_sco(uuid4: str, type_name: str, what: str) -> Extension:
    return Extension(
        id=f"extension-definition--{uuid4}",
        name=type_name,
        description=f"{what[0].upper()}{what[1:]}, as an identifier of a case in caseapi.",
        schema=f"A cyber observable of type `{type_name}`: {what}. One property, `value` (string, "
        "required, the id contributing property), as normalised by caseapi.",
        extension_type="new-sco",
    )


# Identifier kinds STIX 2.1 has no observable for.
_NEW_SCO: dict[IdentifierKind, tuple[str, Extension]] = {
    kind: (type_name, _new_sco(uuid4, type_name, what))
    for kind, uuid4, type_name, what in (
        (IdentifierKind.phone, "c922fe4d-0244-4bb7-82e9-0ef4197eacbf", "caseapi-phone-number",
         "a telephone number in E.164 form"),
        (IdentifierKind.iban, "bc3b13cf-ebad-46fa-960b-e2893a5939fb", "caseapi-iban",
         "an International Bank Account Number (ISO 13616), compact"),
        (IdentifierKind.bank_card, "206de6b6-b72b-4943-92a9-d09794c6525f", "caseapi-bank-card",
         "a payment card number, digits only"),
        (IdentifierKind.crypto_address, "5586ca82-6a82-497c-8a8f-da0b91aedf61",
         "caseapi-cryptocurrency-wallet", "the address of a cryptocurrency wallet"),
        (IdentifierKind.document_number, "cdaa79fa-96d3-46bb-a251-bda5db4617a8",
         "caseapi-document-number", "the number of an identity or travel document"),
        (IdentifierKind.other, "fee6360d-19ee-4876-93be-2cb528951187", "caseapi-identifier",
         "an identifier of a kind caseapi does not name (an account handle, a nickname)"),
    )
}  # fmt: skip
_STANDARD_SCO = {
    IdentifierKind.email: "email-addr",
    IdentifierKind.domain: "domain-name",
    IdentifierKind.url: "url",
}
_NOTES = Extension(
    id="extension-definition--c1e25c22-ecb5-4416-9c66-d91d533db587",
    name="caseapi-identifier-notes",
    description="What the investigating agencies noted about an identifier.",
    schema="Property extension on observables: `notes` (list of strings), what the investigating "
    "agencies noted about the identifier.",
    extension_type="property-extension",
)


def timestamp(at: datetime) -> str:
    """STIX's timestamp form: UTC, milliseconds, `Z`, and always a four-digit year
    (strftime's `%Y`, which STIX libraries use, writes year 1 as `1`)."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _v4_form(derived: uuid.UUID) -> uuid.UUID:
    """The UUIDv4 form validators ask of objects other than the standard observables,
    keeping the derived id's bits: the same input gives the same id."""
    return uuid.UUID(bytes=derived.bytes, version=4)


def _sdo_id(type_name: str, row_id: uuid.UUID) -> str:
    return f"{type_name}--{_v4_form(uuid.uuid5(STIX_NAMESPACE, f'{type_name}:{row_id}'))}"


def _sco_id(type_name: str, value: str, *, standard: bool) -> str:
    """STIX 2.1 section 2.9: UUIDv5 over the canonical JSON of the id contributing
    properties (`value`); in UUIDv4 form for the observable types of ours."""
    canonical = json.dumps({"value": value}, ensure_ascii=False, separators=(",", ":"))
    derived = uuid.uuid5(STIX_NAMESPACE, canonical)
    return f"{type_name}--{derived if standard else _v4_form(derived)}"


def tlp_marking(code: HandlingCode) -> dict[str, Any]:
    marking_uuid, level = _TLP2[code]
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": f"marking-definition--{marking_uuid}",
        "created": "2022-10-01T00:00:00.000Z",
        "name": code.value,
        "extensions": {_TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}},
    }


def _extension_definition(extension: Extension, marking: str) -> dict[str, Any]:
    return {
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": extension.id,
        "created_by_ref": _PRODUCER,
        "created": _DEFINED_AT,
        "modified": _DEFINED_AT,
        "name": extension.name,
        "description": extension.description,
        "schema": extension.schema,
        "version": "1.0.0",
        "extension_types": [extension.extension_type],
        "object_marking_refs": [marking],
    }


def _observable_type(identifier: Row) -> tuple[str, Extension | None]:
    if identifier.kind == IdentifierKind.ip:
        return ("ipv6-addr" if ":" in identifier.normalized else "ipv4-addr"), None
    if identifier.kind in _STANDARD_SCO:
        return _STANDARD_SCO[identifier.kind], None
    return _NEW_SCO[identifier.kind]


def _observables(identifiers: list[Row], marking: str) -> tuple[list[dict[str, Any]], set[Extension]]:
    """One observable per distinct (type, value), with the notes of every identifier it stands for."""
    observables: dict[str, dict[str, Any]] = {}
    notes: dict[str, list[str]] = {}
    used: set[Extension] = set()
    for identifier in identifiers:
        type_name, extension = _observable_type(identifier)
        stix_id = _sco_id(type_name, identifier.normalized, standard=extension is None)
        if stix_id not in observables:
            observables[stix_id] = {
                "type": type_name,
                "spec_version": "2.1",
                "id": stix_id,
                "value": identifier.normalized,
                "object_marking_refs": [marking],
            }
            notes[stix_id] = []
            if extension is not None:
                observables[stix_id]["extensions"] = {extension.id: {"extension_type": "new-sco"}}
                used.add(extension)
        if identifier.note and identifier.note not in notes[stix_id]:
            notes[stix_id].append(identifier.note)
    for stix_id, said in notes.items():
        if said:
            extensions = observables[stix_id].setdefault("extensions", {})
            extensions[_NOTES.id] = {"extension_type": "property-extension", "notes": said}
            used.add(_NOTES)
    return list(observables.values()), used


AGENCIES = table_of(Agency)
_LEAD = sa.select(AGENCIES.c.id, AGENCIES.c.name, AGENCIES.c.created_at, AGENCIES.c.updated_at).where(
    AGENCIES.c.id == sa.bindparam("agency_id")
)


async def case_bundle(db: Statements, case: Row) -> str:
    """The serialised bundle of a case (a row of its columns) the caller sees in full."""
    marking = tlp_marking(case.handling_code)
    marked = [marking["id"]]
    lead = await db.first(_LEAD, {"agency_id": case.lead_agency_id})
    assert lead is not None, "a case's lead agency is kept while the case exists (ON DELETE RESTRICT)"
    identity = {
        "type": "identity",
        "spec_version": "2.1",
        "id": _sdo_id("identity", lead.id),
        "created": timestamp(lead.created_at),
        "modified": timestamp(max(lead.created_at, lead.updated_at)),
        "name": lead.name,
        "identity_class": "organization",
        "object_marking_refs": marked,
    }
    observables, used = _observables(await export_for_bundle(db, case.id), marking["id"])
    definitions = [_extension_definition(e, marking["id"]) for e in sorted(used, key=lambda e: e.id)]
    if definitions:
        definitions.insert(0, _producer(marking["id"]))
    report = {
        "type": "report",
        "spec_version": "2.1",
        "id": _sdo_id("report", case.id),
        "created_by_ref": identity["id"],
        "created": timestamp(case.created_at),
        "modified": timestamp(max(case.created_at, case.updated_at)),
        "name": case.title,
        "published": timestamp(case.opened_at or case.created_at),
        "report_types": ["threat-report"],
        "object_refs": [identity["id"], *(o["id"] for o in observables)],
        "object_marking_refs": marked,
    }
    if case.summary:
        report["description"] = case.summary
    objects = [marking, *definitions, identity, report, *observables]
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
    return json.dumps(bundle, ensure_ascii=False)


def _producer(marking: str) -> dict[str, Any]:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": _PRODUCER,
        "created": _DEFINED_AT,
        "modified": _DEFINED_AT,
        "name": "caseapi",
        "identity_class": "system",
        "object_marking_refs": [marking],
    }
