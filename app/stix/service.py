"""A case as a STIX 2.1 bundle: a report, its lead agency's identity, its
identifiers as observables, each marked with the case's TLP 2.0 level.

Ids are UUIDv5 (STIX's namespace) over the ids of the rows they describe,
so exporting a case again gives the same objects the same ids, and a
receiving platform updates rather than duplicates them.
"""

import uuid
from typing import Any

import sqlalchemy as sa
import stix2
from sqlalchemy.orm import Session
from stix2.properties import StringProperty
from stix2.v21 import (
    URL,
    CustomObservable,
    DomainName,
    EmailAddress,
    Identity,
    IPv4Address,
    IPv6Address,
    MarkingDefinition,
    Report,
)

from app.agencies.models import Agency
from app.cases.models import Case, HandlingCode
from app.identifiers.models import Identifier
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


def tlp_marking(code: HandlingCode) -> MarkingDefinition:
    marking_uuid, level = _TLP2[code]
    return MarkingDefinition(
        id=f"marking-definition--{marking_uuid}",
        created="2022-10-01T00:00:00.000Z",
        name=code.value,
        extensions={_TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}},
    )


def _custom_observable(type_name: str) -> Any:
    """An observable STIX has no object for: x-caseapi-<kind> with the normalised value."""

    @CustomObservable(type_name, [("value", StringProperty(required=True))], id_contrib_props=["value"])
    class Observable:
        pass

    return Observable


_IP_VERSION = {4: IPv4Address, 6: IPv6Address}
_OBSERVABLES: dict[IdentifierKind, Any] = {
    IdentifierKind.email: EmailAddress,
    IdentifierKind.domain: DomainName,
    IdentifierKind.url: URL,
    IdentifierKind.phone: _custom_observable("x-caseapi-phone-number"),
    IdentifierKind.iban: _custom_observable("x-caseapi-iban"),
    IdentifierKind.bank_card: _custom_observable("x-caseapi-bank-card"),
    IdentifierKind.crypto_address: _custom_observable("x-caseapi-cryptocurrency-wallet"),
    IdentifierKind.document_number: _custom_observable("x-caseapi-document-number"),
    IdentifierKind.other: _custom_observable("x-caseapi-identifier"),
}


def _stix_id(type_name: str, row_id: uuid.UUID) -> str:
    return f"{type_name}--{uuid.uuid5(STIX_NAMESPACE, str(row_id))}"


def _observable(identifier: Identifier, marking: str) -> Any:
    if identifier.kind == IdentifierKind.ip:
        cls = IPv6Address if ":" in identifier.normalized else IPv4Address
    else:
        cls = _OBSERVABLES[identifier.kind]
    extra = {"x_caseapi_note": identifier.note} if identifier.note else {}
    return cls(
        id=_stix_id(cls._type, identifier.id),
        value=identifier.normalized,
        object_marking_refs=[marking],
        allow_custom=True,
        **extra,
    )


def case_bundle(session: Session, case: Case) -> str:
    """The serialised bundle of a case the caller sees in full."""
    marking = tlp_marking(case.handling_code)
    lead = session.execute(sa.select(Agency).where(Agency.id == case.lead_agency_id)).scalar_one()
    identity = Identity(
        id=_stix_id("identity", lead.id),
        created=lead.created_at,
        modified=max(lead.created_at, lead.updated_at),
        name=lead.name,
        identity_class="organization",
        object_marking_refs=[marking.id],
    )
    observables = [_observable(x, marking.id) for x in export_for_bundle(session, case.id)]
    report = Report(
        id=_stix_id("report", case.id),
        created=case.created_at,
        modified=max(case.created_at, case.updated_at),
        created_by_ref=identity.id,
        name=case.title,
        description=case.summary,
        published=case.opened_at or case.created_at,
        object_refs=[identity.id, *(o.id for o in observables)],
        object_marking_refs=[marking.id],
        allow_custom=True,  # object_refs name the x-caseapi- observables
    )
    bundle = stix2.v21.Bundle(objects=[marking, identity, report, *observables], allow_custom=True)
    return str(bundle.serialize())
