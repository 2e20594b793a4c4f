"""Session fixtures: a real embedded stack (PostgreSQL + TimescaleDB, mosquitto) for the tests.

The stack runs in its own state directory with free ports, so it never touches a developer's
running hub. It is started once per session and stopped (and deleted) at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitalvagt.settings import Settings
from vitalvagt.stack import Stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # /tmp, not pytest's tmp_path: the postgres and mosquitto users must reach the directory.
    state = Path(tempfile.mkdtemp(prefix="vv-test-stack-", dir="/tmp"))
    os.chmod(state, 0o755)
    settings = Settings(
        state_dir=state, pg_port=free_port(), mqtt_port=free_port(), mqtt_tls_port=free_port()
    )
    st = Stack(settings)
    st.up()
    try:
        yield st
    finally:
        st.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    return stack.database_url()


@pytest.fixture
def db(database_url: str):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
