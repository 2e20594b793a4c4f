from __future__ import annotations

import psycopg
import pytest

# The real ingest, for tests whose gateways delete readings only on the hub's receipt.
from tests.ingest.conftest import ingest, sync_broker_users  # noqa: F401
from vitalvagt.db.gateways import provision_gateway
from vitalvagt.stack import Stack


@pytest.fixture
def gateway_creds(stack: Stack, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A freshly provisioned gateway (id derived from the test name) and its password."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    gw = "gw-" + name[-40:].strip("-")
    with psycopg.connect(stack.database_url(), autocommit=True) as conn:
        password = provision_gateway(conn, gw)
    sync_broker_users(stack)  # and ingest, if running, back on the restarted broker
    return gw, password
