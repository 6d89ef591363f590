"""What checking input costs a request, in-process, without a server.

    python -m bench.input_cost

Parses a typical create body and a 10 000-item bundle with plain `json.loads`
and with the duplicate-key check the routes use, and validates the bodies
with the request models (text normalisation, instants, order included).
"""

import json
import timeit
import uuid
from collections.abc import Callable
from typing import Any

from app.bundles.models import Bundle
from app.cases.models import CaseCreate
from app.core.http import strict_json

AGENCY = str(uuid.UUID(int=7))
CASE = {
    "reference": "KZ-UA-2025-KYIV-CALL-CENTRE",
    "title": "Fraudulent call centre in Kyiv",
    "summary": "Victims in Kazakhstan, the EU and CIS countries were called by fake bank staff.",
    "handling_code": "TLP:AMBER",
    "offence_types": ["fraud", "money laundering"],
    "victim_regions": ["KZ", "EU", "CIS"],
    "opened_at": "2025-09-23T06:00:00Z",
}


def _bundle(items: int) -> dict[str, Any]:
    location = str(uuid.uuid4())
    return {
        "bundle_version": 1,
        "case": CASE,
        "locations": [{"id": location, "label": "Office", "city": "Kyiv", "country": "UA"}],
        "seized_items": [
            {
                "id": str(uuid.uuid4()),
                "category": "computer",
                "description": f"Workstation {n}",
                "quantity": 1,
                "location_id": location,
                "seized_at": "2025-09-23T07:00:00Z",
                "seized_by_agency_id": AGENCY,
                "custodian_agency_id": AGENCY,
                "custody": [
                    {"action": "seized", "to_agency_id": AGENCY, "at": "2025-09-23T07:00:00Z"},
                    {"action": "examined", "at": "2025-09-24T07:00:00Z", "note": "Imaged"},
                ],
            }
            for n in range(items)
        ],
        "detainees": [],
    }


def _per_call(fn: Callable[[], object], budget: float = 1.0) -> float:
    """Seconds per call: the best of five runs of about `budget` / 5 seconds each."""
    number = max(1, int(budget / 5 / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    small = json.dumps(CASE).encode()
    large = json.dumps(_bundle(10_000)).encode()
    rows = [
        ("parse a case body, plain", _per_call(lambda: json.loads(small))),
        (
            "parse a case body, no duplicate keys",
            _per_call(lambda: strict_json(small)),
        ),
        ("validate a case body", _per_call(lambda: CaseCreate.model_validate(json.loads(small)))),
        ("parse a 10 000-item bundle, plain", _per_call(lambda: json.loads(large), 5)),
        (
            "parse a 10 000-item bundle, no duplicate keys",
            _per_call(lambda: strict_json(large), 5),
        ),
        ("validate a 10 000-item bundle", _per_call(lambda: Bundle.model_validate(json.loads(large)), 5)),
    ]
    print(f"case body {len(small)} bytes, bundle {len(large) / 2**20:.1f} MiB")
    for name, seconds in rows:
        print(f"{name:50} {seconds * 1e6:12.1f} µs")


if __name__ == "__main__":
    main()
