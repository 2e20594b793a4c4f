"""Session fixtures: a real embedded stack (PostgreSQL + TimescaleDB, mosquitto) for the tests.

The stack runs in its own state directory with free ports, so it never touches a developer's
running hub. It is started once per session and stopped (and deleted) at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vitalvagt.settings import Settings
from vitalvagt.stack import Stack

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def temporary_stack(prefix: str = "vv-test-stack-") -> Iterator[Stack]:
    """A whole embedded stack of its own (free ports, a fresh directory), removed after."""
    # /tmp, not pytest's tmp_path: the postgres and mosquitto users must reach the directory.
    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
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


def stack_env(stack: Stack, **extra: str) -> dict[str, str]:
    """The environment for a `vitalvagt` process on this stack (this interpreter's path)."""
    env = {
        **os.environ,
        "VV_STATE_DIR": str(stack.paths.root),
        "VV_PG_PORT": str(stack.settings.pg_port),
        "VV_MQTT_PORT": str(stack.settings.mqtt_port),
        "VV_MQTT_TLS_PORT": str(stack.settings.mqtt_tls_port),
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    env.pop("VV_DATABASE_URL", None)
    return env


def kill_broker(stack: Stack) -> int:
    """SIGKILL the stack's mosquitto (a crash: nothing saved since the last autosave)."""
    pid = stack.mq_pid()
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs a CLI in this process (``main([...])``) gets vitalvagt's logging set
    up on the stderr pytest captured for that test. Left in place, every later thread that
    logs (a hub of a later test module) writes to that closed file: "--- Logging error ---"."""
    root = logging.getLogger()
    ours = lambda h: not type(h).__module__.startswith("_pytest")  # noqa: E731
    handlers, level = [h for h in root.handlers if ours(h)], root.level
    yield
    # pytest's own capture handlers come and go with each phase: kept as they are now
    root.handlers[:] = [*handlers, *(h for h in root.handlers if not ours(h))]
    root.setLevel(level)


_session_stack: list[Stack] = []  # the session's stack, for the failure report below


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with temporary_stack() as st:
        _session_stack.append(st)
        try:
            yield st
        finally:
            _session_stack.clear()


def broker_report(st: Stack, lines: int = 40) -> str:
    """The broker's state for a failure report: whether it runs, its open files against its
    limit, and the end of its log (connections, refusals; gateway ids, never a patient's)."""
    pid = st.mq_pid()
    if pid is None:
        return "mosquitto is not running"
    try:
        files = str(len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        files = "?"
    try:
        tail = st.paths.mq_log.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        tail = [f"(no log: {exc})"]
    head = f"mosquitto pid {pid}: {files} open files, limit {st.broker_open_files()}"
    return "\n".join([head, *tail])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that used the session's broker reports the broker's state with it: a
    broker that stops answering (no CONNACK) breaks every test after it, and its log says why."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _session_stack and "stack" in getattr(item, "fixturenames", ()):
        report.sections.append(("the session's broker", broker_report(_session_stack[0])))


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    return stack.database_url()


@pytest.fixture
def db(database_url: str):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
