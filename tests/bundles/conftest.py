import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller, join, new_case


@pytest.fixture
def case_id(client: TestClient, lead: Caller, partner: Caller) -> str:
    """A case the lead created and the partner joined."""
    found = new_case(client, lead)
    join(client, lead, found["id"], partner)
    return str(found["id"])
